#include "server/core/job_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/test_dir.h"

namespace compress::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open({dir_.File("jobs.db")});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  Job MakeJob(const std::string& id, std::map<std::string, std::string> labels = {},
              std::string request_id = "") {
    Job job;
    job.id = id;
    job.spec_json = R"({"dataset":{"format":"synthetic"}})";
    job.labels = std::move(labels);
    job.request_id = std::move(request_id);
    job.priority = 2;
    job.max_attempts = 3;
    job.create_time = absl::FromUnixSeconds(1000 + clock_++);
    job.queue_time = job.create_time;
    return job;
  }

  Job Create(const std::string& id, std::map<std::string, std::string> labels = {}) {
    absl::StatusOr<CreatedJob> created = store_->CreateJob(
        MakeJob(id, std::move(labels)), {StateChangeEvent(JobState::kQueued, "created", {})});
    EXPECT_TRUE(created.ok()) << created.status();
    return created->job;
  }

  std::vector<std::string> Ids(const std::vector<Job>& jobs) {
    std::vector<std::string> ids;
    for (const Job& job : jobs) ids.push_back(job.id);
    return ids;
  }

  TestDir dir_;
  std::unique_ptr<JobStore> store_;
  int clock_ = 0;
};

TEST_F(JobStoreTest, CreateAndGet) {
  Job created = Create("a", {{"team", "vision"}});
  EXPECT_EQ(created.last_event_sequence, 1);
  absl::StatusOr<Job> job = store_->GetJob("a");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->spec_json, R"({"dataset":{"format":"synthetic"}})");
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_EQ(job->labels.at("team"), "vision");
  EXPECT_EQ(job->priority, 2);
  EXPECT_EQ(job->max_attempts, 3);
  EXPECT_EQ(job->create_time, absl::FromUnixSeconds(1000));
  EXPECT_FALSE(job->start_time.has_value());
  absl::StatusOr<Job> missing = store_->GetJob("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope"));
}

TEST_F(JobStoreTest, DuplicateRequestIdReturnsTheFirstJob) {
  absl::StatusOr<CreatedJob> first = store_->CreateJob(MakeJob("a", {}, "req-1"), {});
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->created);
  absl::StatusOr<CreatedJob> second = store_->CreateJob(MakeJob("b", {}, "req-1"), {});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->created);
  EXPECT_EQ(second->job.id, "a");
  EXPECT_EQ(store_->GetJob("b").status().code(), absl::StatusCode::kNotFound);
  // Jobs without a request id never collide.
  EXPECT_TRUE(store_->CreateJob(MakeJob("c"), {})->created);
  EXPECT_TRUE(store_->CreateJob(MakeJob("d"), {})->created);
}

TEST_F(JobStoreTest, ListPagesAndFilters) {
  for (int i = 0; i < 7; ++i) {
    Create("j" + std::to_string(i), {{"team", i % 2 == 0 ? "vision" : "nlp"}});
  }
  Job running = *store_->GetJob("j2");
  running.state = JobState::kRunning;
  ASSERT_TRUE(store_->Write("j2", &running, {}).ok());

  absl::StatusOr<JobPage> page = store_->ListJobs({}, 3, 0);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(Ids(page->jobs), ElementsAre("j0", "j1", "j2"));
  ASSERT_GT(page->next_cursor, 0);
  page = store_->ListJobs({}, 3, page->next_cursor);
  EXPECT_THAT(Ids(page->jobs), ElementsAre("j3", "j4", "j5"));
  page = store_->ListJobs({}, 3, page->next_cursor);
  EXPECT_THAT(Ids(page->jobs), ElementsAre("j6"));
  EXPECT_EQ(page->next_cursor, 0);

  JobFilter vision;
  vision.labels["team"] = "vision";
  page = store_->ListJobs(vision, 10, 0);
  EXPECT_THAT(Ids(page->jobs), ElementsAre("j0", "j2", "j4", "j6"));
  vision.state = JobState::kQueued;
  page = store_->ListJobs(vision, 10, 0);
  EXPECT_THAT(Ids(page->jobs), ElementsAre("j0", "j4", "j6"));
  JobFilter none;
  none.labels["team"] = "audio";
  EXPECT_TRUE(store_->ListJobs(none, 10, 0)->jobs.empty());
}

