#include "server/core/job_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/core/job_store_schema.h"

namespace compress::server {
namespace {

using job_store_schema::kMigrateV1ToV2;
using job_store_schema::kMigrateV2ToV3;
using job_store_schema::kSchema;
using job_store_schema::kSchemaVersion;

// ListJobs keeps its prepared statements for filters of up to this many label clauses.
constexpr size_t kCachedLabelClauses = 4;

constexpr char kJobColumns[] =
    "seq, id, spec_json, state, labels_json, priority, request_id, create_us, queue_us, "
    "start_us, end_us, attempt_count, max_attempts, current_phase, error_code, error_message, "
    "report_json, lease_owner, last_event_sequence, tenant, attempt_lines";

std::optional<int64_t> ToMicros(const std::optional<absl::Time>& time) {
  if (!time.has_value()) return std::nullopt;
  return absl::ToUnixMicros(*time);
}

std::optional<absl::Time> FromMicros(std::optional<int64_t> micros) {
  if (!micros.has_value()) return std::nullopt;
  return absl::FromUnixMicros(*micros);
}

// Reads a row selected with kJobColumns; returns its seq.
int64_t ReadJobRow(const Statement& row, Job& job) {
  job.id = row.ColumnText(1);
  job.spec_json = row.ColumnText(2);
  job.state = static_cast<JobState>(row.ColumnInt(3));
  nlohmann::json labels = nlohmann::json::parse(row.ColumnText(4), nullptr, false);
  job.labels.clear();
  if (labels.is_object()) {
    for (const auto& [key, value] : labels.items()) {
      if (value.is_string()) job.labels[key] = value.get<std::string>();
    }
  }
  job.priority = static_cast<int>(row.ColumnInt(5));
  job.request_id = row.ColumnText(6);
  job.create_time = absl::FromUnixMicros(row.ColumnInt(7));
  job.queue_time = absl::FromUnixMicros(row.ColumnInt(8));
  job.start_time = FromMicros(row.ColumnOptionalInt(9));
  job.end_time = FromMicros(row.ColumnOptionalInt(10));
  job.attempt_count = static_cast<int>(row.ColumnInt(11));
  job.max_attempts = static_cast<int>(row.ColumnInt(12));
  job.current_phase = row.ColumnText(13);
  job.error_code = row.ColumnText(14);
  job.error_message = row.ColumnText(15);
  job.report_json = row.ColumnText(16);
  job.lease_owner = row.ColumnText(17);
  job.last_event_sequence = row.ColumnInt(18);
  job.tenant = row.ColumnText(19);
  job.attempt_lines = row.ColumnInt(20);
  job.creation_order = row.ColumnInt(0);
  return job.creation_order;
}

// The bytes of a job's text fields: what makes a job large (the spec, the report, the error).
int64_t TextBytes(const Job& job) {
  int64_t bytes = static_cast<int64_t>(job.id.size() + job.tenant.size() + job.spec_json.size() +
                                       job.request_id.size() + job.current_phase.size() +
                                       job.error_code.size() + job.error_message.size() +
                                       job.report_json.size() + job.lease_owner.size());
  for (const auto& [key, value] : job.labels) {
    bytes += static_cast<int64_t>(key.size() + value.size());
  }
  return bytes;
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const Options& options) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(options.path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteError(db, rc, absl::StrCat("open ", options.path));
    sqlite3_close(db);
    return status;
  }
  std::unique_ptr<JobStore> store(new JobStore(db));
  absl::MutexLock lock(&store->mu_);
  if (absl::Status s = store->Init(options); !s.ok()) {
    // Say which store: an unwritable data dir shows only here (SQLite opens a file it may not
    // write read-only, and the first write fails).
    if (absl::StrContains(s.message(), options.path)) return s;
    return absl::Status(s.code(), absl::StrCat("cannot open ", options.path, ": ", s.message()));
  }
  WalCheckpointer::Options wal;
  wal.writer_mu = &store->mu_;
  absl::StatusOr<std::unique_ptr<WalCheckpointer>> checkpointer =
      WalCheckpointer::Start(db, options.path, wal);
  if (!checkpointer.ok()) return checkpointer.status();
  store->checkpointer_ = *std::move(checkpointer);
  return store;
}

JobStore::~JobStore() {
  checkpointer_.reset();
  {
    absl::MutexLock lock(&mu_);
    statements_.clear();
  }
  sqlite3_close(db_);
}

absl::Status JobStore::Init(const Options& options) {
  sqlite3_busy_timeout(db_, 5000);
  if (absl::Status s = SqliteExec(db_, "PRAGMA journal_mode=WAL"); !s.ok()) return s;
  if (absl::Status s = SqliteExec(
          db_, options.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = SqliteExec(db_, "PRAGMA foreign_keys=ON"); !s.ok()) return s;
  return InTransactionLocked([&]() -> absl::Status {
    if (absl::Status s =
            SqliteExec(db_, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
        !s.ok()) {
      return s;
    }
    absl::StatusOr<Statement*> select = StatementLocked("SELECT MAX(version) FROM schema_version");
    if (!select.ok()) return select.status();
    absl::StatusOr<bool> row = (*select)->Step();
    if (!row.ok()) return row.status();
    std::optional<int64_t> version = (*select)->ColumnOptionalInt(0);
    (*select)->Reset();
    if (version.has_value() && *version > kSchemaVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("job store ", options.path, ": schema version ", *version,
                       " is newer than this compressd's (", kSchemaVersion, ")"));
    }
    if (version.has_value() && *version == 1) {
      if (absl::Status s = SqliteExec(db_, kMigrateV1ToV2); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("job store ", options.path,
                                                   ": migrating schema 1 to 2: ", s.message()));
      }
    }
    if (version.has_value() && *version <= 2) {
      if (absl::Status s = SqliteExec(db_, kMigrateV2ToV3); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("job store ", options.path,
                                                   ": migrating schema 2 to 3: ", s.message()));
      }
    }
    if (absl::Status s = SqliteExec(db_, kSchema); !s.ok()) return s;
    if (version == kSchemaVersion) return absl::OkStatus();
    if (absl::Status s = SqliteExec(db_, "DELETE FROM schema_version"); !s.ok()) return s;
    absl::StatusOr<Statement*> insert =
        StatementLocked("INSERT INTO schema_version (version) VALUES (?)");
    if (!insert.ok()) return insert.status();
    (*insert)->BindInt(1, kSchemaVersion);
    return (*insert)->Run();
  });
}

