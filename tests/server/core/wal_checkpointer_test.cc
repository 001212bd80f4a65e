#include "server/core/wal_checkpointer.h"

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/core/sqlite_statement.h"
#include "tests/common/test_dir.h"

namespace compress::server {
namespace {

// A database in WAL mode with one table, written one row per transaction (about two pages of log
// each), the writer holding `mu` around each, as JobStore does.
class WalCheckpointerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("wal.db");
    ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                              nullptr),
              SQLITE_OK);
    ASSERT_TRUE(SqliteExec(db_, "PRAGMA journal_mode=WAL").ok());
    ASSERT_TRUE(SqliteExec(db_, "PRAGMA synchronous=NORMAL").ok());
    ASSERT_TRUE(SqliteExec(db_, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").ok());
  }

  void TearDown() override {
    checkpointer_.reset();
    sqlite3_close(db_);
  }

  void Start(int pages, int max_pages) {
    WalCheckpointer::Options options;
    options.pages = pages;
    options.max_pages = max_pages;
    options.writer_mu = &mu_;
    absl::StatusOr<std::unique_ptr<WalCheckpointer>> checkpointer =
        WalCheckpointer::Start(db_, path_, options);
    ASSERT_TRUE(checkpointer.ok()) << checkpointer.status();
    checkpointer_ = *std::move(checkpointer);
  }

  // Writes `rows` rows, one transaction each; returns the largest WAL file seen. With
  // `pace_pages`, a log past that many pages makes the writer wait (up to 5 s) for the next
  // background checkpoint, as a writer that is not alone on a loaded machine would: the bound
  // then tests that those checkpoints start the log over, not how fast the thread is scheduled.
  int64_t Write(int rows, bool hold_mutex = true, int pace_pages = 0) {
    int64_t largest = 0;
    const std::string value(3000, 'x');
    for (int i = 0; i < rows; ++i) {
      const int64_t background_before = checkpointer_->background_checkpoints();
      {
        std::unique_ptr<absl::MutexLock> lock;
        if (hold_mutex) lock = std::make_unique<absl::MutexLock>(&mu_);
        std::string sql = absl::StrCat("INSERT INTO t (v) VALUES ('", value, "')");
        EXPECT_TRUE(SqliteExec(db_, sql.c_str()).ok());
      }
      const int64_t size = std::filesystem::file_size(path_ + "-wal");
      largest = std::max<int64_t>(largest, size);
      if (pace_pages > 0 && size > int64_t{pace_pages} * 4096) {
        const absl::Time deadline = absl::Now() + absl::Seconds(5);
        while (checkpointer_->background_checkpoints() == background_before &&
               absl::Now() < deadline) {
          absl::SleepFor(absl::Milliseconds(1));
        }
      }
      if (i % 5 == 4) absl::SleepFor(absl::Milliseconds(2));  // room for the checkpointer
    }
    return largest;
  }

  TestDir dir_;
  std::string path_;
  sqlite3* db_ = nullptr;
  absl::Mutex mu_;
  std::unique_ptr<WalCheckpointer> checkpointer_;
};

TEST_F(WalCheckpointerTest, BackgroundCheckpointsKeepTheLogShort) {
  Start(/*pages=*/50, /*max_pages=*/400);
  // 1,000 rows are some 2,000 pages of log; the log starts over near 50 pages, far from the 400
  // where commits would checkpoint themselves.
  int64_t largest = Write(1000, /*hold_mutex=*/true, /*pace_pages=*/150);
  EXPECT_LT(largest, 400 * 4096);
  EXPECT_GT(checkpointer_->background_checkpoints(), 0);
  EXPECT_EQ(checkpointer_->inline_checkpoints(), 0);
}

TEST_F(WalCheckpointerTest, CommitsCheckpointThemselvesWhenTheThreadIsHeldUp) {
  Start(/*pages=*/50, /*max_pages=*/200);
  int64_t largest = 0;
  {
    // The thread's final step waits for the writer's mutex, held here throughout: only the
    // commits' own fall-back keeps the log from growing without end.
    absl::MutexLock hold(&mu_);
    largest = Write(1000, /*hold_mutex=*/false);
  }
  EXPECT_GT(checkpointer_->inline_checkpoints(), 0);
  EXPECT_LT(largest, 2 * 200 * 4096);
  // Released, the thread goes back to work.
  int64_t background = checkpointer_->background_checkpoints();
  Write(200);
  EXPECT_GT(checkpointer_->background_checkpoints(), background);
}

TEST_F(WalCheckpointerTest, RefusesOptionsItCannotWorkWith) {
  WalCheckpointer::Options no_mutex;
  EXPECT_EQ(WalCheckpointer::Start(db_, path_, no_mutex).status().code(),
            absl::StatusCode::kInvalidArgument);
  WalCheckpointer::Options no_pages;
  no_pages.writer_mu = &mu_;
  no_pages.pages = 0;
  EXPECT_EQ(WalCheckpointer::Start(db_, path_, no_pages).status().code(),
            absl::StatusCode::kInvalidArgument);
  WalCheckpointer::Options inverted;
  inverted.writer_mu = &mu_;
  inverted.pages = 100;
  inverted.max_pages = 50;
  EXPECT_EQ(WalCheckpointer::Start(db_, path_, inverted).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace compress::server