// With a byte bound, a page ends after the job whose text reaches it (one job at least), and the
// cursor continues with the next job: every job is listed once.
TEST_F(JobStoreTest, ListPagesAreBoundedByTheJobsText) {
  const std::vector<int> report_kib = {10, 10, 10, 50, 3, 3, 3, 3, 20, 20};
  for (size_t i = 0; i < report_kib.size(); ++i) {
    Job job = Create(absl::StrCat("j", i));
    job.report_json = absl::StrCat(R"({"note":")", std::string(report_kib[i] * 1024, 'x'), R"("})");
    ASSERT_TRUE(store_->Write(job.id, &job, {}).ok());
  }
  const int64_t max_bytes = 25 * 1024;
  std::vector<std::vector<std::string>> pages;
  int64_t cursor = 0;
  do {
    absl::StatusOr<JobPage> page = store_->ListJobs({}, 100, cursor, max_bytes);
    ASSERT_TRUE(page.ok()) << page.status();
    ASSERT_FALSE(page->jobs.empty());
    pages.push_back(Ids(page->jobs));
    cursor = page->next_cursor;
    ASSERT_LE(pages.size(), report_kib.size());
  } while (cursor > 0);
  EXPECT_THAT(pages, ElementsAre(ElementsAre("j0", "j1", "j2"), ElementsAre("j3"),
                                 ElementsAre("j4", "j5", "j6", "j7", "j8"), ElementsAre("j9")));
  // Without a bound, page_size alone.
  EXPECT_EQ(store_->ListJobs({}, 100, 0)->jobs.size(), report_kib.size());
}

TEST_F(JobStoreTest, EventsAreSequencedWithoutGaps) {
  Create("a");
  Create("b");
  absl::StatusOr<std::vector<JobEvent>> appended =
      store_->Write("a", nullptr, {LogEvent(1, "info", "one", {}), LogEvent(1, "info", "two", {})});
  ASSERT_TRUE(appended.ok()) << appended.status();
  EXPECT_EQ((*appended)[0].sequence, 2);
  EXPECT_EQ((*appended)[1].sequence, 3);
  ASSERT_TRUE(store_->Write("b", nullptr, {LogEvent(1, "info", "b", {})}).ok());
  absl::StatusOr<std::vector<JobEvent>> events = store_->ListEvents("a", 0, 100);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 3u);
  for (size_t i = 0; i < events->size(); ++i) EXPECT_EQ((*events)[i].sequence, i + 1);
  EXPECT_EQ((*events)[0].kind, EventKind::kStateChange);
  EXPECT_EQ((*events)[2].payload_json, R"({"level":"info","message":"two"})");
  EXPECT_EQ((*events)[2].attempt, 1);
  events = store_->ListEvents("a", 1, 1);
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].sequence, 2);
  EXPECT_EQ(store_->GetJob("a")->last_event_sequence, 3);
  EXPECT_EQ(store_->GetJob("b")->last_event_sequence, 2);
  EXPECT_EQ(store_->Write("zz", nullptr, {LogEvent(1, "info", "x", {})}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(JobStoreTest, ReopenKeepsEverything) {
  Create("a", {{"k", "v"}});
  Job job = *store_->GetJob("a");
  job.state = JobState::kSucceeded;
  job.attempt_count = 2;
  job.start_time = absl::FromUnixSeconds(2000);
  job.end_time = absl::FromUnixSeconds(3000);
  job.current_phase = "distill";
  job.report_json = R"({"top1":0.9})";
  Artifact artifact{"model.safetensors", 42, std::string(64, 'a')};
  ASSERT_TRUE(
      store_->Write("a", &job, {ArtifactEvent(2, artifact, absl::FromUnixSeconds(2999))}, &artifact)
          .ok());
  Reopen();
  absl::StatusOr<Job> reread = store_->GetJob("a");
  ASSERT_TRUE(reread.ok()) << reread.status();
  EXPECT_EQ(reread->state, JobState::kSucceeded);
  EXPECT_EQ(reread->attempt_count, 2);
  EXPECT_EQ(reread->start_time, absl::FromUnixSeconds(2000));
  EXPECT_EQ(reread->end_time, absl::FromUnixSeconds(3000));
  EXPECT_EQ(reread->current_phase, "distill");
  EXPECT_EQ(reread->report_json, R"({"top1":0.9})");
  EXPECT_EQ(reread->labels.at("k"), "v");
  ASSERT_EQ(reread->artifacts.size(), 1u);
  EXPECT_EQ(reread->artifacts[0].name, "model.safetensors");
  EXPECT_EQ(reread->artifacts[0].size_bytes, 42);
  absl::StatusOr<std::vector<JobEvent>> events = store_->ListEvents("a", 0, 10);
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].kind, EventKind::kArtifact);
  EXPECT_EQ((*events)[1].time, absl::FromUnixSeconds(2999));
  // Sequences continue where they stopped.
  absl::StatusOr<std::vector<JobEvent>> more =
      store_->Write("a", nullptr, {LogEvent(0, "info", "after reopen", {})});
  EXPECT_EQ((*more)[0].sequence, 3);
  absl::StatusOr<std::map<JobState, int64_t>> counts = store_->CountByState();
  EXPECT_EQ(counts->at(JobState::kSucceeded), 1);
}

