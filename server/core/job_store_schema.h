// The SQL of JobStore's database: the current schema and the migrations from older versions.
// Only job_store.cc includes it.
#ifndef COMPRESS_SERVER_CORE_JOB_STORE_SCHEMA_H_
#define COMPRESS_SERVER_CORE_JOB_STORE_SCHEMA_H_

namespace compress::server::job_store_schema {

// 1: the first schema. 2: jobs.tenant, and request ids unique per tenant (not globally).
// 3: jobs.attempt_lines, the executor event lines of the current attempt stored.
// 4: table completions, each job's last attempt completion (Scheduler::CompleteAttempt), so that
// a completion repeated after a restart is still recognised.
inline constexpr int kSchemaVersion = 4;

inline constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL DEFAULT '',
  spec_json TEXT NOT NULL,
  state INTEGER NOT NULL,
  labels_json TEXT NOT NULL,
  priority INTEGER NOT NULL,
  request_id TEXT,
  create_us INTEGER NOT NULL,
  queue_us INTEGER NOT NULL,
  start_us INTEGER,
  end_us INTEGER,
  attempt_count INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  current_phase TEXT NOT NULL,
  error_code TEXT NOT NULL,
  error_message TEXT NOT NULL,
  report_json TEXT NOT NULL,
  lease_owner TEXT NOT NULL,
  last_event_sequence INTEGER NOT NULL,
  attempt_lines INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, state, seq);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_request_id ON jobs (tenant, request_id);
CREATE TABLE IF NOT EXISTS job_labels (
  job_id TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (job_id, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_labels_by_value ON job_labels (key, value);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  time_us INTEGER NOT NULL,
  kind TEXT NOT NULL,
  payload_json TEXT NOT NULL,
  PRIMARY KEY (job_id, sequence)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts (
  job_id TEXT NOT NULL,
  name TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  PRIMARY KEY (job_id, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_owners (
  tenant TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  PRIMARY KEY (tenant, sha256)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS completions (
  job_id TEXT NOT NULL PRIMARY KEY,
  attempt INTEGER NOT NULL,
  worker_id TEXT NOT NULL,
  lease_id TEXT NOT NULL,
  result_digest TEXT NOT NULL,
  time_us INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS completions_by_time ON completions (time_us);
)sql";

// Version 1 -> 2: SQLite cannot drop the column constraint `request_id TEXT UNIQUE`, so the jobs
// table is rebuilt (https://www.sqlite.org/lang_altertable.html, "other kinds of table schema
// changes"); jobs of version 1 get the empty tenant. kSchema then adds the new indexes.
inline constexpr char kMigrateV1ToV2[] = R"sql(
CREATE TABLE jobs_v2 (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL DEFAULT '',
  spec_json TEXT NOT NULL,
  state INTEGER NOT NULL,
  labels_json TEXT NOT NULL,
  priority INTEGER NOT NULL,
  request_id TEXT,
  create_us INTEGER NOT NULL,
  queue_us INTEGER NOT NULL,
  start_us INTEGER,
  end_us INTEGER,
  attempt_count INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  current_phase TEXT NOT NULL,
  error_code TEXT NOT NULL,
  error_message TEXT NOT NULL,
  report_json TEXT NOT NULL,
  lease_owner TEXT NOT NULL,
  last_event_sequence INTEGER NOT NULL);
INSERT INTO jobs_v2 (seq, id, tenant, spec_json, state, labels_json, priority, request_id,
  create_us, queue_us, start_us, end_us, attempt_count, max_attempts, current_phase, error_code,
  error_message, report_json, lease_owner, last_event_sequence)
  SELECT seq, id, '', spec_json, state, labels_json, priority, request_id, create_us, queue_us,
  start_us, end_us, attempt_count, max_attempts, current_phase, error_code, error_message,
  report_json, lease_owner, last_event_sequence FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v2 RENAME TO jobs;
)sql";

// Version 2 -> 3 (after 1 -> 2 for a database of version 1).
inline constexpr char kMigrateV2ToV3[] = R"sql(
ALTER TABLE jobs ADD COLUMN attempt_lines INTEGER NOT NULL DEFAULT 0;
)sql";

// Version 3 -> 4 only adds the table completions and its index, which kSchema creates: no
// statement of its own. Jobs of older versions have no completion recorded.

}  // namespace compress::server::job_store_schema

#endif  // COMPRESS_SERVER_CORE_JOB_STORE_SCHEMA_H_
