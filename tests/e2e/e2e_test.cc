// End-to-end: compressd with a local compress-worker running compress-run, driven by
// compressctl, all real processes on loopback. Covers the happy path with verified downloads, a
// server killed with SIGKILL mid-job and restarted on the same data dir, and an executor killed
// mid-job whose attempt is retried.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/faults/fault_processes.h"
#include "worker/agent/subprocess.h"
#include "worker/events/sha256.h"

namespace compress::e2e {
namespace {

namespace fs = std::filesystem;
using compress::faults::CommandResult;
using compress::faults::RunCommand;
using compress::worker::ExitInfo;
using compress::worker::Subprocess;

// An int64 field of protobuf's JSON, which writes int64 as a string.
int64_t Int64Field(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end()) return 0;
  if (it->is_number()) return it->get<int64_t>();
  int64_t value = 0;
  if (it->is_string() && absl::SimpleAtoi(it->get<std::string>(), &value)) return value;
  return 0;
}

// A compressd process with one local worker.
class Compressd {
 public:
  static std::unique_ptr<Compressd> Start(const std::string& data_dir, int port) {
    Subprocess::Options options;
    options.argv = {COMPRESSD_BIN,
                    "--insecure",
                    absl::StrCat("--grpc_address=127.0.0.1:", port),
                    "--metrics_address=",
                    absl::StrCat("--data_dir=", data_dir),
                    "--local_workers=1",
                    absl::StrCat("--worker_binary=", COMPRESS_WORKER_BIN),
                    absl::StrCat("--local_worker_flags=--executor=", COMPRESS_RUN_BIN,
                                 ",--devices=cpu,--kill_grace=5s,--lease_wait_seconds=5"),
                    "--lease_seconds=10"};
    options.stderr_echo_prefix = "[compressd] ";
    absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(options);
    EXPECT_TRUE(process.ok()) << process.status();
    if (!process.ok()) return nullptr;
    auto server = std::unique_ptr<Compressd>(new Compressd(std::move(*process)));
    std::string line = server->process_->ReadLine().value_or("<eof>");
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, "compressd listening on ")) {
      ADD_FAILURE() << "compressd did not start; stdout: '" << line
                    << "'; stderr: " << server->process_->StderrTail();
      return nullptr;
    }
    server->address_ = std::string(absl::StripAsciiWhitespace(rest));
    server->drain_ = std::thread([process = server->process_.get()] {
      while (process->ReadLine()) {
      }
    });
    return server;
  }

  ~Compressd() {
    if (!waited_) {
      process_->Signal(SIGTERM);
      absl::Notification done;
      std::thread watchdog([&] {
        if (!done.WaitForNotificationWithTimeout(absl::Seconds(30))) process_->Signal(SIGKILL);
      });
      process_->Wait();
      done.Notify();
      watchdog.join();
    }
    if (drain_.joinable()) drain_.join();
  }

  // SIGKILL, as a crash or an OOM kill would end it.
  void Kill() {
    process_->Signal(SIGKILL);
    process_->Wait();
    waited_ = true;
  }

  const std::string& address() const { return address_; }
  int port() const {
    int port = 0;
    absl::SimpleAtoi(address_.substr(address_.rfind(':') + 1), &port);
    return port;
  }

 private:
  explicit Compressd(std::unique_ptr<Subprocess> process) : process_(std::move(process)) {}

  std::unique_ptr<Subprocess> process_;
  std::string address_;
  std::thread drain_;
  bool waited_ = false;
};

class EndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/compress_e2e.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    root_ = dir_template;
    data_dir_ = root_ + "/data";
  }
  void TearDown() override {
    server_.reset();
    if (!HasFailure()) {
      std::error_code ec;
      fs::remove_all(root_, ec);
    }
  }

  CommandResult Ctl(std::vector<std::string> args, absl::Duration timeout = absl::Minutes(5)) {
    std::vector<std::string> argv = {COMPRESSCTL_BIN, absl::StrCat("--server=", server_->address()),
                                     "--output=json", "--timeout=10s", "--retry_for=60s"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, timeout);
  }

  // Writes the tiny test job, made `scale` times longer, and returns its path.
  std::string WriteSpec(int scale) {
    std::ifstream in(std::string(COMPRESS_SOURCE_DIR) + "/client/examples/tiny-synthetic-job.json");
    nlohmann::json spec = nlohmann::json::parse(in);
    if (scale > 1) {
      nlohmann::json& train = spec["teacher"]["train"];
      train["max_steps"] = train["max_steps"].get<int>() * scale;
      train["epochs"] = 1000;
    }
    std::string path = absl::StrCat(root_, "/job-", scale, ".json");
    std::ofstream(path) << spec.dump(2);
    return path;
  }

  std::string Submit(const std::string& spec) {
    CommandResult submitted = Ctl({"submit", spec});
    EXPECT_EQ(submitted.exit.exit_code, 0) << submitted.err;
    if (submitted.exit.exit_code != 0) return "";
    return nlohmann::json::parse(submitted.out)["name"].get<std::string>();
  }

  nlohmann::json GetJob(const std::string& job) {
    CommandResult got = Ctl({"get", job});
    if (got.exit.exit_code != 0) return nlohmann::json::object();
    return nlohmann::json::parse(got.out);
  }

  // Waits until the job runs and has at least `events` events; false on timeout.
  bool WaitUntilRunning(const std::string& job, int64_t events) {
    absl::Time deadline = absl::Now() + absl::Minutes(2);
    while (absl::Now() < deadline) {
      nlohmann::json state = GetJob(job);
      if (state.value("state", "") == "RUNNING" &&
          Int64Field(state, "last_event_sequence") >= events) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }

  // Parses watch --output=json: the events by sequence (as JSON with sorted keys), and the
  // final job (the last line).
  static std::map<int64_t, std::string> WatchedEvents(const std::string& out,
                                                      nlohmann::json* final_job) {
    std::map<int64_t, std::string> events;
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
      nlohmann::json json = nlohmann::json::parse(line);
      if (json.contains("sequence")) {
        EXPECT_EQ(events.count(Int64Field(json, "sequence")), 0u) << "duplicate: " << line;
        // Canonical form: protobuf prints map fields (metric values) in no fixed order.
        events[Int64Field(json, "sequence")] = json.dump();
      } else {
        *final_job = json;
      }
    }
    return events;
  }

  static void ExpectContinuous(const std::map<int64_t, std::string>& events) {
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.begin()->first, 1);
    EXPECT_EQ(events.rbegin()->first, static_cast<int64_t>(events.size()));
  }

  std::string root_;
  std::string data_dir_;
  std::unique_ptr<Compressd> server_;
};

TEST_F(EndToEndTest, SubmitWatchAndDownloadVerifiedArtifacts) {
  server_ = Compressd::Start(data_dir_, 0);
  ASSERT_NE(server_, nullptr);
  std::string job = Submit(WriteSpec(1));
  ASSERT_FALSE(job.empty());

  CommandResult watched = Ctl({"watch", job});
  ASSERT_EQ(watched.exit.exit_code, 0) << watched.out << watched.err;
  nlohmann::json final_job;
  std::map<int64_t, std::string> events = WatchedEvents(watched.out, &final_job);
  ExpectContinuous(events);
  EXPECT_EQ(final_job["state"], "SUCCEEDED");
  bool saw_metric = false;
  for (const auto& [sequence, line] : events) saw_metric |= absl::StrContains(line, "\"metric\"");
  EXPECT_TRUE(saw_metric);

  nlohmann::json got = GetJob(job);
  ASSERT_TRUE(got.contains("artifacts")) << got.dump();
  EXPECT_FALSE(got.value("report_json", "").empty());
  std::string out_dir = root_ + "/download";
  CommandResult downloaded = Ctl({"download", job, "-o", out_dir});
  ASSERT_EQ(downloaded.exit.exit_code, 0) << downloaded.err;
  for (const nlohmann::json& artifact : got["artifacts"]) {
    std::string name = artifact["name"].get<std::string>();
    absl::StatusOr<FileDigest> digest = Sha256File(out_dir + "/" + name);
    ASSERT_TRUE(digest.ok()) << digest.status();
    EXPECT_EQ(digest->sha256, artifact["sha256"].get<std::string>()) << name;
    EXPECT_EQ(digest->size_bytes, Int64Field(artifact, "size_bytes")) << name;
  }
}