TEST_F(JobStoreTest, DeleteRemovesJobEventsAndArtifacts) {
  Create("a", {{"k", "v"}});
  Artifact artifact{"x", 1, std::string(64, 'b')};
  ASSERT_TRUE(store_->Write("a", nullptr, {}, &artifact).ok());
  ASSERT_TRUE(store_->DeleteJob("a").ok());
  EXPECT_EQ(store_->GetJob("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->ListEvents("a", 0, 10)->empty());
  JobFilter filter;
  filter.labels["k"] = "v";
  EXPECT_TRUE(store_->ListJobs(filter, 10, 0)->jobs.empty());
  EXPECT_EQ(store_->DeleteJob("a").code(), absl::StatusCode::kNotFound);
  // The id can be reused after deletion without meeting stale rows.
  Job again = Create("a");
  EXPECT_TRUE(again.artifacts.empty());
  EXPECT_EQ(again.last_event_sequence, 1);
}

// Completions are written with the job, survive a reopen, are listed from a time on oldest
// first, replaced per job, forgotten by age, and removed with their job.
TEST_F(JobStoreTest, CompletionsAreStoredWithTheirJob) {
  Create("a");
  Create("b");
  Job a = *store_->GetJob("a");
  a.state = JobState::kSucceeded;
  const CompletionRecord first{
      "a", 1, "w1", std::string(32, '1'), std::string(64, 'd'), absl::FromUnixSeconds(5000)};
  ASSERT_TRUE(store_->Write("a", &a, {}, nullptr, &first).ok());
  const CompletionRecord other{
      "b", 2, "w2", std::string(32, '2'), std::string(64, 'e'), absl::FromUnixSeconds(4000)};
  ASSERT_TRUE(store_->Write("b", nullptr, {}, nullptr, &other).ok());
  Reopen();
  EXPECT_EQ(store_->GetJob("a")->state, JobState::kSucceeded);
  absl::StatusOr<std::vector<CompletionRecord>> all =
      store_->CompletionsSince(absl::FromUnixSeconds(0));
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].job_id, "b");
  EXPECT_EQ((*all)[1].job_id, "a");
  EXPECT_EQ((*all)[1].attempt, 1);
  EXPECT_EQ((*all)[1].worker_id, "w1");
  EXPECT_EQ((*all)[1].lease_id, std::string(32, '1'));
  EXPECT_EQ((*all)[1].result_digest, std::string(64, 'd'));
  EXPECT_EQ((*all)[1].time, absl::FromUnixSeconds(5000));
  absl::StatusOr<std::vector<CompletionRecord>> recent =
      store_->CompletionsSince(absl::FromUnixSeconds(4500));
  ASSERT_EQ(recent->size(), 1u);
  EXPECT_EQ((*recent)[0].job_id, "a");

  // A later completion of the job replaces its earlier one.
  const CompletionRecord second{
      "a", 2, "w3", std::string(32, '3'), std::string(64, 'f'), absl::FromUnixSeconds(6000)};
  ASSERT_TRUE(store_->Write("a", nullptr, {}, nullptr, &second).ok());
  recent = store_->CompletionsSince(absl::FromUnixSeconds(4500));
  ASSERT_EQ(recent->size(), 1u);
  EXPECT_EQ((*recent)[0].attempt, 2);
  EXPECT_EQ((*recent)[0].worker_id, "w3");

  ASSERT_TRUE(store_->ForgetCompletionsBefore(absl::FromUnixSeconds(4500)).ok());
  EXPECT_EQ(store_->CompletionsSince(absl::FromUnixSeconds(0))->size(), 1u);
  ASSERT_TRUE(store_->DeleteJob("a").ok());
  EXPECT_TRUE(store_->CompletionsSince(absl::FromUnixSeconds(0))->empty());
  // A completion of a job that does not exist is not written.
  EXPECT_EQ(store_->Write("a", &a, {}, nullptr, &second).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->CompletionsSince(absl::FromUnixSeconds(0))->empty());
}

