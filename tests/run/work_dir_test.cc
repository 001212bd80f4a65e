#include "worker/run/work_dir.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace compress::run {
namespace {

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/work_dir_test_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(WorkDirTest, CompletedPhasesSurviveReopening) {
  const std::string dir = FreshDir("reopen");
  nlohmann::json spec = {{"dataset", {{"format", "synthetic"}}}};
  {
    auto wd = WorkDir::Open(dir, spec);
    ASSERT_TRUE(wd.ok()) << wd.status();
    EXPECT_FALSE(wd->Completed("teacher"));
    ASSERT_TRUE(
        wd->MarkCompleted("teacher", {{"top1", 0.9}, {"params", 1000}, {"macs", 5000}}).ok());
  }
  auto again = WorkDir::Open(dir, spec);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->Completed("teacher"));
  EXPECT_DOUBLE_EQ(again->Result("teacher")["top1"].get<double>(), 0.9);
  EXPECT_FALSE(again->Completed("prune"));
}

// Reopening removes the temporaries of writes a killed run did not finish, and nothing else: not
// those of a process that runs, nor those of a nested work dir.
TEST(WorkDirTest, ReopeningRemovesTheTemporariesOfUnfinishedWrites) {
  const std::string dir = FreshDir("temporaries");
  ASSERT_TRUE(WorkDir::Open(dir, {{"a", 1}}).ok());
  const std::string phase = dir + "/phases/teacher";
  std::filesystem::create_directories(phase + "/model");
  std::filesystem::create_directories(phase + "/trainer");
  std::filesystem::create_directories(dir + "/cache");
  const std::vector<std::string> stale = {
      phase + "/model/model.safetensors.tmp.99999998.0", phase + "/trainer/trainer_state.pt.tmp",
      dir + "/state.json.tmp.99999999.3", dir + "/cache/image_folder-0123.dscache.tmp.99999997.12"};
  std::vector<std::string> kept = {phase + "/model/model.safetensors",
                                   phase + "/trainer/trainer_state.pt",
                                   dir + "/notes.tmp.txt",
                                   dir + "/x.tmp.1.2.bak",
                                   dir + "/.tmp.1.2",
                                   dir + "/a.tmp.1."};
  // The stale ones name pids past Linux's limit (2^22); this process runs: its temporaries are
  // in flight. A nested work dir (its own .lock) is
  // another executor's.
  const std::string mine = dir + "/cache/shared.dscache.tmp." + std::to_string(::getpid()) + ".0";
  std::filesystem::create_directories(dir + "/nested/phases");
  std::ofstream(dir + "/nested/.lock");
  kept.push_back(mine);
  kept.push_back(dir + "/nested/phases/state.json.tmp.17.3");
  for (const std::string& file : stale) std::ofstream(file) << "partial";
  for (const std::string& file : kept) std::ofstream(file) << "whole";
  ASSERT_TRUE(WorkDir::Open(dir, {{"a", 1}}).ok());
  for (const std::string& file : stale) EXPECT_FALSE(std::filesystem::exists(file)) << file;
  for (const std::string& file : kept) EXPECT_TRUE(std::filesystem::exists(file)) << file;
}

TEST(WorkDirTest, DifferentSpecIsRefused) {
  const std::string dir = FreshDir("mismatch");
  ASSERT_TRUE(WorkDir::Open(dir, {{"a", 1}}).ok());
  auto other = WorkDir::Open(dir, {{"a", 2}});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(other.status().message().find("different job spec"), absl::string_view::npos);
}

TEST(WorkDirTest, CorruptStateIsDataLoss) {
  const std::string dir = FreshDir("corrupt");
  ASSERT_TRUE(WorkDir::Open(dir, {{"a", 1}}).ok());
  std::ofstream(dir + "/state.json") << "{\"completed\": [";
  auto wd = WorkDir::Open(dir, {{"a", 1}});
  EXPECT_EQ(wd.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(wd.status().message().find("state.json"), absl::string_view::npos);
}

// A completed phase whose result lacks what a resumed run reads is refused on opening.
TEST(WorkDirTest, MalformedCompletedPhaseIsDataLossNamingIt) {
  const std::string dir = FreshDir("bad_phase");
  ASSERT_TRUE(WorkDir::Open(dir, {{"a", 1}}).ok());
  const std::pair<const char*, const char*> cases[] = {
      {R"({"completed": {"teacher": 5}})", "completed phase 'teacher' is not an object"},
      {R"({"completed": {"teacher": {}}})", "completed phase 'teacher' has no 'macs'"},
      {R"({"completed": {"teacher": {"macs": 1, "params": 2, "top1": 0.5},
                         "prune": {"macs": "many", "params": 2, "top1": 0.5}}})",
       "completed phase 'prune' has a non-numeric 'macs'"},
  };
  for (const auto& [text, needle] : cases) {
    std::ofstream(dir + "/state.json", std::ios::trunc) << text;
    auto wd = WorkDir::Open(dir, {{"a", 1}});
    EXPECT_EQ(wd.status().code(), absl::StatusCode::kDataLoss) << wd.status();
    EXPECT_NE(wd.status().message().find(dir + "/state.json: " + needle), absl::string_view::npos)
        << wd.status();
  }
  std::ofstream(dir + "/state.json", std::ios::trunc)
      << R"({"completed": {"teacher": {"macs": 1, "params": 2, "top1": 0.5}}})";
  EXPECT_TRUE(WorkDir::Open(dir, {{"a", 1}}).ok());
}

// The status follows the system's error, not a fixed code: a full disk is RESOURCE_EXHAUSTED
// (retryable), a path through a regular file NOT_FOUND.
TEST(WorkDirTest, DirectoryThatCannotBeCreatedGivesTheErrorOfItsCause) {
  const std::string dir = FreshDir("blocked");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/file") << "not a directory";
  auto wd = WorkDir::Open(dir + "/file/work", {{"a", 1}});
  EXPECT_EQ(wd.status().code(), absl::StatusCode::kNotFound) << wd.status();
  EXPECT_NE(wd.status().message().find(dir + "/file/work"), absl::string_view::npos) << wd.status();
}

}  // namespace
}  // namespace compress::run
