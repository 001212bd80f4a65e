#include "server/core/wal_checkpointer.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "server/core/sqlite_statement.h"

namespace compress::server {

absl::StatusOr<std::unique_ptr<WalCheckpointer>> WalCheckpointer::Start(sqlite3* writer,
                                                                        const std::string& path,
                                                                        const Options& options) {
  if (options.writer_mu == nullptr || options.pages <= 0 || options.max_pages < options.pages) {
    return absl::InvalidArgumentError(absl::StrCat(
        "WalCheckpointer: needs Options::writer_mu and 0 < pages <= max_pages (pages ",
        options.pages, ", max_pages ", options.max_pages, ")"));
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteError(db, rc, absl::StrCat("open ", path, " for checkpoints"));
    sqlite3_close(db);
    return status;
  }
  // A connection learns that the database is in WAL mode when it first reads it; until then a
  // checkpoint does nothing. (No busy handler: RESTART runs with the writer held off by
  // Options::writer_mu, and one that finds a reader is tried again after a later commit.)
  if (absl::Status s = SqliteExec(db, "PRAGMA journal_mode"); !s.ok()) {
    sqlite3_close(db);
    return s;
  }
  std::unique_ptr<WalCheckpointer> checkpointer(new WalCheckpointer(writer, db, options));
  sqlite3_wal_hook(writer, &WalCheckpointer::OnCommit, checkpointer.get());
  return checkpointer;
}

WalCheckpointer::WalCheckpointer(sqlite3* writer, sqlite3* checkpoint_db, const Options& options)
    : writer_(writer), checkpoint_db_(checkpoint_db), options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

WalCheckpointer::~WalCheckpointer() {
  sqlite3_wal_hook(writer_, nullptr, nullptr);
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
  sqlite3_close(checkpoint_db_);
}

int WalCheckpointer::OnCommit(void* self, sqlite3* db, const char* name, int pages) {
  auto* checkpointer = static_cast<WalCheckpointer*>(self);
  if (pages >= checkpointer->options_.max_pages) {
    // Best effort, as SQLite's own: a checkpoint that cannot finish now is retried later.
    if (sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr) ==
        SQLITE_OK) {
      absl::MutexLock lock(&checkpointer->mu_);
      ++checkpointer->inline_;
    }
  } else if (pages >= checkpointer->options_.pages) {
    absl::MutexLock lock(&checkpointer->mu_);
    checkpointer->wanted_ = true;
  }
  return SQLITE_OK;
}

void WalCheckpointer::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](WalCheckpointer* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
            return c->wanted_ || c->stop_;
          },
          this));
      if (stop_) return;
      wanted_ = false;
    }
    // First copy what the log holds while the writer goes on; then, with the writer held off
    // for the few frames it added meanwhile, finish and have the next commit start the log from
    // its beginning (a log that is never complete would only grow).
    int rc = sqlite3_wal_checkpoint_v2(checkpoint_db_, "main", SQLITE_CHECKPOINT_PASSIVE, nullptr,
                                       nullptr);
    if (rc == SQLITE_OK) {
      absl::MutexLock writer_lock(options_.writer_mu);
      rc = sqlite3_wal_checkpoint_v2(checkpoint_db_, "main", SQLITE_CHECKPOINT_RESTART, nullptr,
                                     nullptr);
    }
    absl::MutexLock lock(&mu_);
    if (rc == SQLITE_OK) {
      ++background_;
      wanted_ = false;  // commits made during the pass asked for the checkpoint just done
    }
  }
}

int64_t WalCheckpointer::background_checkpoints() {
  absl::MutexLock lock(&mu_);
  return background_;
}

int64_t WalCheckpointer::inline_checkpoints() {
  absl::MutexLock lock(&mu_);
  return inline_;
}

}  // namespace compress::server