absl::StatusOr<Statement*> JobStore::StatementLocked(const std::string& sql) {
  auto it = statements_.find(sql);
  if (it == statements_.end()) {
    absl::StatusOr<Statement> statement = Statement::Prepare(db_, sql);
    if (!statement.ok()) return statement.status();
    it = statements_.emplace(sql, *std::move(statement)).first;
  }
  it->second.Reset();
  return &it->second;
}

template <typename Body>
auto JobStore::InTransactionLocked(Body body) -> decltype(body()) {
  if (absl::Status s = SqliteExec(db_, "BEGIN IMMEDIATE"); !s.ok()) return s;
  auto result = body();
  if (!result.ok()) {
    SqliteExec(db_, "ROLLBACK").IgnoreError();
    return result;
  }
  if (absl::Status s = SqliteExec(db_, "COMMIT"); !s.ok()) {
    SqliteExec(db_, "ROLLBACK").IgnoreError();
    return s;
  }
  return result;
}

absl::Status JobStore::InsertJobLocked(const Job& job) {
  absl::StatusOr<Statement*> insert = StatementLocked(
      "INSERT INTO jobs (id, spec_json, state, labels_json, priority, request_id, create_us, "
      "queue_us, start_us, end_us, attempt_count, max_attempts, current_phase, error_code, "
      "error_message, report_json, lease_owner, last_event_sequence, tenant) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)");
  if (!insert.ok()) return insert.status();
  Statement& s = **insert;
  nlohmann::json labels = job.labels;
  s.BindText(1, job.id);
  s.BindText(2, job.spec_json);
  s.BindInt(3, static_cast<int>(job.state));
  s.BindText(4, DumpJson(labels));
  s.BindInt(5, job.priority);
  s.BindTextOrNull(6, job.request_id);
  s.BindInt(7, absl::ToUnixMicros(job.create_time));
  s.BindInt(8, absl::ToUnixMicros(job.queue_time));
  s.BindOptionalInt(9, ToMicros(job.start_time));
  s.BindOptionalInt(10, ToMicros(job.end_time));
  s.BindInt(11, job.attempt_count);
  s.BindInt(12, job.max_attempts);
  s.BindText(13, job.current_phase);
  s.BindText(14, job.error_code);
  s.BindText(15, job.error_message);
  s.BindText(16, job.report_json);
  s.BindText(17, job.lease_owner);
  s.BindText(18, job.tenant);
  if (absl::Status st = s.Run(); !st.ok()) return st;
  absl::StatusOr<Statement*> label =
      StatementLocked("INSERT INTO job_labels (job_id, key, value) VALUES (?, ?, ?)");
  if (!label.ok()) return label.status();
  for (const auto& [key, value] : job.labels) {
    (*label)->Reset();
    (*label)->BindText(1, job.id);
    (*label)->BindText(2, key);
    (*label)->BindText(3, value);
    if (absl::Status st = (*label)->Run(); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<CreatedJob> JobStore::CreateJob(const Job& job, std::vector<JobEvent> events,
                                               int64_t max_queued_in_tenant) {
  std::vector<NewJob> one;
  one.push_back({job, std::move(events)});
  return std::move(CreateJobs(std::move(one), max_queued_in_tenant).front());
}

std::vector<absl::StatusOr<CreatedJob>> JobStore::CreateJobs(std::vector<NewJob> jobs,
                                                             int64_t max_queued_in_tenant) {
  absl::MutexLock lock(&mu_);
  std::vector<absl::StatusOr<CreatedJob>> results;
  results.reserve(jobs.size());
  auto fail_all = [&](const absl::Status& status) {
    results.assign(jobs.size(), status);
    return results;
  };
  if (absl::Status s = SqliteExec(db_, "BEGIN IMMEDIATE"); !s.ok()) return fail_all(s);
  // A job alone needs no savepoint: when it fails, the whole transaction is rolled back.
  const bool savepoints = jobs.size() > 1;
  for (NewJob& new_job : jobs) {
    if (savepoints) {
      if (absl::Status s = SqliteExec(db_, "SAVEPOINT create_job"); !s.ok()) {
        SqliteExec(db_, "ROLLBACK").IgnoreError();
        return fail_all(s);
      }
    }
    absl::StatusOr<CreatedJob> result =
        CreateJobLocked(new_job.job, std::move(new_job.events), max_queued_in_tenant);
    if (!savepoints) {
      if (!result.ok()) {
        SqliteExec(db_, "ROLLBACK").IgnoreError();
        return fail_all(result.status());
      }
    } else {
      absl::Status undo =
          result.ok() ? absl::OkStatus() : SqliteExec(db_, "ROLLBACK TO SAVEPOINT create_job");
      absl::Status release = SqliteExec(db_, "RELEASE SAVEPOINT create_job");
      if (!undo.ok() || !release.ok()) {
        // SQLite rolled the whole transaction back itself (an I/O error, a full disk): the batch
        // fails with the error that did it.
        SqliteExec(db_, "ROLLBACK").IgnoreError();
        return fail_all(!result.ok() ? result.status() : release);
      }
    }
    results.push_back(std::move(result));
  }
  if (absl::Status s = SqliteExec(db_, "COMMIT"); !s.ok()) {
    SqliteExec(db_, "ROLLBACK").IgnoreError();
    return fail_all(s);
  }
  return results;
}

absl::StatusOr<CreatedJob> JobStore::CreateJobLocked(const Job& job, std::vector<JobEvent> events,
                                                     int64_t max_queued_in_tenant) {
  if (!job.request_id.empty()) {
    absl::StatusOr<Statement*> find =
        StatementLocked("SELECT id FROM jobs WHERE tenant = ? AND request_id = ?");
    if (!find.ok()) return find.status();
    (*find)->BindText(1, job.tenant);
    (*find)->BindText(2, job.request_id);
    absl::StatusOr<bool> row = (*find)->Step();
    if (!row.ok()) return row.status();
    if (*row) {
      std::string existing = (*find)->ColumnText(0);
      (*find)->Reset();
      absl::StatusOr<Job> earlier = GetJobLocked(existing);
      if (!earlier.ok()) return earlier.status();
      return CreatedJob{*std::move(earlier), /*created=*/false};
    }
  }
  if (max_queued_in_tenant > 0) {
    absl::StatusOr<Statement*> count =
        StatementLocked("SELECT COUNT(*) FROM jobs WHERE tenant = ? AND state = ?");
    if (!count.ok()) return count.status();
    (*count)->BindText(1, job.tenant);
    (*count)->BindInt(2, static_cast<int>(JobState::kQueued));
    absl::StatusOr<bool> row = (*count)->Step();
    if (!row.ok()) return row.status();
    int64_t queued = (*count)->ColumnInt(0);
    (*count)->Reset();
    if (queued >= max_queued_in_tenant) {
      return absl::ResourceExhaustedError(
          absl::StrCat("tenant '", job.tenant, "' has ", queued,
                       " queued jobs, the most allowed (--max_queued_jobs_per_tenant); retry "
                       "once some have started"));
    }
  }
  if (absl::Status s = InsertJobLocked(job); !s.ok()) return s;
  if (absl::StatusOr<std::vector<JobEvent>> appended =
          AppendEventsLocked(job.id, std::move(events));
      !appended.ok()) {
    return appended.status();
  }
  absl::StatusOr<Job> stored = GetJobLocked(job.id);
  if (!stored.ok()) return stored.status();
  return CreatedJob{*std::move(stored), /*created=*/true};
}

absl::StatusOr<Job> JobStore::GetJob(const std::string& id) {
  absl::MutexLock lock(&mu_);
  return GetJobLocked(id);
}

absl::StatusOr<Job> JobStore::GetJobLocked(const std::string& id) {
  absl::StatusOr<Statement*> select =
      StatementLocked(absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = ?"));
  if (!select.ok()) return select.status();
  (*select)->BindText(1, id);
  absl::StatusOr<bool> row = (*select)->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError(absl::StrCat("job '", id, "' not found"));
  Job job;
  ReadJobRow(**select, job);
  (*select)->Reset();
  if (absl::Status s = LoadArtifactsLocked(job); !s.ok()) return s;
  return job;
}

absl::Status JobStore::LoadArtifactsLocked(Job& job) {
  absl::StatusOr<Statement*> select = StatementLocked(
      "SELECT name, size_bytes, sha256 FROM artifacts WHERE job_id = ? ORDER BY name");
  if (!select.ok()) return select.status();
  (*select)->BindText(1, job.id);
  job.artifacts.clear();
  while (true) {
    absl::StatusOr<bool> row = (*select)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    job.artifacts.push_back(
        {(*select)->ColumnText(0), (*select)->ColumnInt(1), (*select)->ColumnText(2)});
  }
  (*select)->Reset();
  return absl::OkStatus();
}

absl::StatusOr<JobPage> JobStore::ListJobs(const JobFilter& filter, int page_size,
                                           int64_t after_cursor, int64_t max_bytes) {
  if (static_cast<int>(filter.labels.size()) > kMaxLabels) {
    return absl::InvalidArgumentError(absl::StrCat("filter: more than ", kMaxLabels,
                                                   " labels clauses (a job has at most ",
                                                   kMaxLabels, " labels)"));
  }
  page_size = std::max(page_size, 1);
  absl::MutexLock lock(&mu_);
  std::string sql = absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE seq > ?");
  if (filter.state.has_value()) absl::StrAppend(&sql, " AND state = ?");
  if (filter.tenant.has_value()) absl::StrAppend(&sql, " AND tenant = ?");
  for (size_t i = 0; i < filter.labels.size(); ++i) {
    absl::StrAppend(&sql,
                    " AND EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.id AND "
                    "l.key = ? AND l.value = ?)");
  }
  absl::StrAppend(&sql, " ORDER BY seq LIMIT ?");
  // The query's text depends on the number of label clauses: those of short filters are kept
  // with the other statements (a few shapes); a longer filter's is prepared for this call only,
  // so that what clients send cannot grow the cache.
  std::optional<Statement> one_off;
  Statement* select = nullptr;
  if (filter.labels.size() <= kCachedLabelClauses) {
    absl::StatusOr<Statement*> cached = StatementLocked(sql);
    if (!cached.ok()) return cached.status();
    select = *cached;
  } else {
    absl::StatusOr<Statement> prepared = Statement::Prepare(db_, sql);
    if (!prepared.ok()) return prepared.status();
    select = &one_off.emplace(*std::move(prepared));
  }
  Statement& s = *select;
  int index = 1;
  s.BindInt(index++, after_cursor);
  if (filter.state.has_value()) s.BindInt(index++, static_cast<int>(*filter.state));
  if (filter.tenant.has_value()) s.BindText(index++, *filter.tenant);
  for (const auto& [key, value] : filter.labels) {
    s.BindText(index++, key);
    s.BindText(index++, value);
  }
  // One more than asked, to know whether another page follows.
  s.BindInt(index++, page_size + 1);
  JobPage page;
  int64_t bytes = 0;
  while (true) {
    absl::StatusOr<bool> row = s.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    if (static_cast<int>(page.jobs.size()) == page_size || (max_bytes > 0 && bytes >= max_bytes)) {
      // Another job follows the page: the next one starts with it.
      page.next_cursor = page.jobs.back().creation_order;
      break;
    }
    Job job;
    ReadJobRow(s, job);
    bytes += TextBytes(job);
    page.jobs.push_back(std::move(job));
  }
  s.Reset();
  for (Job& job : page.jobs) {
    if (absl::Status st = LoadArtifactsLocked(job); !st.ok()) return st;
  }
  return page;
}

absl::StatusOr<std::vector<Job>> JobStore::JobsInStates(const std::vector<JobState>& states) {
  absl::MutexLock lock(&mu_);
  std::vector<Job> jobs;
  if (states.empty()) return jobs;
  std::vector<std::string> numbers;
  for (JobState state : states) numbers.push_back(absl::StrCat(static_cast<int>(state)));
  absl::StatusOr<Statement*> select =
      StatementLocked(absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE state IN (",
                                   absl::StrJoin(numbers, ", "), ") ORDER BY seq"));
  if (!select.ok()) return select.status();
  while (true) {
    absl::StatusOr<bool> row = (*select)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    Job job;
    ReadJobRow(**select, job);
    jobs.push_back(std::move(job));
  }
  (*select)->Reset();
  return jobs;
}

absl::StatusOr<std::vector<JobEvent>> JobStore::AppendEventsLocked(const std::string& job_id,
                                                                   std::vector<JobEvent> events) {
  if (events.empty()) return events;
  absl::StatusOr<Statement*> last =
      StatementLocked("SELECT last_event_sequence FROM jobs WHERE id = ?");
  if (!last.ok()) return last.status();
  (*last)->BindText(1, job_id);
  absl::StatusOr<bool> row = (*last)->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  int64_t sequence = (*last)->ColumnInt(0);
  (*last)->Reset();
  absl::StatusOr<Statement*> insert = StatementLocked(
      "INSERT INTO events (job_id, sequence, attempt, time_us, kind, payload_json) "
      "VALUES (?, ?, ?, ?, ?, ?)");
  if (!insert.ok()) return insert.status();
  for (JobEvent& event : events) {
    event.job_id = job_id;
    event.sequence = ++sequence;
    Statement& s = **insert;
    s.Reset();
    s.BindText(1, job_id);
    s.BindInt(2, event.sequence);
    s.BindInt(3, event.attempt);
    s.BindInt(4, absl::ToUnixMicros(event.time));
    s.BindText(5, EventKindName(event.kind));
    s.BindText(6, event.payload_json);
    if (absl::Status st = s.Run(); !st.ok()) return st;
  }
  absl::StatusOr<Statement*> update =
      StatementLocked("UPDATE jobs SET last_event_sequence = ? WHERE id = ?");
  if (!update.ok()) return update.status();
  (*update)->BindInt(1, sequence);
  (*update)->BindText(2, job_id);
  if (absl::Status st = (*update)->Run(); !st.ok()) return st;
  return events;
}

absl::StatusOr<std::vector<JobEvent>> JobStore::Write(const std::string& job_id, const Job* job,
                                                      std::vector<JobEvent> events,
                                                      const Artifact* artifact,
                                                      const CompletionRecord* completion) {
  absl::MutexLock lock(&mu_);
  return InTransactionLocked([&]() -> absl::StatusOr<std::vector<JobEvent>> {
    if (job != nullptr) {
      absl::StatusOr<Statement*> update = StatementLocked(
          "UPDATE jobs SET state = ?, queue_us = ?, start_us = ?, end_us = ?, attempt_count = ?, "
          "current_phase = ?, error_code = ?, error_message = ?, report_json = ?, "
          "lease_owner = ?, attempt_lines = ? WHERE id = ?");
      if (!update.ok()) return update.status();
      Statement& s = **update;
      s.BindInt(1, static_cast<int>(job->state));
      s.BindInt(2, absl::ToUnixMicros(job->queue_time));
      s.BindOptionalInt(3, ToMicros(job->start_time));
      s.BindOptionalInt(4, ToMicros(job->end_time));
      s.BindInt(5, job->attempt_count);
      s.BindText(6, job->current_phase);
      s.BindText(7, job->error_code);
      s.BindText(8, job->error_message);
      s.BindText(9, job->report_json);
      s.BindText(10, job->lease_owner);
      s.BindInt(11, job->attempt_lines);
      s.BindText(12, job_id);
      if (absl::Status st = s.Run(); !st.ok()) return st;
      if (sqlite3_changes(db_) == 0) {
        return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
      }
    }
    if (artifact != nullptr) {
      absl::StatusOr<Statement*> put = StatementLocked(
          "INSERT OR REPLACE INTO artifacts (job_id, name, size_bytes, sha256) "
          "VALUES (?, ?, ?, ?)");
      if (!put.ok()) return put.status();
      (*put)->BindText(1, job_id);
      (*put)->BindText(2, artifact->name);
      (*put)->BindInt(3, artifact->size_bytes);
      (*put)->BindText(4, artifact->sha256);
      if (absl::Status st = (*put)->Run(); !st.ok()) return st;
    }
    if (completion != nullptr) {
      absl::StatusOr<Statement*> put = StatementLocked(
          "INSERT OR REPLACE INTO completions (job_id, attempt, worker_id, lease_id, "
          "result_digest, time_us) VALUES (?, ?, ?, ?, ?, ?)");
      if (!put.ok()) return put.status();
      (*put)->BindText(1, job_id);
      (*put)->BindInt(2, completion->attempt);
      (*put)->BindText(3, completion->worker_id);
      (*put)->BindText(4, completion->lease_id);
      (*put)->BindText(5, completion->result_digest);
      (*put)->BindInt(6, absl::ToUnixMicros(completion->time));
      if (absl::Status st = (*put)->Run(); !st.ok()) return st;
    }
    return AppendEventsLocked(job_id, std::move(events));
  });
}

absl::StatusOr<std::vector<CompletionRecord>> JobStore::CompletionsSince(absl::Time since) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> select = StatementLocked(
      "SELECT job_id, attempt, worker_id, lease_id, result_digest, time_us FROM completions "
      "WHERE time_us >= ? ORDER BY time_us, job_id");
  if (!select.ok()) return select.status();
  Statement& s = **select;
  s.BindInt(1, absl::ToUnixMicros(since));
  std::vector<CompletionRecord> completions;
  while (true) {
    absl::StatusOr<bool> row = s.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    CompletionRecord completion;
    completion.job_id = s.ColumnText(0);
    completion.attempt = static_cast<int>(s.ColumnInt(1));
    completion.worker_id = s.ColumnText(2);
    completion.lease_id = s.ColumnText(3);
    completion.result_digest = s.ColumnText(4);
    completion.time = absl::FromUnixMicros(s.ColumnInt(5));
    completions.push_back(std::move(completion));
  }
  s.Reset();
  return completions;
}

absl::Status JobStore::ForgetCompletionsBefore(absl::Time before) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> del = StatementLocked("DELETE FROM completions WHERE time_us < ?");
  if (!del.ok()) return del.status();
  (*del)->BindInt(1, absl::ToUnixMicros(before));
  return (*del)->Run();
}

absl::StatusOr<std::vector<JobEvent>> JobStore::ListEvents(const std::string& job_id,
                                                           int64_t after_sequence, int limit) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> select = StatementLocked(
      "SELECT sequence, attempt, time_us, kind, payload_json FROM events "
      "WHERE job_id = ? AND sequence > ? ORDER BY sequence LIMIT ?");
  if (!select.ok()) return select.status();
  Statement& s = **select;
  s.BindText(1, job_id);
  s.BindInt(2, after_sequence);
  s.BindInt(3, limit);
  std::vector<JobEvent> events;
  while (true) {
    absl::StatusOr<bool> row = s.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    JobEvent event;
    event.job_id = job_id;
    event.sequence = s.ColumnInt(0);
    event.attempt = static_cast<int>(s.ColumnInt(1));
    event.time = absl::FromUnixMicros(s.ColumnInt(2));
    event.kind = EventKindFromName(s.ColumnText(3)).value_or(EventKind::kLog);
    event.payload_json = s.ColumnText(4);
    events.push_back(std::move(event));
  }
  s.Reset();
  return events;
}

absl::Status JobStore::DeleteJob(const std::string& id) {
  absl::MutexLock lock(&mu_);
  return InTransactionLocked([&]() -> absl::Status {
    for (const char* sql :
         {"DELETE FROM events WHERE job_id = ?", "DELETE FROM artifacts WHERE job_id = ?",
          "DELETE FROM job_labels WHERE job_id = ?", "DELETE FROM completions WHERE job_id = ?",
          "DELETE FROM jobs WHERE id = ?"}) {
      absl::StatusOr<Statement*> del = StatementLocked(sql);
      if (!del.ok()) return del.status();
      (*del)->BindText(1, id);
      if (absl::Status s = (*del)->Run(); !s.ok()) return s;
    }
    if (sqlite3_changes(db_) == 0) {
      return absl::NotFoundError(absl::StrCat("job '", id, "' not found"));
    }
    return absl::OkStatus();
  });
}

absl::Status JobStore::AddBlobOwner(const std::string& tenant, const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> insert =
      StatementLocked("INSERT OR IGNORE INTO blob_owners (tenant, sha256) VALUES (?, ?)");
  if (!insert.ok()) return insert.status();
  (*insert)->BindText(1, tenant);
  (*insert)->BindText(2, sha256);
  return (*insert)->Run();
}

absl::StatusOr<bool> JobStore::IsBlobOwner(const std::string& tenant, const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> select =
      StatementLocked("SELECT 1 FROM blob_owners WHERE tenant = ? AND sha256 = ?");
  if (!select.ok()) return select.status();
  (*select)->BindText(1, tenant);
  (*select)->BindText(2, sha256);
  absl::StatusOr<bool> row = (*select)->Step();
  (*select)->Reset();
  return row;
}

absl::StatusOr<std::map<JobState, int64_t>> JobStore::CountByState() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> select =
      StatementLocked("SELECT state, COUNT(*) FROM jobs GROUP BY state");
  if (!select.ok()) return select.status();
  std::map<JobState, int64_t> counts;
  while (true) {
    absl::StatusOr<bool> row = (*select)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    counts[static_cast<JobState>((*select)->ColumnInt(0))] = (*select)->ColumnInt(1);
  }
  (*select)->Reset();
  return counts;
}

size_t JobStore::CachedStatements() {
  absl::MutexLock lock(&mu_);
  return statements_.size();
}

JobStore::WalCheckpoints JobStore::wal_checkpoints() {
  if (checkpointer_ == nullptr) return {};
  return {checkpointer_->background_checkpoints(), checkpointer_->inline_checkpoints()};
}

}  // namespace compress::server
