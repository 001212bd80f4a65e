#include "worker/agent/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace compress::worker {
namespace {

std::unique_ptr<Subprocess> StartShell(const std::string& script, size_t tail = 4096) {
  Subprocess::Options options;
  options.argv = {"/bin/sh", "-c", script};
  options.stderr_tail_bytes = tail;
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(options);
  EXPECT_TRUE(process.ok()) << process.status();
  return process.ok() ? std::move(*process) : nullptr;
}

TEST(SubprocessTest, ReadsLinesIncludingALastLineWithoutNewline) {
  auto process = StartShell("printf 'one\\ntwo\\n\\nthree'");
  ASSERT_NE(process, nullptr);
  EXPECT_EQ(process->ReadLine(), "one");
  EXPECT_EQ(process->ReadLine(), "two");
  EXPECT_EQ(process->ReadLine(), "");
  EXPECT_EQ(process->ReadLine(), "three");
  EXPECT_EQ(process->ReadLine(), std::nullopt);
  ExitInfo exit = process->Wait();
  EXPECT_TRUE(exit.Succeeded());
}

TEST(SubprocessTest, AnOverlongLineComesBackInPiecesOfTheLimit) {
  const size_t limit = Subprocess::kMaxLineBytes;
  auto process = StartShell("head -c " + std::to_string(2 * limit + 5) +
                            " /dev/zero | tr '\\0' x; printf 'y\\nend\\n'");
  ASSERT_NE(process, nullptr);
  std::optional<std::string> line = process->ReadLine();
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->size(), limit);
  EXPECT_EQ(line->find_first_not_of('x'), std::string::npos);
  line = process->ReadLine();
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->size(), limit);
  EXPECT_EQ(process->ReadLine(), "xxxxxy");
  EXPECT_EQ(process->ReadLine(), "end");
  EXPECT_EQ(process->ReadLine(), std::nullopt);
  EXPECT_TRUE(process->Wait().Succeeded());
}

// The first line is 2 bytes short of the limit, then "abcdefgh": its newline lies 6 bytes past
// the limit. printf's 9 bytes are one write, which a pipe hands to one read whole, so whatever
// sizes the reads have, the read that takes the buffer past the limit brings the newline too:
// the line must still come back cut at the limit. The second line is exactly the limit long and
// comes back whole, without an empty piece after it.
TEST(SubprocessTest, NoPieceExceedsTheLimitWhenANewlineArrivesWithTheBytesPastIt) {
  const size_t limit = Subprocess::kMaxLineBytes;
  auto process = StartShell("head -c " + std::to_string(limit - 2) +
                            " /dev/zero | tr '\\0' x; printf 'abcdefgh\\n'; head -c " +
                            std::to_string(limit) + " /dev/zero | tr '\\0' z; printf '\\nend\\n'");
  ASSERT_NE(process, nullptr);
  std::optional<std::string> line = process->ReadLine();
  ASSERT_TRUE(line.has_value());
  ASSERT_EQ(line->size(), limit);
  EXPECT_EQ(line->find_first_not_of('x'), limit - 2);
  EXPECT_EQ(line->substr(limit - 2), "ab");
  EXPECT_EQ(process->ReadLine(), "cdefgh");
  line = process->ReadLine();
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->size(), limit);
  EXPECT_EQ(line->find_first_not_of('z'), std::string::npos);
  EXPECT_EQ(process->ReadLine(), "end");
  EXPECT_EQ(process->ReadLine(), std::nullopt);
  EXPECT_TRUE(process->Wait().Succeeded());
}

TEST(SubprocessTest, KeepsOnlyTheTailOfStderr) {
  auto process = StartShell("for i in 1 2 3 4 5 6 7 8 9; do echo line$i >&2; done; exit 3", 12);
  ASSERT_NE(process, nullptr);
  EXPECT_EQ(process->ReadLine(), std::nullopt);
  ExitInfo exit = process->Wait();
  EXPECT_EQ(exit.exit_code, 3);
  EXPECT_EQ(exit.ShellStatus(), 3);
  EXPECT_EQ(process->StderrTail(), "line8\nline9\n");
}

// A stderr line longer than stderr_echo_line_bytes is echoed in pieces of that size as it comes,
// not held until its newline (a child writing without newlines would grow the agent's memory).
TEST(SubprocessTest, EchoesALongStderrLineInPieces) {
  std::FILE* echo = std::tmpfile();
  ASSERT_NE(echo, nullptr);
  Subprocess::Options options;
  options.argv = {"/bin/sh", "-c",
                  "head -c 2500 /dev/zero | tr '\\0' x >&2; printf '\\nend\\nlast' >&2"};
  options.stderr_echo_prefix = "[p] ";
  options.stderr_echo_line_bytes = 1000;
  options.stderr_echo_file = echo;
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(options);
  ASSERT_TRUE(process.ok()) << process.status();
  EXPECT_EQ((*process)->Wait().exit_code, 0);
  std::rewind(echo);
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), echo)) > 0) text.append(buffer, n);
  std::fclose(echo);
  EXPECT_EQ(text, absl::StrCat("[p] ", std::string(1000, 'x'), "\n[p] ", std::string(1000, 'x'),
                               "\n[p] ", std::string(500, 'x'), "\n[p] end\n[p] last\n"));
}

