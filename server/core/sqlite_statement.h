// A thin RAII wrapper over one prepared SQLite statement, returning absl::Status.
#ifndef COMPRESS_SERVER_CORE_SQLITE_STATEMENT_H_
#define COMPRESS_SERVER_CORE_SQLITE_STATEMENT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;
struct sqlite3_stmt;

namespace compress::server {

// INTERNAL (or RESOURCE_EXHAUSTED for a full disk, UNAVAILABLE for a busy database) with
// SQLite's message and `what` (the operation that failed).
absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what);

// Runs one or more statements without results ("BEGIN IMMEDIATE", DDL).
absl::Status SqliteExec(sqlite3* db, const char* sql);

// A prepared statement. Not thread-safe: the owner serialises its use (JobStore holds its mutex).
// Parameters are 1-based, columns 0-based, as in SQLite's C API.
class Statement {
 public:
  static absl::StatusOr<Statement> Prepare(sqlite3* db, absl::string_view sql);

  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Resets the statement and clears its bindings, ready for new parameters.
  void Reset();

  void BindInt(int index, int64_t value);
  void BindText(int index, absl::string_view value);
  // Binds NULL for an empty optional.
  void BindOptionalInt(int index, std::optional<int64_t> value);
  // Binds NULL for an empty string.
  void BindTextOrNull(int index, absl::string_view value);

  // Advances: true with a row to read, false when done.
  absl::StatusOr<bool> Step();
  // Steps a statement that returns no rows.
  absl::Status Run();

  int64_t ColumnInt(int column) const;
  std::optional<int64_t> ColumnOptionalInt(int column) const;
  // "" for NULL.
  std::string ColumnText(int column) const;

 private:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}

  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_SQLITE_STATEMENT_H_
