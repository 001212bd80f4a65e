#include "server/core/job_store.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/core/test_dir.h"

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

}  // namespace
}  // namespace compress::server
