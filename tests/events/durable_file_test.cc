#include "worker/events/durable_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace compress {
namespace {

namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  const std::string dir =
      (fs::temp_directory_path() / absl::StrCat("durable_file_test_", ::getpid(), "_", name))
          .string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string Contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

TEST(DurableFileTest, ReplacesTheWholeFileAndLeavesNoTemporary) {
  const std::string dir = FreshDir("replace");
  const std::string path = dir + "/file";
  ASSERT_TRUE(WriteFileAtomically(path, "first version, longer").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  EXPECT_EQ(Contents(path), "second");
  ASSERT_TRUE(WriteFileAtomically(path, "").ok());
  EXPECT_EQ(Contents(path), "");
  EXPECT_EQ(Names(dir), std::vector<std::string>{"file"});
}

TEST(DurableFileTest, MissingDirectoryIsNotFoundNamingTheTemporary) {
  const std::string dir = FreshDir("missing");
  const absl::Status status = WriteFileAtomically(dir + "/missing/file", "x");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(status.message().find(dir + "/missing/file.tmp."), absl::string_view::npos) << status;
}

TEST(DurableFileTest, FailedRenameKeepsTheTargetAndRemovesTheTemporary) {
  const std::string dir = FreshDir("rename");
  const std::string path = dir + "/target";
  fs::create_directories(path + "/inside");  // a non-empty directory cannot be replaced
  const absl::Status status = WriteFileAtomically(path, "x");
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("cannot rename"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find(path), absl::string_view::npos) << status;
  EXPECT_TRUE(fs::is_directory(path + "/inside"));
  EXPECT_EQ(Names(dir), std::vector<std::string>{"target"});
}

// Writers in one process use temporaries of their own: each write succeeds and the file ends
// as one of them, whole.
TEST(DurableFileTest, ConcurrentWritersInOneProcessDoNotShareATemporary) {
  const std::string dir = FreshDir("concurrent");
  const std::string path = dir + "/file";
  std::set<std::string> written;
  for (int i = 0; i < 8; ++i)
    written.insert(std::string(64 * 1024 + i, static_cast<char>('a' + i)));
  std::vector<std::thread> threads;
  std::vector<absl::Status> statuses(written.size());
  int index = 0;
  for (const std::string& contents : written) {
    threads.emplace_back([&path, &contents, &statuses, index] {
      for (int round = 0; round < 10 && statuses[index].ok(); ++round) {
        statuses[index] = WriteFileAtomically(path, contents);
      }
    });
    ++index;
  }
  for (std::thread& thread : threads) thread.join();
  for (const absl::Status& status : statuses) EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(written.count(Contents(path)), 1u);
  EXPECT_EQ(Names(dir), std::vector<std::string>{"file"});
}

TEST(DurableFileTest, SyncPathFlushesFilesAndDirectoriesAndNamesAMissingPath) {
  const std::string dir = FreshDir("sync");
  ASSERT_TRUE(WriteFileAtomically(dir + "/file", "x").ok());
  EXPECT_TRUE(SyncPath(dir + "/file").ok());
  EXPECT_TRUE(SyncPath(dir).ok());
  EXPECT_TRUE(SyncParentDirectory(dir + "/file").ok());
  const absl::Status missing = SyncPath(dir + "/absent");
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find(dir + "/absent"), absl::string_view::npos) << missing;
}

TEST(DurableFileTest, ErrnoStatusMapsTheCommonErrors) {
  EXPECT_EQ(ErrnoStatus(ENOENT, "open x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrnoStatus(ENOTDIR, "open x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrnoStatus(EACCES, "open x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoStatus(EROFS, "open x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoStatus(ENOSPC, "write x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoStatus(EDQUOT, "write x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoStatus(EIO, "write x").code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrnoStatus(ENOENT, "open x").message(),
            absl::StrCat("open x: ", std::strerror(ENOENT)));
}

}  // namespace
}  // namespace compress