TEST(SubprocessTest, SignalReachesTheWholeProcessGroup) {
  // The child's own child (sleep) must die too, or stdout would stay open.
  auto process = StartShell("echo started; sleep 30; echo never");
  ASSERT_NE(process, nullptr);
  EXPECT_EQ(process->ReadLine(), "started");
  absl::Time start = absl::Now();
  process->Signal(SIGTERM);
  EXPECT_EQ(process->ReadLine(), std::nullopt);
  ExitInfo exit = process->Wait();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(exit.signal, SIGTERM);
  EXPECT_EQ(exit.ShellStatus(), 128 + SIGTERM);
  EXPECT_EQ(exit.ToString(), "killed by signal 15");
}

TEST(SubprocessTest, EndsWhenTheChildExitsLeavingABackgroundProcessOnItsPipes) {
  // The background sleep holds stdout and stderr; it is in the child's group and dies with it.
  absl::Time start = absl::Now();
  auto process = StartShell("echo a; echo b >&2; sleep 30 & exit 3");
  ASSERT_NE(process, nullptr);
  EXPECT_EQ(process->ReadLine(), "a");
  EXPECT_EQ(process->ReadLine(), std::nullopt);
  ExitInfo exit = process->Wait();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(exit.exit_code, 3);
  EXPECT_EQ(process->StderrTail(), "b\n");
}

TEST(SubprocessTest, EndsWhenAProcessInASessionOfItsOwnHoldsThePipes) {
  // setsid takes the sleep out of the child's group before the child exits (the child waits for
  // its pid file, written after setsid()): it is not killed, and the pipes are read for
  // Subprocess::kDrainGrace after the child's exit.
  const std::string pid_file =
      absl::StrCat(::testing::TempDir(), "/subprocess_test_escaped_", ::getpid());
  std::remove(pid_file.c_str());
  absl::Time start = absl::Now();
  auto process = StartShell(
      absl::StrCat("setsid sh -c 'echo $$ > ", pid_file, "; exec sleep 30' & while [ ! -s ",
                   pid_file, " ]; do sleep 0.01; done; cat ", pid_file, "; echo last; exit 4"));
  ASSERT_NE(process, nullptr);
  std::optional<std::string> pid_line = process->ReadLine();
  ASSERT_TRUE(pid_line.has_value());
  int escaped = 0;
  ASSERT_TRUE(absl::SimpleAtoi(*pid_line, &escaped)) << *pid_line;
  EXPECT_EQ(process->ReadLine(), "last");
  EXPECT_EQ(process->ReadLine(), std::nullopt);
  ExitInfo exit = process->Wait();
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_GE(elapsed, Subprocess::kDrainGrace);
  EXPECT_LT(elapsed, absl::Seconds(15));
  EXPECT_EQ(exit.exit_code, 4);
  EXPECT_EQ(kill(escaped, 0), 0) << "the escaped process must still run";
  kill(escaped, SIGKILL);
  std::remove(pid_file.c_str());
}

TEST(SubprocessTest, ASlowReaderStillGetsEveryLineTheChildWroteBeforeItExited) {
  // 5,000 lines fit in the pipe; the child exits at once, leaving a process that holds the pipe
  // in a session of its own. The reader falls behind by more than kDrainGrace after the child's
  // exit was seen, and must still read every line the child wrote.
  auto process = StartShell(
      "setsid sleep 30 & echo $!; i=1; while [ $i -le 5000 ]; do echo line$i; "
      "i=$((i+1)); done; exit 0");
  ASSERT_NE(process, nullptr);
  std::optional<std::string> pid_line = process->ReadLine();
  ASSERT_TRUE(pid_line.has_value());
  int escaped = 0;
  ASSERT_TRUE(absl::SimpleAtoi(*pid_line, &escaped)) << *pid_line;
  absl::SleepFor(absl::Seconds(1));  // the child has written everything and exited
  int count = 0;
  std::string last;
  while (std::optional<std::string> line = process->ReadLine()) {
    ++count;
    last = *line;
    if (count == 2000) absl::SleepFor(Subprocess::kDrainGrace + absl::Seconds(1));
  }
  EXPECT_EQ(count, 5000);
  EXPECT_EQ(last, "line5000");
  EXPECT_EQ(process->Wait().exit_code, 0);
  kill(escaped, SIGKILL);
}

TEST(SubprocessTest, TheChildInheritsNoDescriptorButItsStandardOnes) {
  // A descriptor opened without O_CLOEXEC by another thread of this process, e.g. a download.
  const int leaked = open("/dev/null", O_RDONLY);
  ASSERT_GE(leaked, 3);
  auto process = StartShell(
      absl::StrCat("for fd in 0 1 2 ", leaked,
                   "; do test -e /proc/self/fd/$fd && echo open $fd || echo closed $fd; done"));
  ASSERT_NE(process, nullptr);
  EXPECT_EQ(process->ReadLine(), "open 0");
  EXPECT_EQ(process->ReadLine(), "open 1");
  EXPECT_EQ(process->ReadLine(), "open 2");
  EXPECT_EQ(process->ReadLine(), absl::StrCat("closed ", leaked));
  EXPECT_EQ(process->Wait().exit_code, 0);
  close(leaked);
}

TEST(SubprocessTest, MissingProgramIsNotFound) {
  Subprocess::Options options;
  options.argv = {"/nonexistent/compress-run"};
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(options);
  ASSERT_FALSE(process.ok());
  EXPECT_EQ(process.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(process.status().message()),
              ::testing::HasSubstr("/nonexistent/compress-run"));
}

TEST(SubprocessTest, DestructorKillsARunningChild) {
  absl::Time start = absl::Now();
  {
    auto process = StartShell("sleep 30");
    ASSERT_NE(process, nullptr);
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

}  // namespace
}  // namespace compress::worker
