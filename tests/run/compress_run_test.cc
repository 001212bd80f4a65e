// compress-run as a process: the event stream and exit status of the executor contract
// (docs/executor-contract.md), resume on the same work directory, cancellation by SIGTERM.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/events/event.h"
#include "worker/events/sha256.h"

namespace compress::run {
namespace {

namespace fs = std::filesystem;
using events::Event;
using events::EventType;

struct RunResult {
  std::vector<Event> events;
  int exit_code = -1;  // exit status, or 128 + signal
};

// A tiny model on synthetic data: runs in seconds on one core.
nlohmann::json TinySpec() {
  return nlohmann::json::parse(R"({
    "model": {"config": {"image_size": 16, "in_channels": 1, "patch_size": 2, "embed_dim": 16,
              "depths": [2, 2], "num_heads": [2, 4], "window_size": 4}},
    "dataset": {"format": "synthetic", "synthetic_train": 256, "synthetic_val": 64,
                "synthetic_classes": 4},
    "teacher": {"train": {"epochs": 8, "batch_size": 16, "lr": 0.005}},
    "resources": {"device": "cpu", "threads": 1, "seed": 7}
  })");
}

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/compress_run_test_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string WriteSpec(const std::string& dir, const nlohmann::json& spec) {
  std::string path = dir + "/spec-in.json";
  std::ofstream(path) << spec.dump();
  return path;
}

// Runs compress-run with `args`; when `terminate_after_metrics` > 0, sends SIGTERM once that
// many metric events have been read.
RunResult RunExecutor(const std::vector<std::string>& args, int terminate_after_metrics = 0) {
  int pipe_fds[2];
  EXPECT_EQ(pipe(pipe_fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    std::vector<char*> argv;
    std::string binary = COMPRESS_RUN_BINARY;
    argv.push_back(binary.data());
    std::vector<std::string> copy = args;
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  RunResult result;
  std::FILE* out = fdopen(pipe_fds[0], "r");
  char* line = nullptr;
  size_t capacity = 0;
  int metrics = 0;
  while (getline(&line, &capacity, out) > 0) {
    auto event = events::Parse(line);
    EXPECT_TRUE(event.ok()) << "stdout line is not an event: " << line;
    if (!event.ok()) continue;
    result.events.push_back(*event);
    if (event->type == EventType::kMetric && ++metrics == terminate_after_metrics) {
      kill(pid, SIGTERM);
    }
  }
  free(line);
  fclose(out);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::vector<Event> OfType(const RunResult& r, EventType type) {
  std::vector<Event> out;
  for (const Event& e : r.events) {
    if (e.type == type) out.push_back(e);
  }
  return out;
}

TEST(CompressRunTest, TinyJobSucceedsWithArtifactsAndReport) {
  const std::string dir = FreshDir("tiny");
  RunResult r = RunExecutor({"--spec", WriteSpec(dir, TinySpec()), "--workdir", dir + "/work"});
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_FALSE(r.events.empty());
  EXPECT_EQ(r.events.back().type, EventType::kReport);
  auto started = OfType(r, EventType::kPhaseStarted);
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0].phase, "teacher");
  EXPECT_FALSE(OfType(r, EventType::kMetric).empty());
  auto artifacts = OfType(r, EventType::kArtifact);
  ASSERT_EQ(artifacts.size(), 3u);
  for (const Event& a : artifacts) {
    auto digest = Sha256File(a.path);
    ASSERT_TRUE(digest.ok()) << digest.status();
    EXPECT_EQ(digest->sha256, a.sha256) << a.name;
    EXPECT_EQ(digest->size_bytes, a.size_bytes) << a.name;
  }
  const nlohmann::json& report = r.events.back().report;
  EXPECT_EQ(report["device"], "cpu");
  EXPECT_GT(report["teacher"]["macs"].get<int64_t>(), 0);
  EXPECT_GT(report["teacher"]["params"].get<int64_t>(), 0);
  // Four learnable synthetic classes: eight epochs (seeded) get well past chance (25%).
  EXPECT_GT(report["teacher"]["top1"].get<double>(), 0.4);
  EXPECT_TRUE(fs::exists(dir + "/work/report.json"));
}

TEST(CompressRunTest, SecondRunResumesWithoutRetraining) {
  const std::string dir = FreshDir("resume");
  const std::string spec = WriteSpec(dir, TinySpec());
  RunResult first = RunExecutor({"--spec", spec, "--workdir", dir + "/work"});
  ASSERT_EQ(first.exit_code, 0);
  RunResult second = RunExecutor({"--spec", spec, "--workdir", dir + "/work"});
  ASSERT_EQ(second.exit_code, 0);
  EXPECT_TRUE(OfType(second, EventType::kPhaseStarted).empty());
  EXPECT_TRUE(OfType(second, EventType::kMetric).empty());
  EXPECT_EQ(first.events.back().report["teacher"]["top1"],
            second.events.back().report["teacher"]["top1"]);
}

TEST(CompressRunTest, SigtermCancelsAndTheRunResumesMidPhase) {
  const std::string dir = FreshDir("cancel");
  nlohmann::json spec = TinySpec();
  spec["teacher"]["train"]["epochs"] = 20;
  const std::string path = WriteSpec(dir, spec);
  RunResult cancelled = RunExecutor({"--spec", path, "--workdir", dir + "/work"}, 2);
  EXPECT_EQ(cancelled.exit_code, 1);
  ASSERT_FALSE(cancelled.events.empty());
  EXPECT_EQ(cancelled.events.back().type, EventType::kError);
  EXPECT_EQ(cancelled.events.back().code, "CANCELLED");
  RunResult resumed = RunExecutor({"--spec", path, "--workdir", dir + "/work"});
  ASSERT_EQ(resumed.exit_code, 0);
  auto metrics = OfType(resumed, EventType::kMetric);
  ASSERT_FALSE(metrics.empty());
  EXPECT_GT(metrics.front().step, 1) << "a resumed phase continues from its checkpoint";
}

TEST(CompressRunTest, FailuresEndWithAnErrorLine) {
  const std::string dir = FreshDir("failures");
  struct Case {
    nlohmann::json patch;
    const char* code;
    const char* text;
  } cases[] = {
      {{{"dataset", {{"format", "fashion_mnist"}, {"path", dir + "/no-such-data"}}}},
       "NOT_FOUND",
       "no-such-data"},
      {{{"prune", {{"enabled", true}}}}, "UNIMPLEMENTED", "spec.prune.enabled"},
      {{{"teacher", {{"train", {{"epochs", -3}}}}}},
       "INVALID_ARGUMENT",
       "spec.teacher.train.epochs"},
  };
  int i = 0;
  for (const Case& c : cases) {
    nlohmann::json spec = TinySpec();
    spec.merge_patch(c.patch);
    const std::string case_dir = dir + "/" + std::to_string(i++);
    fs::create_directories(case_dir);
    RunResult r =
        RunExecutor({"--spec", WriteSpec(case_dir, spec), "--workdir", case_dir + "/work"});
    EXPECT_EQ(r.exit_code, 1) << c.code;
    ASSERT_FALSE(r.events.empty()) << c.code;
    EXPECT_EQ(r.events.back().type, EventType::kError);
    EXPECT_EQ(r.events.back().code, c.code);
    EXPECT_NE(r.events.back().message.find(c.text), std::string::npos) << r.events.back().message;
  }
  RunResult usage = RunExecutor({"--workdir", dir + "/w"});
  EXPECT_EQ(usage.exit_code, 2);
  ASSERT_FALSE(usage.events.empty());
  EXPECT_EQ(usage.events.back().code, "INVALID_ARGUMENT");
}

}  // namespace
}  // namespace compress::run