TEST_F(JobStoreTest, JobsInStates) {
  Create("a");
  Create("b");
  Job b = *store_->GetJob("b");
  b.state = JobState::kRunning;
  ASSERT_TRUE(store_->Write("b", &b, {}).ok());
  EXPECT_THAT(Ids(*store_->JobsInStates({JobState::kRunning})), ElementsAre("b"));
  EXPECT_THAT(Ids(*store_->JobsInStates({JobState::kRunning, JobState::kQueued})),
              ElementsAre("a", "b"));
}

TEST_F(JobStoreTest, TenantIsStoredAndFiltersLists) {
  Job a = MakeJob("a");
  a.tenant = "alpha";
  Job b = MakeJob("b");
  b.tenant = "beta";
  ASSERT_TRUE(store_->CreateJob(a, {}).ok());
  ASSERT_TRUE(store_->CreateJob(b, {}).ok());
  Reopen();
  EXPECT_EQ(store_->GetJob("a")->tenant, "alpha");
  JobFilter only_beta;
  only_beta.tenant = "beta";
  absl::StatusOr<JobPage> page = store_->ListJobs(only_beta, 10, 0);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->jobs.size(), 1u);
  EXPECT_EQ(page->jobs[0].id, "b");
  EXPECT_EQ(store_->ListJobs(JobFilter{}, 10, 0)->jobs.size(), 2u);
}

TEST_F(JobStoreTest, RequestIdsAreUniquePerTenant) {
  Job a = MakeJob("a", {}, "req-1");
  a.tenant = "alpha";
  Job b = MakeJob("b", {}, "req-1");
  b.tenant = "beta";
  Job again = MakeJob("c", {}, "req-1");
  again.tenant = "alpha";
  EXPECT_TRUE(store_->CreateJob(a, {})->created);
  absl::StatusOr<CreatedJob> other = store_->CreateJob(b, {});
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_TRUE(other->created) << "another tenant's request id must not return its job";
  absl::StatusOr<CreatedJob> repeat = store_->CreateJob(again, {});
  ASSERT_TRUE(repeat.ok()) << repeat.status();
  EXPECT_FALSE(repeat->created);
  EXPECT_EQ(repeat->job.id, "a");
}