TEST_F(EndToEndTest, ServerKilledMidJobRestartsAndTheJobFinishesWithItsEventsKept) {
  server_ = Compressd::Start(data_dir_, 0);
  ASSERT_NE(server_, nullptr);
  const int port = server_->port();
  std::string job = Submit(WriteSpec(20));
  ASSERT_FALSE(job.empty());
  ASSERT_TRUE(WaitUntilRunning(job, 5));

  // A watcher that lives through the crash: it must resume where its stream broke off.
  CommandResult survivor;
  std::thread watcher([&] { survivor = Ctl({"watch", job}); });
  absl::SleepFor(absl::Seconds(1));
  nlohmann::json before = GetJob(job);
  // The kill must land mid-job; WriteSpec's scale makes the job long enough for that.
  ASSERT_EQ(before.value("state", ""), "RUNNING") << before.dump();
  int64_t before_kill = Int64Field(before, "last_event_sequence");
  server_->Kill();
  server_.reset();
  server_ = Compressd::Start(data_dir_, port);
  ASSERT_NE(server_, nullptr);
  watcher.join();

  ASSERT_EQ(survivor.exit.exit_code, 0) << survivor.out << survivor.err;
  nlohmann::json survivor_job;
  std::map<int64_t, std::string> survivor_events = WatchedEvents(survivor.out, &survivor_job);
  EXPECT_EQ(survivor_job["state"], "SUCCEEDED");
  ExpectContinuous(survivor_events);
  EXPECT_GT(static_cast<int64_t>(survivor_events.size()), before_kill);

  // A fresh watch from the start sees the same history, the events from before the crash
  // included.
  CommandResult fresh = Ctl({"watch", job});
  ASSERT_EQ(fresh.exit.exit_code, 0) << fresh.err;
  nlohmann::json fresh_job;
  std::map<int64_t, std::string> fresh_events = WatchedEvents(fresh.out, &fresh_job);
  EXPECT_EQ(fresh_events, survivor_events);
  EXPECT_EQ(fresh_job["state"], "SUCCEEDED");
}

// The pid of the compress-run process working under `data_dir`, or 0.
pid_t FindExecutor(const std::string& data_dir) {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return 0;
  pid_t found = 0;
  while (dirent* entry = readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"), std::ios::binary);
    std::stringstream cmdline;
    cmdline << in.rdbuf();
    std::string text = cmdline.str();
    // argv[0] must be the executor itself: compressd's and the agent's own command lines name
    // the executor binary and the data dir in their flags too.
    const std::string program = text.substr(0, text.find('\0'));
    if (program == COMPRESS_RUN_BIN && absl::StrContains(text, data_dir)) {
      found = pid;
      break;
    }
  }
  closedir(proc);
  return found;
}

TEST_F(EndToEndTest, KilledExecutorIsRetriedAndTheJobSucceeds) {
  server_ = Compressd::Start(data_dir_, 0);
  ASSERT_NE(server_, nullptr);
  std::string job = Submit(WriteSpec(20));
  ASSERT_FALSE(job.empty());
  ASSERT_TRUE(WaitUntilRunning(job, 5));
  pid_t executor = FindExecutor(data_dir_);
  ASSERT_NE(executor, 0);
  ASSERT_EQ(kill(executor, SIGKILL), 0);

  CommandResult watched = Ctl({"watch", job});
  ASSERT_EQ(watched.exit.exit_code, 0) << watched.out << watched.err;
  nlohmann::json final_job;
  std::map<int64_t, std::string> events = WatchedEvents(watched.out, &final_job);
  ExpectContinuous(events);
  EXPECT_EQ(final_job["state"], "SUCCEEDED");
  EXPECT_EQ(final_job.value("attempt_count", 0), 2);
}

}  // namespace
}  // namespace compress::e2e
