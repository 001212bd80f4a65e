// WalCheckpointer: keeps a SQLite database's write-ahead log short without making commits wait.
#ifndef COMPRESS_SERVER_CORE_WAL_CHECKPOINTER_H_
#define COMPRESS_SERVER_CORE_WAL_CHECKPOINTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

struct sqlite3;

namespace compress::server {

// By default SQLite checkpoints in the commit that takes the WAL past 1,000 pages: that commit
// copies the log into the database and syncs it, and every call waiting behind it waits too
// (bench/results/server.md: the p99 of CreateJob with synchronous=NORMAL at 8 calls in flight is
// 12 ms that way, 5 ms with this). This replaces that: a commit that takes the WAL past `pages`
// wakes a thread of its own, which copies the log into the database on a second connection while
// the writer goes on (PASSIVE), then, holding the writer's mutex, copies what was added meanwhile
// and syncs the log and the database (RESTART), so that the next commit starts the log over.
// Should checkpoints fall behind (a commit finding `max_pages` pages in the WAL), the committing
// connection checkpoints itself, as SQLite would.
class WalCheckpointer {
 public:
  struct Options {
    int pages = 1000;
    int max_pages = 8000;
    // The mutex the writer's owner holds around every transaction: the final step of a
    // checkpoint holds it instead of making the writer poll SQLite's busy handler.
    absl::Mutex* writer_mu = nullptr;
  };

  // `writer`: the open connection in WAL mode whose commits are watched (its commit hook is
  // replaced); `path`: its database file, opened again for the checkpoints.
  static absl::StatusOr<std::unique_ptr<WalCheckpointer>> Start(sqlite3* writer,
                                                                const std::string& path,
                                                                const Options& options);
  // Stops the thread and closes its connection. Destroy before closing `writer`.
  ~WalCheckpointer();

  WalCheckpointer(const WalCheckpointer&) = delete;
  WalCheckpointer& operator=(const WalCheckpointer&) = delete;

  // Checkpoints completed by the thread, and by commits (the fall-back).
  int64_t background_checkpoints();
  int64_t inline_checkpoints();

 private:
  WalCheckpointer(sqlite3* writer, sqlite3* checkpoint_db, const Options& options);
  // sqlite3_wal_hook's callback, on the writer's thread after each commit.
  static int OnCommit(void* self, sqlite3* db, const char* name, int pages);
  void Loop();

  sqlite3* const writer_;
  sqlite3* const checkpoint_db_;  // owned; used by the thread only
  const Options options_;
  absl::Mutex mu_;
  bool wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t background_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t inline_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_WAL_CHECKPOINTER_H_