TEST_F(JobStoreTest, QueuedLimitPerTenant) {
  for (const char* id : {"a1", "a2"}) {
    Job job = MakeJob(id, {}, std::string("r-") + id);
    job.tenant = "alpha";
    ASSERT_TRUE(store_->CreateJob(job, {}, /*max_queued_in_tenant=*/2).ok());
  }
  Job third = MakeJob("a3");
  third.tenant = "alpha";
  absl::StatusOr<CreatedJob> refused = store_->CreateJob(third, {}, 2);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("tenant 'alpha' has 2 queued jobs"));
  EXPECT_EQ(store_->GetJob("a3").status().code(), absl::StatusCode::kNotFound);
  // A retry of an accepted request still answers; another tenant is not limited by alpha.
  Job retry = MakeJob("a4", {}, "r-a1");
  retry.tenant = "alpha";
  EXPECT_EQ(store_->CreateJob(retry, {}, 2)->job.id, "a1");
  Job beta = MakeJob("b1");
  beta.tenant = "beta";
  EXPECT_TRUE(store_->CreateJob(beta, {}, 2).ok());
  // Once a job leaves the queue, there is room again.
  Job running = *store_->GetJob("a1");
  running.state = JobState::kRunning;
  ASSERT_TRUE(store_->Write("a1", &running, {}).ok());
  EXPECT_TRUE(store_->CreateJob(third, {}, 2).ok());
}

TEST_F(JobStoreTest, CreateJobsRefusesOneJobAndKeepsTheRestOfItsBatch) {
  auto job_of = [&](const std::string& id, const std::string& tenant,
                    const std::string& request_id = "") {
    Job job = MakeJob(id, {{"batch", "1"}}, request_id);
    job.tenant = tenant;
    return NewJob{job, {StateChangeEvent(JobState::kQueued, "created", {})}};
  };
  std::vector<NewJob> batch;
  batch.push_back(job_of("a1", "alpha", "req-1"));
  batch.push_back(job_of("a2", "alpha", "req-1"));  // the same request: a1 again
  batch.push_back(job_of("a3", "alpha"));
  batch.push_back(job_of("a4", "alpha"));  // over the quota of 2 queued
  batch.push_back(job_of("a1", "beta"));   // an id already taken: a constraint error
  batch.push_back(job_of("b1", "beta"));
  std::vector<absl::StatusOr<CreatedJob>> results =
      store_->CreateJobs(std::move(batch), /*max_queued_in_tenant=*/2);
  ASSERT_EQ(results.size(), 6u);
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  EXPECT_TRUE(results[0]->created);
  ASSERT_TRUE(results[1].ok()) << results[1].status();
  EXPECT_FALSE(results[1]->created);
  EXPECT_EQ(results[1]->job.id, "a1");
  ASSERT_TRUE(results[2].ok()) << results[2].status();
  EXPECT_TRUE(results[2]->created);
  EXPECT_EQ(results[3].status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(results[4].ok());
  EXPECT_NE(results[4].status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(results[5].ok()) << results[5].status();
  EXPECT_TRUE(results[5]->created);
  EXPECT_EQ(results[5]->job.last_event_sequence, 1);

  // What was refused left nothing behind; the rest is stored (after a reopen: committed).
  Reopen();
  JobFilter filter;
  absl::StatusOr<JobPage> page = store_->ListJobs(filter, 100, 0);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(Ids(page->jobs), ElementsAre("a1", "a3", "b1"));
  EXPECT_EQ(store_->GetJob("a1")->tenant, "alpha");
  for (const char* id : {"a1", "a3", "b1"}) {
    EXPECT_EQ(store_->ListEvents(id, 0, 10)->size(), 1u) << id;
  }
  EXPECT_EQ(store_->ListEvents("a4", 0, 10)->size(), 0u);
}

// Checkpoints run on the checkpointer's thread, not in the commits, and keep the WAL short:
// 4,000 jobs would leave a far longer log without checkpoints.
TEST_F(JobStoreTest, WalIsCheckpointedInTheBackground) {
  store_.reset();
  JobStore::Options options;
  options.path = dir_.File("wal.db");
  options.synchronous_full = false;
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  int64_t largest_wal = 0;
  for (int i = 0; i < 4000; ++i) {
    Job job = MakeJob(absl::StrCat("j", i), {{"batch", "wal"}});
    ASSERT_TRUE(
        (*store)->CreateJob(job, {StateChangeEvent(JobState::kQueued, "created", {})}).ok());
    if (i % 100 == 99) {
      largest_wal =
          std::max<int64_t>(largest_wal, std::filesystem::file_size(options.path + "-wal"));
      absl::SleepFor(absl::Milliseconds(5));  // room for the checkpointer's thread
    }
  }
  // The log starts over after each checkpoint: it stays near the 1,000 pages (4 MiB) that wake
  // the checkpointer, and, should a loaded machine hold its thread back, below the 8,000 pages
  // (31.25 MiB) where commits checkpoint themselves. 4,000 jobs without checkpoints leave a far
  // longer log.
  EXPECT_LT(largest_wal, 34 << 20);
  EXPECT_GT((*store)->wal_checkpoints().background, 0);
  // Everything is there after a reopen.
  store->reset();
  store = JobStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->CountByState()->at(JobState::kQueued), 4000);
}

TEST_F(JobStoreTest, BlobOwners) {
  const std::string sha(64, 'a');
  EXPECT_FALSE(*store_->IsBlobOwner("alpha", sha));
  ASSERT_TRUE(store_->AddBlobOwner("alpha", sha).ok());
  ASSERT_TRUE(store_->AddBlobOwner("alpha", sha).ok());
  Reopen();
  EXPECT_TRUE(*store_->IsBlobOwner("alpha", sha));
  EXPECT_FALSE(*store_->IsBlobOwner("beta", sha));
}

// A database written by schema version 1 (no tenants, request ids unique across the table).
TEST(JobStoreMigrationTest, MigratesVersion1) {
  TestDir dir;
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.File("jobs.db").c_str(), &db), SQLITE_OK);
  const char* v1 = R"sql(
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, spec_json TEXT NOT NULL,
  state INTEGER NOT NULL, labels_json TEXT NOT NULL, priority INTEGER NOT NULL,
  request_id TEXT UNIQUE, create_us INTEGER NOT NULL, queue_us INTEGER NOT NULL,
  start_us INTEGER, end_us INTEGER, attempt_count INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL, current_phase TEXT NOT NULL, error_code TEXT NOT NULL,
  error_message TEXT NOT NULL, report_json TEXT NOT NULL, lease_owner TEXT NOT NULL,
  last_event_sequence INTEGER NOT NULL);
