#include "worker/run/work_dir.h"

#include <filesystem>
#include <fstream>

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
    ASSERT_TRUE(wd->MarkCompleted("teacher", {{"top1", 0.9}}).ok());
  }
  auto again = WorkDir::Open(dir, spec);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->Completed("teacher"));
  EXPECT_DOUBLE_EQ(again->Result("teacher")["top1"].get<double>(), 0.9);
  EXPECT_FALSE(again->Completed("prune"));
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

TEST(WorkDirTest, AtomicWriteReplacesWholeFile) {
  const std::string dir = FreshDir("atomic");
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/file";
  ASSERT_TRUE(WriteFileAtomically(path, "first version, longer").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  std::ifstream in(path);
  std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(contents, "second");
  EXPECT_EQ(WriteFileAtomically(dir + "/missing/file", "x").code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace compress::run