CREATE INDEX jobs_by_state ON jobs (state, seq);
CREATE TABLE job_labels (job_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (job_id, key)) WITHOUT ROWID;
CREATE TABLE events (job_id TEXT NOT NULL, sequence INTEGER NOT NULL, attempt INTEGER NOT NULL,
  time_us INTEGER NOT NULL, kind TEXT NOT NULL, payload_json TEXT NOT NULL,
  PRIMARY KEY (job_id, sequence)) WITHOUT ROWID;
CREATE TABLE artifacts (job_id TEXT NOT NULL, name TEXT NOT NULL, size_bytes INTEGER NOT NULL,
  sha256 TEXT NOT NULL, PRIMARY KEY (job_id, name)) WITHOUT ROWID;
INSERT INTO jobs VALUES (7, 'old', '{}', 4, '{}', 1, 'req-old', 1000, 1000, 1500, 2000, 1, 3,
  '', '', '', '{}', '', 2);
INSERT INTO events VALUES ('old', 1, 0, 1000, 'log', '{}');
INSERT INTO events VALUES ('old', 2, 1, 2000, 'log', '{}');
)sql";
  ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open({dir.File("jobs.db")});
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<Job> old = (*store)->GetJob("old");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->tenant, "");
  EXPECT_EQ(old->request_id, "req-old");
  EXPECT_EQ(old->state, JobState::kSucceeded);
  EXPECT_EQ(old->last_event_sequence, 2);
  EXPECT_EQ(old->attempt_lines, 0);
  EXPECT_EQ((*store)->ListEvents("old", 0, 10)->size(), 2u);
  // New jobs follow the old ones, and the request id is now unique per tenant.
  Job job;
  job.id = "new";
  job.spec_json = "{}";
  job.tenant = "alpha";
  job.request_id = "req-old";
  absl::StatusOr<CreatedJob> created = (*store)->CreateJob(job, {});
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created);
  absl::StatusOr<JobPage> page = (*store)->ListJobs(JobFilter{}, 10, 0);
  ASSERT_EQ(page->jobs.size(), 2u);
  EXPECT_EQ(page->jobs[0].id, "old");
  EXPECT_EQ(page->jobs[1].id, "new");
  store->reset();
  // Opening it again finds the current version and changes nothing.
  store = JobStore::Open({dir.File("jobs.db")});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->GetJob("new")->tenant, "alpha");
}

// The schema version in the database file.
int64_t SchemaVersion(const std::string& path) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* select = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, "SELECT MAX(version) FROM schema_version", -1, &select, nullptr),
            SQLITE_OK);
  int64_t version = -1;
  if (sqlite3_step(select) == SQLITE_ROW) version = sqlite3_column_int64(select, 0);
  sqlite3_finalize(select);
  sqlite3_close(db);
  return version;
}

// A database of schema version 3 (no completions table) opens with its jobs and records
// completions from then on; a database of a version after this compressd's is refused.
TEST(JobStoreMigrationTest, MigratesVersion3) {
  TestDir dir;
  const std::string path = dir.File("jobs.db");
  {
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open({path});
    ASSERT_TRUE(store.ok()) << store.status();
    Job job;
    job.id = "old";
    job.spec_json = "{}";
    ASSERT_TRUE(
        (*store)->CreateJob(job, {StateChangeEvent(JobState::kQueued, "created", {})}).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP TABLE completions; DELETE FROM schema_version; "
                         "INSERT INTO schema_version VALUES (3);",
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
  ASSERT_EQ(SchemaVersion(path), 3);

  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open({path});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(SchemaVersion(path), 4);
  ASSERT_TRUE((*store)->GetJob("old").ok());
  EXPECT_EQ((*store)->ListEvents("old", 0, 10)->size(), 1u);
  EXPECT_TRUE((*store)->CompletionsSince(absl::FromUnixSeconds(0))->empty());
  const CompletionRecord completion{
      "old", 1, "w1", "", std::string(64, 'd'), absl::FromUnixSeconds(5000)};
  ASSERT_TRUE((*store)->Write("old", nullptr, {}, nullptr, &completion).ok());
  store->reset();
  store = JobStore::Open({path});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->CompletionsSince(absl::FromUnixSeconds(0))->size(), 1u);
  store->reset();

  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE schema_version SET version = 5", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  store = JobStore::Open({path});
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("schema version 5 is newer"));
}

// A filter of more labels than a job may have is INVALID_ARGUMENT (SQLite would refuse the query
// as too deep: INTERNAL), and filters of many shapes leave only a few statements cached.
TEST_F(JobStoreTest, LongLabelFiltersAreRefusedOrNotCached) {
  std::map<std::string, std::string> labels;
  for (int i = 0; i < kMaxLabels; ++i) labels[absl::StrCat("k", i)] = "v";
  Create("all", labels);
  Create("none");
  JobFilter filter;
  for (int i = 0; i < 1000; ++i) filter.labels[absl::StrCat("k", i)] = "v";
  absl::StatusOr<JobPage> page = store_->ListJobs(filter, 10, 0);
  EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(page.status().message(), HasSubstr(absl::StrCat("at most ", kMaxLabels, " labels")));

  const size_t cached = store_->CachedStatements();
  for (int count = 1; count <= kMaxLabels; ++count) {
    JobFilter some;
    for (int i = 0; i < count; ++i) some.labels[absl::StrCat("k", i)] = "v";
    page = store_->ListJobs(some, 10, 0);
    ASSERT_TRUE(page.ok()) << count << ": " << page.status();
    ASSERT_EQ(page->jobs.size(), 1u) << count;
    EXPECT_EQ(page->jobs[0].id, "all");
  }
  EXPECT_LE(store_->CachedStatements(), cached + 8);
}

}  // namespace
}  // namespace compress::server
