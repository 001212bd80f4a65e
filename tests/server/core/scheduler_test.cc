#include "server/core/scheduler.h"

#include <sqlite3.h>

#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "server/core/executor_events.h"
#include "server/core/metrics.h"
#include "tests/common/test_dir.h"
#include "worker/events/event.h"

namespace compress::server {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kLease = absl::Seconds(30);

// Log lines "line N" numbered from `from` to `to`.
std::vector<std::string> NumberedLines(int from, int to) {
  std::vector<std::string> lines;
  for (int i = from; i <= to; ++i) {
    lines.push_back(events::Serialize(events::Log("info", absl::StrCat("line ", i))));
  }
  return lines;
}

// A successful attempt's result carrying the executor's report `report_json` (none when empty).
AttemptResult Success(std::string report_json = "") {
  AttemptResult result;
  result.outcome = AttemptResult::Outcome::kSucceeded;
  result.report_json = std::move(report_json);
  return result;
}

// A failed attempt's result that another attempt may succeed, with no further details.
AttemptResult RetryableFailure() {
  AttemptResult result;
  result.outcome = AttemptResult::Outcome::kFailed;
  result.retryable = true;
  return result;
}

// An executor killed by SIGKILL: a retryable INTERNAL failure with its exit status and stderr.
AttemptResult Crash() {
  AttemptResult result = RetryableFailure();
  result.error_code = "INTERNAL";
  result.error_message = "executor killed by signal 9";
  result.exit_status = 137;
  result.stderr_tail = "Killed";
  return result;
}

// Makes the store's updates of job rows fail, as a full disk would, while failing: a trigger
// added through a connection of its own aborts them.
class FailingJobWrites {
 public:
  explicit FailingJobWrites(const std::string& db_path) {
    EXPECT_EQ(sqlite3_open(db_path.c_str(), &db_), SQLITE_OK);
    Exec(
        "CREATE TABLE IF NOT EXISTS fail_writes (on_off INTEGER);"
        "CREATE TRIGGER IF NOT EXISTS fail_job_writes BEFORE UPDATE ON jobs "
        "WHEN EXISTS (SELECT 1 FROM fail_writes) "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;");
  }
  ~FailingJobWrites() { sqlite3_close(db_); }

  void Start() { Exec("INSERT INTO fail_writes VALUES (1)"); }
  void Stop() { Exec("DELETE FROM fail_writes"); }

 private:
  void Exec(const char* sql) {
    EXPECT_EQ(sqlite3_exec(db_, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db_);
  }

  sqlite3* db_ = nullptr;
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    OpenStore();
    StartScheduler();
  }

  void OpenStore() {
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open({dir_.File("jobs.db")});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  void StartScheduler(int max_attempts = 3) {
    Scheduler::Options options;
    options.lease_duration = kLease;
    options.default_max_attempts = max_attempts;
    options.clock = &clock_;
    options.observer = &metrics_;
    absl::StatusOr<std::unique_ptr<Scheduler>> scheduler = Scheduler::Create(store_.get(), options);
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    scheduler_ = *std::move(scheduler);
  }

  // A scheduler with `options` on the fixture's store and clock reporting to `observer`; null on
  // failure.
  std::unique_ptr<Scheduler> StartObserved(SchedulerObserver* observer,
                                           Scheduler::Options options = {}) {
    options.clock = &clock_;
    options.observer = observer;
    absl::StatusOr<std::unique_ptr<Scheduler>> scheduler = Scheduler::Create(store_.get(), options);
    EXPECT_TRUE(scheduler.ok()) << scheduler.status();
    return scheduler.ok() ? *std::move(scheduler) : nullptr;
  }

  // Simulates a restart: the scheduler and the store go away and come back from disk.
  void Restart() {
    scheduler_.reset();
    store_.reset();
    OpenStore();
    StartScheduler();
  }

  std::string Create(int priority = 0, int max_attempts = 0, const std::string& spec = "{}") {
    JobRequest request;
    request.spec_json = spec;
    request.priority = priority;
    request.max_attempts = max_attempts;
    absl::StatusOr<CreatedJob> created = scheduler_->CreateJob(request);
    EXPECT_TRUE(created.ok()) << created.status();
    clock_.Advance(absl::Milliseconds(1));
    return created->job.id;
  }

  Lease LeaseOne(const std::string& worker = "w1") {
    absl::StatusOr<std::optional<Lease>> lease = scheduler_->LeaseNext(worker, "cpu");
    EXPECT_TRUE(lease.ok()) << lease.status();
    EXPECT_TRUE(lease->has_value());
    return lease->value_or(Lease{});
  }

  // A job whose spec asks for `device` ("cpu", "cuda", "auto", ...).
  std::string CreateNeeding(const std::string& device, int priority = 0) {
    return Create(priority, 0, absl::StrCat(R"({"resources":{"device":")", device, R"("}})"));
  }

  // The id of the job leased for `device`, or "" when none was.
  std::string LeaseFor(const std::string& device, const std::string& worker = "w1") {
    absl::StatusOr<std::optional<Lease>> lease = scheduler_->LeaseNext(worker, device);
    EXPECT_TRUE(lease.ok()) << lease.status();
    if (!lease.ok() || !lease->has_value()) return "";
    return (*lease)->job_id;
  }

  // Parks a lease waiter of `worker` for `device`. The returned slot holds its answer once given:
  // the leased job's id, "" for no lease, or the error. Shared with the callback, so that a waiter
  // answered after the test body (at shutdown) writes to live memory.
  std::shared_ptr<std::optional<std::string>> Wait(const std::string& worker,
                                                   const std::string& device) {
    auto slot = std::make_shared<std::optional<std::string>>();
    scheduler_->WaitForLease(worker, device, clock_.Now() + absl::Seconds(10),
                             [slot](absl::StatusOr<std::optional<Lease>> lease) {
                               if (!lease.ok()) {
                                 *slot = absl::StrCat("error: ", lease.status().ToString());
                               } else {
                                 *slot = lease->has_value() ? (*lease)->job_id : "";
                               }
                             });
    return slot;
  }

  Job Get(const std::string& id) {
    absl::StatusOr<Job> job = store_->GetJob(id);
    EXPECT_TRUE(job.ok()) << job.status();
    return *job;
  }

  std::vector<JobEvent> Events(const std::string& id) { return *store_->ListEvents(id, 0, 1000); }

  // Every call of attempt `attempt` of job `id` by `stale` (a holder whose lease was handed back
  // and given again) is ABORTED, saying so, and changes nothing.
  void ExpectFencedOff(const std::string& id, int attempt, const LeaseHolder& stale) {
    const Job before = Get(id);
    const size_t events_before = Events(id).size();
    absl::StatusOr<bool> heartbeat = scheduler_->Heartbeat(id, attempt, stale);
    EXPECT_EQ(heartbeat.status().code(), absl::StatusCode::kAborted);
    EXPECT_THAT(heartbeat.status().message(),
                HasSubstr(absl::StrCat("job ", id, " attempt ", attempt, " is no longer current")));
    EXPECT_THAT(heartbeat.status().message(),
                HasSubstr("was handed back and the attempt given again"));
    EXPECT_EQ(scheduler_->ReportEvents(id, attempt, stale, NumberedLines(1, 1), 1).status().code(),
              absl::StatusCode::kAborted);
    EXPECT_EQ(scheduler_->CheckAttempt(id, attempt, stale).code(), absl::StatusCode::kAborted);
    bool placed = false;
    auto place = [&placed] {
      placed = true;
      return absl::OkStatus();
    };
    EXPECT_EQ(scheduler_->RecordArtifact(id, attempt, stale, {"stale.bin", 1, ""}, place).code(),
              absl::StatusCode::kAborted);
    EXPECT_FALSE(placed);
    EXPECT_EQ(scheduler_->CompleteAttempt(id, attempt, stale, Success(R"({"stale":true})")).code(),
              absl::StatusCode::kAborted);
    EXPECT_EQ(scheduler_->ReturnLease(id, attempt, stale).code(), absl::StatusCode::kAborted);
    const Job after = Get(id);
    EXPECT_EQ(after.state, JobState::kRunning);
    EXPECT_EQ(after.attempt_count, before.attempt_count);
    EXPECT_EQ(after.attempt_lines, before.attempt_lines);
    EXPECT_EQ(after.report_json, before.report_json);
    EXPECT_EQ(after.artifacts.size(), before.artifacts.size());
    EXPECT_EQ(Events(id).size(), events_before);
  }

  // The calls of `holder`, which holds attempt `attempt` of job `id`, work: a heartbeat, an event,
  // an artifact, and (when `complete`) the attempt's success.
  void ExpectHolds(const std::string& id, int attempt, const LeaseHolder& holder,
                   bool complete = false) {
    EXPECT_TRUE(scheduler_->Heartbeat(id, attempt, holder).ok());
    EXPECT_TRUE(scheduler_->CheckAttempt(id, attempt, holder).ok());
    const size_t events_before = Events(id).size();
    EXPECT_TRUE(scheduler_->ReportEvents(id, attempt, holder, NumberedLines(1, 1)).ok());
    EXPECT_EQ(Events(id).size(), events_before + 1);
    EXPECT_TRUE(scheduler_->RecordArtifact(id, attempt, holder, {"model.bin", 1, ""}).ok());
    if (!complete) return;
    EXPECT_TRUE(scheduler_->CompleteAttempt(id, attempt, holder, Success()).ok());
    EXPECT_EQ(Get(id).state, JobState::kSucceeded);
  }

  // Once `holder`'s completion `recorded` of attempt `attempt` of job `id` was recorded, every
  // other completion is ABORTED: one that says something else (a failure; a report other than
  // `recorded`'s, which must not be {"top1":0.5}), and one of another lease, worker or attempt.
  void ExpectOtherCompletionsAborted(const std::string& id, int attempt, const LeaseHolder& holder,
                                     const AttemptResult& recorded) {
    AttemptResult failure;
    failure.outcome = AttemptResult::Outcome::kFailed;
    failure.error_code = "INTERNAL";
    EXPECT_EQ(scheduler_->CompleteAttempt(id, attempt, holder, failure).code(),
              absl::StatusCode::kAborted);
    AttemptResult other_report = recorded;
    other_report.report_json = R"({"top1":0.5})";
    EXPECT_EQ(scheduler_->CompleteAttempt(id, attempt, holder, other_report).code(),
              absl::StatusCode::kAborted);
    const LeaseHolder other_lease{holder.worker_id, std::string(32, '0')};
    EXPECT_EQ(scheduler_->CompleteAttempt(id, attempt, other_lease, recorded).code(),
              absl::StatusCode::kAborted);
    const LeaseHolder other_worker{holder.worker_id + "-other", holder.lease_id};
    EXPECT_EQ(scheduler_->CompleteAttempt(id, attempt, other_worker, recorded).code(),
              absl::StatusCode::kAborted);
    EXPECT_EQ(scheduler_->CompleteAttempt(id, attempt + 1, holder, recorded).code(),
              absl::StatusCode::kAborted);
  }

  double MetricValue(const std::string& name, const std::string& state = "") {
    for (const auto& family : metrics_.registry()->Collect()) {
      if (family.name != name) continue;
      for (const auto& metric : family.metric) {
        bool match = state.empty();
        for (const auto& label : metric.label) match = match || label.value == state;
        if (!match) continue;
        if (family.type == prometheus::MetricType::Counter) return metric.counter.value;
        if (family.type == prometheus::MetricType::Gauge) return metric.gauge.value;
        if (family.type == prometheus::MetricType::Histogram) {
          return static_cast<double>(metric.histogram.sample_count);
        }
      }
    }
    return -1;
  }

  // The sum of the samples of the histogram `name`; -1 when there is none.
  double HistogramSum(const std::string& name) {
    for (const auto& family : metrics_.registry()->Collect()) {
      if (family.name != name || family.type != prometheus::MetricType::Histogram) continue;
      for (const auto& metric : family.metric) return metric.histogram.sample_sum;
    }
    return -1;
  }

  TestDir dir_;
  ManualClock clock_;
  Metrics metrics_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<Scheduler> scheduler_;
};

// compressd fills Options from --lease_seconds and --max_attempts: a bad value is refused naming
// the flag, and --max_attempts has the bound of a request's max_attempts.
TEST_F(SchedulerTest, BadOptionsNameTheirFlags) {
  auto refusal = [this](const Scheduler::Options& options) {
    absl::StatusOr<std::unique_ptr<Scheduler>> scheduler = Scheduler::Create(store_.get(), options);
    EXPECT_EQ(scheduler.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(scheduler.status().message());
  };
  Scheduler::Options options;
  options.lease_duration = absl::ZeroDuration();
  EXPECT_EQ(refusal(options), "--lease_seconds: must be positive, got 0");
  options.lease_duration = absl::Seconds(-5);
  EXPECT_EQ(refusal(options), "--lease_seconds: must be positive, got -5");

  options = {};
  options.default_max_attempts = 0;
  EXPECT_EQ(refusal(options), "--max_attempts: must be in [1, 100], got 0");
  options.default_max_attempts = Scheduler::kMaxAttemptsLimit + 1;
  EXPECT_EQ(refusal(options), "--max_attempts: must be in [1, 100], got 101");

  options.default_max_attempts = Scheduler::kMaxAttemptsLimit;
  EXPECT_TRUE(Scheduler::Create(store_.get(), options).ok());
}

TEST_F(SchedulerTest, LeasesByPriorityThenInOrderOfCreation) {
  std::string a = Create(0), b = Create(5), c = Create(0), d = Create(5), e = Create(-1);
  EXPECT_EQ(LeaseOne().job_id, b);
  EXPECT_EQ(LeaseOne().job_id, d);
  EXPECT_EQ(LeaseOne().job_id, a);
  EXPECT_EQ(LeaseOne().job_id, c);
  EXPECT_EQ(LeaseOne().job_id, e);
  absl::StatusOr<std::optional<Lease>> none = scheduler_->LeaseNext("w1", "cpu");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

// Jobs created in the same instant (as the jobs of one transaction are) lease in creation order.
TEST_F(SchedulerTest, JobsCreatedInOneInstantLeaseInCreationOrder) {
  std::vector<std::string> created;
  for (int i = 0; i < 8; ++i) {
    JobRequest request;
    request.spec_json = "{}";
    absl::StatusOr<CreatedJob> job = scheduler_->CreateJob(request);
    ASSERT_TRUE(job.ok()) << job.status();
    created.push_back(job->job.id);
  }
  std::vector<Lease> leases;
  std::vector<std::string> leased;
  for (int i = 0; i < 8; ++i) {
    leases.push_back(LeaseOne());
    leased.push_back(leases.back().job_id);
  }
  EXPECT_EQ(leased, created);
  // The order survives a restart (the queue is rebuilt from the store).
  for (const Lease& lease : leases) {
    ASSERT_TRUE(scheduler_->ReturnLease(lease.job_id, lease.attempt, {"w1"}).ok());
  }
  Restart();
  leased.clear();
  for (int i = 0; i < 8; ++i) leased.push_back(LeaseOne().job_id);
  EXPECT_EQ(leased, created);
}

TEST_F(SchedulerTest, LeaseStartsAnAttempt) {
  std::string id = Create();
  clock_.Advance(absl::Seconds(4));
  Lease lease = LeaseOne("w1");
  EXPECT_EQ(lease.attempt, 1);
  EXPECT_EQ(lease.spec_json, "{}");
  EXPECT_EQ(lease.lease_duration, kLease);
  Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kRunning);
  EXPECT_EQ(job.attempt_count, 1);
  EXPECT_EQ(job.lease_owner, "w1");
  EXPECT_EQ(job.start_time, clock_.Now());
  EXPECT_EQ(lease.last_event_sequence, job.last_event_sequence);
  EXPECT_EQ(MetricValue("compressd_job_queue_wait_seconds"), 1);
  EXPECT_EQ(MetricValue("compressd_jobs", "RUNNING"), 1);
  EXPECT_EQ(MetricValue("compressd_jobs", "QUEUED"), 0);
  EXPECT_EQ(MetricValue("compressd_workers_connected"), 1);
}

TEST_F(SchedulerTest, ExpiredLeaseRequeuesKeepingTheAttemptCount) {
  std::string id = Create();
  LeaseOne("w1");
  clock_.Advance(kLease - absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  EXPECT_EQ(Get(id).state, JobState::kRunning);
  clock_.Advance(absl::Seconds(2));
  scheduler_->ProcessTimeouts();
  Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.attempt_count, 1);
  EXPECT_THAT(job.error_message, HasSubstr("worker w1 lost: lease expired"));
  Lease second = LeaseOne("w2");
  EXPECT_EQ(second.attempt, 2);
  EXPECT_EQ(Get(id).attempt_count, 2);
}

TEST_F(SchedulerTest, HeartbeatsRenewTheLease) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(absl::Seconds(20));
    absl::StatusOr<bool> cancel = scheduler_->Heartbeat(id, lease.attempt, {"w1"});
    ASSERT_TRUE(cancel.ok()) << cancel.status();
    EXPECT_FALSE(*cancel);
    scheduler_->ProcessTimeouts();
  }
  EXPECT_EQ(Get(id).state, JobState::kRunning);
}

// Leases, long polls and the workers gauge run on the monotonic clock: the wall clock set
// forward by hours (an NTP step, a VM resumed) expires nothing, and set back keeps nothing alive.
// Stored timestamps follow the wall clock.
TEST_F(SchedulerTest, WallClockStepsNeitherExpireNorKeepLeases) {
  std::string id = Create();  // the clock moves by 1 ms
  clock_.StepWallClock(absl::Hours(5));
  clock_.Advance(absl::Seconds(2));
  Lease lease = LeaseOne("w1");
  EXPECT_DOUBLE_EQ(HistogramSum("compressd_job_queue_wait_seconds"), 2.001);
  const LeaseHolder holder{"w1", lease.lease_id};
  std::shared_ptr<std::optional<std::string>> waiter = Wait("w2", "cpu");  // waits 10 s

  clock_.StepWallClock(absl::Hours(5));
  scheduler_->ProcessTimeouts();
  Job running = Get(id);
  EXPECT_EQ(running.state, JobState::kRunning);
  EXPECT_EQ(running.lease_owner, "w1");
  EXPECT_EQ(running.attempt_count, 1);
  EXPECT_FALSE(waiter->has_value());
  EXPECT_EQ(scheduler_->WorkersConnected(), 2);
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(kLease - absl::Seconds(1));
    ASSERT_TRUE(scheduler_->Heartbeat(id, lease.attempt, holder).ok());
    scheduler_->ProcessTimeouts();
    EXPECT_EQ(Get(id).state, JobState::kRunning);
  }
  // The waiter's 10 s passed on the monotonic clock.
  EXPECT_EQ(*waiter, std::optional<std::string>(""));

  // Set back: a worker that stops heartbeating still loses its lease after kLease.
  clock_.StepWallClock(-absl::Hours(10));
  clock_.Advance(kLease + absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.attempt_count, 1);
  EXPECT_THAT(job.error_message, HasSubstr("worker w1 lost: lease expired"));
  EXPECT_EQ(job.queue_time, clock_.Now());
  EXPECT_EQ(scheduler_->WorkersConnected(), 0);
}

TEST_F(SchedulerTest, MaxAttemptsThenFailedWithTheReason) {
  std::string id = Create(0, /*max_attempts=*/2);
  LeaseOne("w1");
  clock_.Advance(kLease + absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  LeaseOne("w2");
  clock_.Advance(kLease + absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_EQ(job.attempt_count, 2);
  EXPECT_EQ(job.error_code, "UNAVAILABLE");
  EXPECT_EQ(job.error_message, "worker w2 lost: lease expired after 2 attempts");
  EXPECT_TRUE(job.end_time.has_value());
  EXPECT_EQ(MetricValue("compressd_jobs_finished_total", "FAILED"), 1);
  EXPECT_EQ(MetricValue("compressd_job_duration_seconds"), 1);
  absl::StatusOr<std::optional<Lease>> none = scheduler_->LeaseNext("w3", "cpu");
  EXPECT_FALSE(none->has_value());
}

// A file placed for an artifact whose record cannot be written is undone, so that the file on
// disk stays the one the record describes.
TEST_F(SchedulerTest, ArtifactPlacedButNotRecordedIsUndone) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  int placed = 0, undone = 0;
  auto place = [&] {
    ++placed;
    return absl::OkStatus();
  };
  auto unplace = [&] {
    ++undone;
    return absl::OkStatus();
  };
  FailingJobWrites failing(dir_.File("jobs.db"));
  failing.Start();
  EXPECT_FALSE(
      scheduler_->RecordArtifact(id, lease.attempt, {"w1"}, {"a", 1, ""}, place, unplace).ok());
  EXPECT_EQ(placed, 1);
  EXPECT_EQ(undone, 1);
  failing.Stop();
  EXPECT_TRUE(
      scheduler_->RecordArtifact(id, lease.attempt, {"w1"}, {"a", 1, ""}, place, unplace).ok());
  EXPECT_EQ(placed, 2);
  EXPECT_EQ(undone, 1);
}

// The upload of an artifact retried after it was recorded (its answer was lost, or came after
// the worker's deadline) is answered OK without a second event; the file is placed again (the
// same bytes). Another content under the same name replaces the record with an event of its
// own, as does the same content recorded by another lease of the job.
TEST_F(SchedulerTest, TheSameArtifactRecordedAgainMakesNoSecondEvent) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  const LeaseHolder holder{"w1", lease.lease_id};
  int placed = 0;
  auto place = [&placed] {
    ++placed;
    return absl::OkStatus();
  };
  auto artifact_events = [&] {
    std::vector<std::string> sha256s;
    for (const JobEvent& event : Events(id)) {
      if (event.kind != EventKind::kArtifact) continue;
      sha256s.push_back(nlohmann::json::parse(event.payload_json).at("sha256"));
    }
    return sha256s;
  };
  const Artifact model{"model.bin", 5, std::string(64, 'a')};
  ASSERT_TRUE(scheduler_->RecordArtifact(id, lease.attempt, holder, model, place).ok());
  ASSERT_TRUE(scheduler_->RecordArtifact(id, lease.attempt, holder, model, place).ok());
  ASSERT_TRUE(scheduler_->RecordArtifact(id, lease.attempt, {"w1"}, model, place).ok());
  EXPECT_EQ(placed, 3);
  EXPECT_THAT(artifact_events(), ::testing::ElementsAre(model.sha256));
  ASSERT_EQ(Get(id).artifacts.size(), 1u);

  // Another content, then the first one again: each replaces the record, with its event.
  const Artifact changed{"model.bin", 5, std::string(64, 'b')};
  ASSERT_TRUE(scheduler_->RecordArtifact(id, lease.attempt, holder, changed, place).ok());
  const Artifact longer{"model.bin", 6, std::string(64, 'b')};
  ASSERT_TRUE(scheduler_->RecordArtifact(id, lease.attempt, holder, longer, place).ok());
  ASSERT_TRUE(scheduler_->RecordArtifact(id, lease.attempt, holder, model, place).ok());
  EXPECT_THAT(artifact_events(),
              ::testing::ElementsAre(model.sha256, changed.sha256, longer.sha256, model.sha256));
  Job job = Get(id);
  ASSERT_EQ(job.artifacts.size(), 1u);
  EXPECT_EQ(job.artifacts[0].sha256, model.sha256);
  EXPECT_EQ(job.artifacts[0].size_bytes, 5);

  // Another name is another artifact.
  ASSERT_TRUE(
      scheduler_->RecordArtifact(id, lease.attempt, holder, {"report.json", 5, model.sha256}).ok());
  EXPECT_EQ(artifact_events().size(), 5u);

  // The lease handed back and the attempt given again: the new lease's upload is recorded.
  ASSERT_TRUE(scheduler_->ReturnLease(id, lease.attempt, holder).ok());
  Lease again = LeaseOne("w1");
  ASSERT_EQ(again.attempt, lease.attempt);
  ASSERT_TRUE(
      scheduler_->RecordArtifact(id, again.attempt, {"w1", again.lease_id}, model, place).ok());
  EXPECT_EQ(artifact_events().size(), 6u);
}

TEST_F(SchedulerTest, StaleAttemptsAreFenced) {
  std::string id = Create();
  Lease first = LeaseOne("w1");
  clock_.Advance(kLease + absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  Lease second = LeaseOne("w2");
  ASSERT_EQ(second.attempt, 2);
  EXPECT_EQ(scheduler_->Heartbeat(id, first.attempt, {"w1"}).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(scheduler_->ReportEvents(id, first.attempt, {"w1"}, {}).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(scheduler_->RecordArtifact(id, first.attempt, {"w1"}, {"a", 1, ""}).code(),
            absl::StatusCode::kAborted);
  const AttemptResult success = Success();
  absl::Status stale = scheduler_->CompleteAttempt(id, first.attempt, {"w1"}, success);
  EXPECT_EQ(stale.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(stale.message(), HasSubstr("attempt 2 replaced it"));
  // The right attempt from the wrong worker is refused too.
  EXPECT_EQ(scheduler_->Heartbeat(id, second.attempt, {"w1"}).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(Get(id).state, JobState::kRunning);
  ASSERT_TRUE(scheduler_->CompleteAttempt(id, second.attempt, {"w2"}, success).ok());
  EXPECT_EQ(Get(id).state, JobState::kSucceeded);
  EXPECT_EQ(scheduler_->Heartbeat(id, second.attempt, {"w2"}).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(scheduler_->Heartbeat("unknown", 1, {"w2"}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, CancelInEachState) {
  std::string queued = Create();
  absl::StatusOr<Job> cancelled = scheduler_->CancelJob(queued);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  EXPECT_EQ(Get(queued).state, JobState::kCancelled);
  // A cancelled queued job is never leased.
  EXPECT_FALSE(scheduler_->LeaseNext("w1", "cpu")->has_value());
  EXPECT_EQ(scheduler_->CancelJob(queued).status().code(), absl::StatusCode::kFailedPrecondition);

  std::string running = Create();
  Lease lease = LeaseOne("w1");
  cancelled = scheduler_->CancelJob(running);
  EXPECT_EQ(cancelled->state, JobState::kCancelling);
  EXPECT_EQ(scheduler_->CancelJob(running)->state, JobState::kCancelling);
  EXPECT_TRUE(*scheduler_->Heartbeat(running, lease.attempt, {"w1"}));
  EXPECT_TRUE(*scheduler_->ReportEvents(running, lease.attempt, {"w1"}, {}));
  ASSERT_TRUE(scheduler_->CompleteAttempt(running, lease.attempt, {"w1"}, RetryableFailure()).ok());
  Job job = Get(running);
  EXPECT_EQ(job.state, JobState::kCancelled);
  EXPECT_EQ(job.error_code, "CANCELLED");
  EXPECT_EQ(MetricValue("compressd_jobs_finished_total", "CANCELLED"), 2);

  EXPECT_EQ(scheduler_->CancelJob("missing").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, CancellingJobWhoseWorkerVanishesIsCancelled) {
  std::string id = Create();
  LeaseOne("w1");
  ASSERT_TRUE(scheduler_->CancelJob(id).ok());
  clock_.Advance(kLease + absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  EXPECT_EQ(Get(id).state, JobState::kCancelled);
}

// A cancellation whose write fails (a full disk) is refused and leaves the job RUNNING: its worker
// is not told to stop, and the attempt may still succeed. Once written, the worker hears it.
TEST_F(SchedulerTest, CancelThatCouldNotBeWrittenIsNotPassedToTheWorker) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  const LeaseHolder holder{"w1", lease.lease_id};
  {
    FailingJobWrites failing(dir_.File("jobs.db"));
    failing.Start();
    EXPECT_FALSE(scheduler_->CancelJob(id).ok());
    failing.Stop();
  }
  EXPECT_EQ(Get(id).state, JobState::kRunning);
  absl::StatusOr<bool> cancel = scheduler_->Heartbeat(id, lease.attempt, holder);
  ASSERT_TRUE(cancel.ok()) << cancel.status();
  EXPECT_FALSE(*cancel);
  cancel = scheduler_->ReportEvents(id, lease.attempt, holder, NumberedLines(1, 1), 1);
  ASSERT_TRUE(cancel.ok()) << cancel.status();
  EXPECT_FALSE(*cancel);

  // Asked again with the store writable, the cancellation reaches the worker.
  ASSERT_TRUE(scheduler_->CancelJob(id).ok());
  cancel = scheduler_->Heartbeat(id, lease.attempt, holder);
  ASSERT_TRUE(cancel.ok()) << cancel.status();
  EXPECT_TRUE(*cancel);
}

TEST_F(SchedulerTest, CompleteAttemptOutcomes) {
  std::string ok = Create();
  Lease lease = LeaseOne();
  const AttemptResult success = Success(R"({"top1":0.91})");
  ASSERT_TRUE(scheduler_->CompleteAttempt(ok, lease.attempt, {"w1"}, success).ok());
  Job job = Get(ok);
  EXPECT_EQ(job.state, JobState::kSucceeded);
  EXPECT_EQ(job.report_json, R"({"top1":0.91})");
  EXPECT_EQ(MetricValue("compressd_jobs_finished_total", "SUCCEEDED"), 1);

  std::string retry = Create();
  lease = LeaseOne();
  const AttemptResult crash = Crash();  // exit status 137, stderr "Killed"
  ASSERT_TRUE(scheduler_->CompleteAttempt(retry, lease.attempt, {"w1"}, crash).ok());
  job = Get(retry);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.attempt_count, 1);
  EXPECT_THAT(job.error_message, HasSubstr("exit status 137"));
  std::vector<JobEvent> events = Events(retry);
  EXPECT_THAT(events[events.size() - 2].payload_json, HasSubstr("Killed"));
  EXPECT_EQ(LeaseOne().attempt, 2);

  std::string final = Create();
  lease = LeaseOne();
  AttemptResult bad_spec;
  bad_spec.outcome = AttemptResult::Outcome::kFailed;
  bad_spec.retryable = false;
  bad_spec.error_code = "NOT_FOUND";
  bad_spec.error_message = "data set not found";
  ASSERT_TRUE(scheduler_->CompleteAttempt(final, lease.attempt, {"w1"}, bad_spec).ok());
  job = Get(final);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_EQ(job.error_code, "NOT_FOUND");
  EXPECT_THAT(job.error_message, HasSubstr("data set not found"));
}

TEST_F(SchedulerTest, RestartRequeuesRunningJobsAndFinishesCancellingOnes) {
  std::string running = Create();
  std::string cancelling = Create();
  std::string queued = Create();
  LeaseOne("w1");
  LeaseOne("w1");
  ASSERT_TRUE(scheduler_->CancelJob(cancelling).ok());
  std::vector<JobEvent> before = Events(running);

  Restart();

  Job job = Get(running);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.attempt_count, 1);
  EXPECT_THAT(job.error_message, HasSubstr("compressd restarted"));
  std::vector<JobEvent> after = Events(running);
  ASSERT_EQ(after.size(), before.size() + 1);
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i].payload_json, before[i].payload_json);
  }
  EXPECT_EQ(Get(cancelling).state, JobState::kCancelled);
  EXPECT_EQ(MetricValue("compressd_jobs", "QUEUED"), 2);
  EXPECT_EQ(MetricValue("compressd_jobs", "CANCELLED"), 1);
  // The old worker's attempt is fenced; the job resumes as attempt 2.
  EXPECT_EQ(scheduler_->Heartbeat(running, 1, {"w1"}).status().code(), absl::StatusCode::kAborted);
  Lease resumed = LeaseOne("w2");
  EXPECT_EQ(resumed.job_id, running);
  EXPECT_EQ(resumed.attempt, 2);
  EXPECT_EQ(LeaseOne("w2").job_id, queued);
}

TEST_F(SchedulerTest, WaitersGetNewJobsOrTimeOut) {
  std::optional<absl::StatusOr<std::optional<Lease>>> got;
  scheduler_->WaitForLease("w1", "cpu", clock_.Now() + absl::Seconds(10),
                           [&](absl::StatusOr<std::optional<Lease>> lease) { got = lease; });
  EXPECT_FALSE(got.has_value());
  EXPECT_EQ(scheduler_->WorkersConnected(), 1);
  std::string id = Create();
  ASSERT_TRUE(got.has_value());
  ASSERT_TRUE(got->ok());
  ASSERT_TRUE((*got)->has_value());
  EXPECT_EQ((**got)->job_id, id);
  EXPECT_EQ(Get(id).state, JobState::kRunning);

  got.reset();
  scheduler_->WaitForLease("w2", "cpu", clock_.Now() + absl::Seconds(10),
                           [&](absl::StatusOr<std::optional<Lease>> lease) { got = lease; });
  clock_.Advance(absl::Seconds(5));
  scheduler_->ProcessTimeouts();
  EXPECT_FALSE(got.has_value());
  clock_.Advance(absl::Seconds(6));
  scheduler_->ProcessTimeouts();
  ASSERT_TRUE(got.has_value());
  EXPECT_FALSE((*got)->has_value());

  bool called = false;
  int64_t waiter = scheduler_->WaitForLease("w3", "cpu", clock_.Now() + absl::Seconds(10),
                                            [&](auto) { called = true; });
  EXPECT_TRUE(scheduler_->CancelWait(waiter));
  EXPECT_FALSE(scheduler_->CancelWait(waiter));
  Create();
  EXPECT_FALSE(called);
}

TEST_F(SchedulerTest, ShutdownAnswersWaiters) {
  bool answered = false;
  scheduler_->WaitForLease("w1", "cpu", clock_.Now() + absl::Seconds(10),
                           [&](absl::StatusOr<std::optional<Lease>> lease) {
                             answered = lease.ok() && !lease->has_value();
                           });
  scheduler_->Shutdown();
  EXPECT_TRUE(answered);
  EXPECT_EQ(scheduler_->LeaseNext("w1", "cpu").status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(SchedulerTest, ReportEventsTranslatesExecutorLines) {
  std::string id = Create();
  Lease lease = LeaseOne();
  int notified = 0;
  std::vector<int64_t> notified_sequences;
  int64_t token = scheduler_->notifier().Subscribe(id, [&](const JobUpdate* update) {
    ++notified;
    // The notification carries the stored events, so watchers need not read them back.
    ASSERT_NE(update, nullptr);
    // The lines set the current phase and the report, so the job was written with its state.
    EXPECT_EQ(update->state, std::optional<JobState>(JobState::kRunning));
    for (const JobEvent& event : update->events) notified_sequences.push_back(event.sequence);
  });
  std::vector<std::string> lines = {
      events::Serialize(events::PhaseStarted("share")),
      events::Serialize(events::Metric("share", 10, 0.5, 0.25, {{"loss", 1.5}})),
      events::Serialize(events::Log("info", "hello")),
      "not json",
      events::Serialize(events::PhaseFinished("share", 12.5, {{"top1", 0.8}})),
      events::Serialize(events::Report({{"top1", 0.8}})),
  };
  absl::StatusOr<bool> cancel = scheduler_->ReportEvents(id, lease.attempt, {"w1"}, lines);
  ASSERT_TRUE(cancel.ok()) << cancel.status();
  EXPECT_FALSE(*cancel);
  EXPECT_EQ(notified, 1);
  EXPECT_EQ(notified_sequences, (std::vector<int64_t>{3, 4, 5, 6, 7}));
  scheduler_->notifier().Unsubscribe(token);
  Job job = Get(id);
  EXPECT_EQ(job.current_phase, "share");
  EXPECT_EQ(nlohmann::json::parse(job.report_json)["top1"], 0.8);
  std::vector<JobEvent> events = Events(id);
  ASSERT_EQ(events.size(), 2u + 5u);  // created, leased, then five from the executor
  EXPECT_EQ(events[2].kind, EventKind::kPhaseStarted);
  EXPECT_EQ(events[2].attempt, 1);
  EXPECT_EQ(events[3].kind, EventKind::kMetric);
  nlohmann::json metric = nlohmann::json::parse(events[3].payload_json);
  EXPECT_EQ(metric["step"], 10);
  EXPECT_EQ(metric["values"]["loss"], 1.5);
  EXPECT_EQ(metric["progress"], 0.25);
  EXPECT_EQ(events[4].kind, EventKind::kLog);
  EXPECT_THAT(events[5].payload_json, HasSubstr("unreadable executor event"));
  EXPECT_EQ(events[6].kind, EventKind::kPhaseFinished);
}

// A `report` line's report is kept as CompleteAttempt's is: a JSON object of at most 1 MiB as it
// is, anything else (too large, not an object, no report at all) as a report_omitted note.
TEST_F(SchedulerTest, ReportLinesKeepOnlyObjectsWithinTheLimit) {
  std::string id = Create();
  Lease lease = LeaseOne();
  auto reported = [&](const std::string& line) {
    EXPECT_TRUE(scheduler_->ReportEvents(id, lease.attempt, {"w1"}, {line}).ok());
    return nlohmann::json::parse(Get(id).report_json);
  };
  EXPECT_EQ(reported(events::Serialize(events::Report({{"top1", 0.8}})))["top1"], 0.8);
  nlohmann::json large =
      reported(events::Serialize(events::Report({{"big", std::string(kMaxReportJsonBytes, 'x')}})));
  EXPECT_EQ(large["report_omitted"]["reason"], "larger than a job's record keeps");
  EXPECT_EQ(large["report_omitted"]["limit_bytes"], kMaxReportJsonBytes);
  EXPECT_EQ(reported(events::Serialize(
                events::Report(nlohmann::json::array({1, 2}))))["report_omitted"]["reason"],
            "not a JSON object");
  EXPECT_EQ(reported(R"({"type":"report","time":1})")["report_omitted"]["reason"],
            "not a JSON object");
}

// An executor event's time is kept when a Timestamp can hold it; one that is not positive, past
// year 9999 or too large to convert is the time compressd received it.
TEST_F(SchedulerTest, EventTimesOutsideTimestampRangeAreTheReceiveTime) {
  std::string id = Create();
  Lease lease = LeaseOne();
  const size_t before = Events(id).size();
  auto line = [](const std::string& time) {
    return absl::StrCat(R"({"type":"log","level":"info","message":"m","time":)", time, "}");
  };
  ASSERT_TRUE(scheduler_
                  ->ReportEvents(id, lease.attempt, {"w1"},
                                 {line("1700000000.5"), line("253402300799"), line("253402300800"),
                                  line("9.3e12"), line("1e300"), line("-5")})
                  .ok());
  std::vector<JobEvent> events = Events(id);
  ASSERT_EQ(events.size(), before + 6);
  EXPECT_EQ(events[before].time, absl::FromUnixMillis(1700000000500));
  EXPECT_EQ(events[before + 1].time, absl::FromUnixSeconds(253402300799));
  for (size_t i = before + 2; i < events.size(); ++i) {
    EXPECT_EQ(events[i].time, clock_.Now()) << i;
  }
}

TEST_F(SchedulerTest, ReturnedLeaseRequeuesWithoutCountingTheAttempt) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  EXPECT_EQ(scheduler_->ReturnLease(id, lease.attempt, {"w2"}).code(), absl::StatusCode::kAborted);
  ASSERT_TRUE(scheduler_->ReturnLease(id, lease.attempt, {"w1"}).ok());
  Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.attempt_count, 0);
  EXPECT_FALSE(job.start_time.has_value());
  EXPECT_EQ(scheduler_->Heartbeat(id, lease.attempt, {"w1"}).status().code(),
            absl::StatusCode::kAborted);
  Lease again = LeaseOne("w2");
  EXPECT_EQ(again.job_id, id);
  EXPECT_EQ(again.attempt, 1);
}

TEST_F(SchedulerTest, DeleteOnlyFinishedJobs) {
  std::string id = Create();
  EXPECT_EQ(scheduler_->DeleteJob(id).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(scheduler_->CancelJob(id).ok());
  ASSERT_TRUE(scheduler_->DeleteJob(id).ok());
  EXPECT_EQ(store_->GetJob(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_->DeleteJob(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(MetricValue("compressd_jobs", "CANCELLED"), 0);
  EXPECT_EQ(MetricValue("compressd_jobs_created_total"), 1);
}

TEST(DeviceNeedTest, ReadFromTheSpecsResourcesDevice) {
  EXPECT_EQ(DeviceNeedOfSpec(R"({"resources":{"device":"cpu"}})"), DeviceNeed::kCpu);
  EXPECT_EQ(DeviceNeedOfSpec(R"({"resources":{"device":"cuda"}})"), DeviceNeed::kCuda);
  EXPECT_EQ(DeviceNeedOfSpec(R"({"resources":{"device":"cuda:1"}})"), DeviceNeed::kCuda);
  EXPECT_EQ(DeviceNeedOfSpec(R"({"resources":{"device":"auto"}})"), DeviceNeed::kAuto);
  EXPECT_EQ(DeviceNeedOfSpec(R"({"resources":{"device":""}})"), DeviceNeed::kAuto);
  EXPECT_EQ(DeviceNeedOfSpec(R"({"resources":{"threads":2}})"), DeviceNeed::kAuto);
  EXPECT_EQ(DeviceNeedOfSpec("{}"), DeviceNeed::kAuto);
  // Unreadable specs count as auto.
  EXPECT_EQ(DeviceNeedOfSpec(""), DeviceNeed::kAuto);
  EXPECT_EQ(DeviceNeedOfSpec("not json"), DeviceNeed::kAuto);
  EXPECT_EQ(DeviceNeedOfSpec("[1]"), DeviceNeed::kAuto);
  EXPECT_EQ(DeviceNeedOfSpec(R"({"resources":"cuda"})"), DeviceNeed::kAuto);
  EXPECT_EQ(DeviceNeedOfSpec(R"({"resources":{"device":5}})"), DeviceNeed::kAuto);
}

TEST(DeviceNeedTest, WhichWorkerDeviceMayRunWhat) {
  EXPECT_TRUE(DeviceMayRun("cpu", DeviceNeed::kCpu));
  EXPECT_FALSE(DeviceMayRun("cpu", DeviceNeed::kCuda));
  EXPECT_TRUE(DeviceMayRun("cpu", DeviceNeed::kAuto));
  for (const char* cuda : {"cuda", "cuda:0", "cuda:3"}) {
    EXPECT_FALSE(DeviceMayRun(cuda, DeviceNeed::kCpu)) << cuda;
    EXPECT_TRUE(DeviceMayRun(cuda, DeviceNeed::kCuda)) << cuda;
    EXPECT_TRUE(DeviceMayRun(cuda, DeviceNeed::kAuto)) << cuda;
  }
  // A device the server does not know (LeaseJob without a device name) takes auto jobs only.
  for (const char* other : {"unspecified", "cudax", "cpu:0", ""}) {
    EXPECT_FALSE(DeviceMayRun(other, DeviceNeed::kCpu)) << other;
    EXPECT_FALSE(DeviceMayRun(other, DeviceNeed::kCuda)) << other;
    EXPECT_TRUE(DeviceMayRun(other, DeviceNeed::kAuto)) << other;
  }
}

TEST_F(SchedulerTest, CpuWorkerNeverLeasesACudaJob) {
  std::string a = CreateNeeding("cuda"), b = CreateNeeding("cuda:1", 5);
  EXPECT_EQ(scheduler_->QueuedJobs(DeviceNeed::kCuda), 2);
  EXPECT_EQ(LeaseFor("cpu"), "");
  EXPECT_EQ(LeaseFor("unspecified"), "");
  EXPECT_EQ(Get(a).state, JobState::kQueued);
  EXPECT_EQ(Get(b).state, JobState::kQueued);
  EXPECT_EQ(Get(a).attempt_count, 0);
  EXPECT_EQ(LeaseFor("cuda:0"), b);
  EXPECT_EQ(LeaseFor("cuda"), a);
  EXPECT_EQ(scheduler_->QueuedJobs(DeviceNeed::kCuda), 0);
}

TEST_F(SchedulerTest, CudaWorkerTakesACudaJobQueuedBehindOlderCpuJobs) {
  std::string a = CreateNeeding("cpu"), b = CreateNeeding("cpu"), c = CreateNeeding("cuda");
  EXPECT_EQ(LeaseFor("cuda:0"), c);
  EXPECT_EQ(LeaseFor("cuda:0"), "");
  EXPECT_EQ(Get(a).state, JobState::kQueued);
  EXPECT_EQ(LeaseFor("cpu"), a);
  EXPECT_EQ(LeaseFor("cpu"), b);
  EXPECT_EQ(LeaseFor("cpu"), "");
}

TEST_F(SchedulerTest, AutoJobsGoToBothKindsInQueueOrder) {
  std::string a = CreateNeeding("auto"), b = CreateNeeding("cpu"), c = Create(),
              d = CreateNeeding("cuda"), e = CreateNeeding("");
  EXPECT_EQ(scheduler_->QueuedJobs(DeviceNeed::kAuto), 3);
  EXPECT_EQ(LeaseFor("cuda:0"), a);
  EXPECT_EQ(LeaseFor("cpu"), b);
  EXPECT_EQ(LeaseFor("cuda:1"), c);
  EXPECT_EQ(LeaseFor("cpu"), e);
  EXPECT_EQ(LeaseFor("cpu"), "");
  EXPECT_EQ(LeaseFor("cuda:0"), d);
  EXPECT_EQ(LeaseFor("cuda:0"), "");
}

TEST_F(SchedulerTest, PriorityOrderHoldsAcrossQueues) {
  std::string cuda = CreateNeeding("cuda", 1);
  std::string cpu = CreateNeeding("cpu", 1);
  std::string auto_high = CreateNeeding("auto", 5);
  std::string cpu_higher = CreateNeeding("cpu", 9);
  std::string auto_low = Create(-1);
  // A higher-priority auto job beats an older cuda job; a newer cpu job of the highest priority
  // goes first to a cpu worker.
  EXPECT_EQ(LeaseFor("cuda:0"), auto_high);
  EXPECT_EQ(LeaseFor("cpu"), cpu_higher);
  EXPECT_EQ(LeaseFor("cuda:0"), cuda);
  // Equal priority: the older job first, whatever its queue.
  EXPECT_EQ(LeaseFor("cpu"), cpu);
  EXPECT_EQ(LeaseFor("cuda:0"), auto_low);
}

TEST_F(SchedulerTest, WaiterWithoutAMatchingJobDoesNotBlockYoungerWaiters) {
  auto cpu_waiter = Wait("w1", "cpu");
  clock_.Advance(absl::Seconds(1));
  auto cuda_waiter = Wait("w2", "cuda:0");
  std::string cuda = CreateNeeding("cuda");
  EXPECT_EQ(*cuda_waiter, cuda);
  EXPECT_EQ(Get(cuda).lease_owner, "w2");
  // The cpu waiter is still waiting, and gets the next cpu job.
  EXPECT_EQ(*cpu_waiter, std::nullopt);
  EXPECT_EQ(scheduler_->WorkersConnected(), 2);
  std::string cpu = CreateNeeding("cpu");
  EXPECT_EQ(*cpu_waiter, cpu);
}

TEST_F(SchedulerTest, OldestMatchingWaiterGetsTheJob) {
  auto first = Wait("w1", "cuda:0");
  auto second = Wait("w2", "cpu");
  auto third = Wait("w3", "cpu");
  // A cpu job goes to the oldest cpu waiter; an auto job to the oldest waiter of all.
  std::string cpu = CreateNeeding("cpu");
  EXPECT_EQ(*second, cpu);
  EXPECT_EQ(*first, std::nullopt);
  EXPECT_EQ(*third, std::nullopt);
  std::string any = Create();
  EXPECT_EQ(*first, any);
  EXPECT_EQ(*third, std::nullopt);
  // The last waiter times out with no lease while only a cuda job is queued.
  std::string cuda = CreateNeeding("cuda");
  EXPECT_EQ(*third, std::nullopt);
  clock_.Advance(absl::Seconds(11));
  scheduler_->ProcessTimeouts();
  EXPECT_EQ(*third, "");
  EXPECT_EQ(Get(cuda).state, JobState::kQueued);
}

TEST_F(SchedulerTest, CancelledAndDeletedCudaJobsLeaveTheirQueue) {
  std::string cancelled = CreateNeeding("cuda", 5);
  std::string deleted = CreateNeeding("cuda", 5);
  std::string kept = CreateNeeding("cuda");
  ASSERT_EQ(scheduler_->QueuedJobs(DeviceNeed::kCuda), 3);
  ASSERT_TRUE(scheduler_->CancelJob(cancelled).ok());
  ASSERT_TRUE(scheduler_->CancelJob(deleted).ok());
  EXPECT_EQ(scheduler_->QueuedJobs(DeviceNeed::kCuda), 1);
  ASSERT_TRUE(scheduler_->DeleteJob(deleted).ok());
  EXPECT_EQ(LeaseFor("cuda:0"), kept);
  EXPECT_EQ(LeaseFor("cuda:0"), "");
  EXPECT_EQ(Get(cancelled).state, JobState::kCancelled);
  EXPECT_EQ(scheduler_->QueuedJobs(DeviceNeed::kCuda), 0);
}

TEST_F(SchedulerTest, RequeuedJobsKeepTheirDeviceNeed) {
  std::string id = CreateNeeding("cuda");
  ASSERT_EQ(LeaseFor("cuda:0", "w1"), id);
  // Lease expiry.
  clock_.Advance(kLease + absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  ASSERT_EQ(Get(id).state, JobState::kQueued);
  EXPECT_EQ(scheduler_->QueuedJobs(DeviceNeed::kCuda), 1);
  EXPECT_EQ(LeaseFor("cpu", "w2"), "");
  ASSERT_EQ(LeaseFor("cuda:1", "w2"), id);
  // A failed, retryable attempt.
  ASSERT_TRUE(scheduler_->CompleteAttempt(id, 2, {"w2"}, RetryableFailure()).ok());
  ASSERT_EQ(Get(id).state, JobState::kQueued);
  EXPECT_EQ(LeaseFor("cpu", "w2"), "");
  ASSERT_EQ(LeaseFor("cuda:0", "w3"), id);
  // A lease given back.
  ASSERT_TRUE(scheduler_->ReturnLease(id, 3, {"w3"}).ok());
  EXPECT_EQ(LeaseFor("cpu", "w2"), "");
  EXPECT_EQ(LeaseFor("cuda:0", "w3"), id);
}

TEST_F(SchedulerTest, RestartKeepsEachJobsDeviceNeed) {
  std::string cuda_running = CreateNeeding("cuda");
  std::string cpu_running = CreateNeeding("cpu");
  std::string cuda_queued = CreateNeeding("cuda");
  std::string cpu_queued = CreateNeeding("cpu");
  std::string auto_queued = Create();
  ASSERT_EQ(LeaseFor("cuda:0"), cuda_running);
  ASSERT_EQ(LeaseFor("cpu"), cpu_running);

  Restart();

  EXPECT_EQ(scheduler_->QueuedJobs(DeviceNeed::kCuda), 2);
  EXPECT_EQ(scheduler_->QueuedJobs(DeviceNeed::kCpu), 2);
  EXPECT_EQ(scheduler_->QueuedJobs(DeviceNeed::kAuto), 1);
  EXPECT_EQ(LeaseFor("cpu"), cpu_running);
  EXPECT_EQ(LeaseFor("cpu"), cpu_queued);
  EXPECT_EQ(LeaseFor("cpu"), auto_queued);
  EXPECT_EQ(LeaseFor("cpu"), "");
  EXPECT_EQ(LeaseFor("cuda:0"), cuda_running);
  EXPECT_EQ(LeaseFor("cuda:0"), cuda_queued);
  EXPECT_EQ(LeaseFor("cuda:0"), "");
}

// Concurrent CreateJob calls: every one returns its own committed job, none twice, none lost.
TEST_F(SchedulerTest, ConcurrentCreatesEachGetTheirOwnJob) {
  constexpr int kThreads = 16, kEach = 25;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        JobRequest request;
        request.spec_json = "{}";
        request.labels = {{"thread", absl::StrCat(t)}, {"call", absl::StrCat(i)}};
        if (i % 5 == 0) request.request_id = absl::StrCat("t", t, "-", i / 5);
        absl::StatusOr<CreatedJob> created = scheduler_->CreateJob(request);
        ASSERT_TRUE(created.ok()) << created.status();
        EXPECT_TRUE(created->created);
        EXPECT_EQ(created->job.labels, request.labels) << "a result went to the wrong caller";
        ids[t].push_back(created->job.id);
        if (i % 5 == 0) {  // a retry of the same request answers with the same job
          absl::StatusOr<CreatedJob> again = scheduler_->CreateJob(request);
          ASSERT_TRUE(again.ok()) << again.status();
          EXPECT_FALSE(again->created);
          EXPECT_EQ(again->job.id, created->job.id);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::set<std::string> distinct;
  for (const auto& mine : ids) distinct.insert(mine.begin(), mine.end());
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kThreads * kEach));
  EXPECT_EQ(MetricValue("compressd_jobs", "QUEUED"), kThreads * kEach);
  for (const std::string& id : distinct) EXPECT_EQ(Get(id).state, JobState::kQueued);
  int leased = 0;
  while (scheduler_->LeaseNext("w1", "cpu")->has_value()) ++leased;
  EXPECT_EQ(leased, kThreads * kEach);
}

// For each created job, counts the QUEUED jobs committed to the store when the scheduler reports
// it (a batch reports its jobs after committing all of them); the first report blocks until
// released.
class BatchObserver : public SchedulerObserver {
 public:
  explicit BatchObserver(JobStore* store) : store_(store) {}

  void JobStateChanged(std::optional<JobState> from, std::optional<JobState> to) override {
    if (from.has_value()) return;
    absl::StatusOr<std::map<JobState, int64_t>> counts = store_->CountByState();
    absl::MutexLock lock(&mu_);
    committed_.push_back(counts.ok() ? (*counts)[JobState::kQueued] : -1);
    if (committed_.size() == 1) mu_.Await(absl::Condition(&released_));
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }
  std::vector<int64_t> Committed() {
    absl::MutexLock lock(&mu_);
    return committed_;
  }

 private:
  JobStore* const store_;
  absl::Mutex mu_;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<int64_t> committed_ ABSL_GUARDED_BY(mu_);
};

// Starts a CreateJob (expected to succeed) on a thread of its own and returns that thread once
// the job's write is held up in `observer`.
std::thread StartHeldUpCreate(Scheduler& scheduler, BatchObserver& observer) {
  std::thread first([&scheduler] {
    JobRequest request;
    request.spec_json = "{}";
    absl::StatusOr<CreatedJob> created = scheduler.CreateJob(request);
    EXPECT_TRUE(created.ok()) << created.status();
  });
  while (observer.Committed().empty()) absl::SleepFor(absl::Milliseconds(1));
  return first;
}

// The answers of CreateJobAsync calls, by a name given to each call.
class AsyncAnswers {
 public:
  Scheduler::CreateDone For(const std::string& name) {
    return [this, name](absl::StatusOr<CreatedJob> created) {
      absl::MutexLock lock(&mu_);
      answers_[name] = created.status();
    };
  }
  // The answers given so far.
  std::map<std::string, absl::Status> Now() {
    absl::MutexLock lock(&mu_);
    return answers_;
  }
  // Waits for `count` answers and returns them.
  std::map<std::string, absl::Status> Await(size_t count) {
    absl::MutexLock lock(&mu_);
    wanted_ = count;
    mu_.Await(absl::Condition(this, &AsyncAnswers::HaveWanted));
    return answers_;
  }

 private:
  bool HaveWanted() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return answers_.size() >= wanted_; }

  absl::Mutex mu_;
  std::map<std::string, absl::Status> answers_ ABSL_GUARDED_BY(mu_);
  size_t wanted_ ABSL_GUARDED_BY(mu_) = 0;
};

// Calls arriving while a job is being written queue up and are then written together, in one
// transaction, not one by one.
TEST_F(SchedulerTest, CreatesArrivingDuringAWriteShareTheNextTransaction) {
  scheduler_.reset();
  BatchObserver observer(store_.get());
  std::unique_ptr<Scheduler> scheduler = StartObserved(&observer);
  ASSERT_NE(scheduler, nullptr);
  auto create = [&] {
    JobRequest request;
    request.spec_json = "{}";
    absl::StatusOr<CreatedJob> created = scheduler->CreateJob(request);
    EXPECT_TRUE(created.ok()) << created.status();
  };
  std::thread first = StartHeldUpCreate(*scheduler, observer);
  constexpr int kLater = 10;
  std::vector<std::thread> later;
  for (int i = 0; i < kLater; ++i) later.emplace_back(create);
  absl::SleepFor(absl::Milliseconds(300));  // let them all queue up behind the first write
  observer.Release();
  first.join();
  for (std::thread& thread : later) thread.join();
  std::vector<int64_t> committed = observer.Committed();
  ASSERT_EQ(committed.size(), static_cast<size_t>(1 + kLater));
  EXPECT_EQ(committed[0], 1);
  // One by one, the second job would be reported with 2 committed; together, with all of them.
  EXPECT_GT(committed[1], 2) << "each waiting call had a transaction of its own";
  EXPECT_EQ(store_->CountByState()->at(JobState::kQueued), 1 + kLater);
}

// Past Options::max_pending_creates calls waiting for the store, CreateJob is UNAVAILABLE at once;
// those already waiting are written.
TEST_F(SchedulerTest, TooManyWaitingCreatesAreRefusedAtOnce) {
  scheduler_.reset();
  BatchObserver observer(store_.get());
  Scheduler::Options options;
  options.max_pending_creates = 3;
  std::unique_ptr<Scheduler> scheduler = StartObserved(&observer, options);
  ASSERT_NE(scheduler, nullptr);
  JobRequest request;
  request.spec_json = "{}";
  std::thread first = StartHeldUpCreate(*scheduler, observer);
  // The first write is held up: three calls wait, the fourth is refused without waiting.
  AsyncAnswers answers;
  for (int i = 0; i < 4; ++i) scheduler->CreateJobAsync(request, answers.For(absl::StrCat(i)));
  std::map<std::string, absl::Status> refused = answers.Now();
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused["3"].code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused["3"].message(), HasSubstr("3 CreateJob calls waiting"));
  observer.Release();
  first.join();
  std::map<std::string, absl::Status> all = answers.Await(4);
  for (const char* name : {"0", "1", "2"}) EXPECT_TRUE(all[name].ok()) << name << ": " << all[name];
  EXPECT_EQ(store_->CountByState()->at(JobState::kQueued), 4);
}

// A call whose deadline passes while it waits for the store is answered DEADLINE_EXCEEDED and
// writes no job; the others of its batch are written.
TEST_F(SchedulerTest, CreatesWhoseDeadlinePassedWhileWaitingWriteNothing) {
  scheduler_.reset();
  BatchObserver observer(store_.get());
  std::unique_ptr<Scheduler> scheduler = StartObserved(&observer);
  ASSERT_NE(scheduler, nullptr);
  JobRequest request;
  request.spec_json = "{}";
  std::thread first = StartHeldUpCreate(*scheduler, observer);
  AsyncAnswers answers;
  scheduler->CreateJobAsync(request, answers.For("late"), absl::Now() + absl::Milliseconds(50));
  scheduler->CreateJobAsync(request, answers.For("patient"), absl::Now() + absl::Seconds(60));
  absl::SleepFor(absl::Milliseconds(100));
  observer.Release();
  first.join();
  std::map<std::string, absl::Status> all = answers.Await(2);
  EXPECT_EQ(all["late"].code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(all["patient"].ok()) << all["patient"];
  EXPECT_EQ(store_->CountByState()->at(JobState::kQueued), 2);
}

// CreateJob calls waiting behind a write when the scheduler shuts down are answered UNAVAILABLE
// or with their job; none hangs.
TEST_F(SchedulerTest, ShutdownAnswersWaitingCreates) {
  scheduler_.reset();
  BatchObserver observer(store_.get());
  std::unique_ptr<Scheduler> scheduler = StartObserved(&observer);
  ASSERT_NE(scheduler, nullptr);
  std::vector<absl::StatusCode> codes(6, absl::StatusCode::kUnknown);
  auto create = [&](int i) {
    JobRequest request;
    request.spec_json = "{}";
    codes[i] = scheduler->CreateJob(request).status().code();
  };
  std::thread first = StartHeldUpCreate(*scheduler, observer);
  std::vector<std::thread> later;
  for (int i = 1; i < 6; ++i) later.emplace_back(create, i);
  absl::SleepFor(absl::Milliseconds(100));
  std::thread stop([&] { scheduler->Shutdown(); });
  absl::SleepFor(absl::Milliseconds(100));
  observer.Release();
  stop.join();
  first.join();
  for (std::thread& thread : later) thread.join();
  for (int i = 1; i < 6; ++i) {
    EXPECT_TRUE(codes[i] == absl::StatusCode::kOk || codes[i] == absl::StatusCode::kUnavailable)
        << i << ": " << absl::StatusCodeToString(codes[i]);
  }
}

// A lease that expires while the store cannot be written stays, refusing its worker, and the job
// is requeued once the store takes writes again: it is not left RUNNING with nobody holding it.
TEST_F(SchedulerTest, ExpiryWrittenOnceTheStoreTakesWritesAgain) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  FailingJobWrites failing(dir_.File("jobs.db"));
  failing.Start();
  clock_.Advance(kLease + absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  EXPECT_EQ(Get(id).state, JobState::kRunning);
  EXPECT_EQ(scheduler_->Heartbeat(id, lease.attempt, {"w1"}).status().code(),
            absl::StatusCode::kAborted);
  clock_.Advance(absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  EXPECT_EQ(Get(id).state, JobState::kRunning);
  failing.Stop();
  clock_.Advance(absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.attempt_count, 1);
  EXPECT_THAT(job.error_message, HasSubstr("worker w1 lost: lease expired"));
  EXPECT_EQ(scheduler_->CompleteAttempt(id, lease.attempt, {"w1"}, AttemptResult{}).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(LeaseOne("w2").attempt, 2);
}

// The same for a job being cancelled: it ends CANCELLED once the store takes writes again.
TEST_F(SchedulerTest, CancellingExpiryWrittenOnceTheStoreTakesWritesAgain) {
  std::string id = Create();
  LeaseOne("w1");
  ASSERT_TRUE(scheduler_->CancelJob(id).ok());
  FailingJobWrites failing(dir_.File("jobs.db"));
  failing.Start();
  clock_.Advance(kLease + absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  EXPECT_EQ(Get(id).state, JobState::kCancelling);
  failing.Stop();
  clock_.Advance(absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  EXPECT_EQ(Get(id).state, JobState::kCancelled);
  EXPECT_TRUE(scheduler_->DeleteJob(id).ok());
}

// A restart on a full disk: the scheduler starts although the requeue of a RUNNING job and the
// cancellation of a CANCELLING one cannot be written; both are written once the store takes
// writes again, and the old worker is fenced off meanwhile.
TEST_F(SchedulerTest, RestartOnAFullDiskStartsAndWritesTheRecoveryLater) {
  std::string running = Create();
  std::string cancelling = Create();
  std::string queued = Create();
  LeaseOne("w1");
  LeaseOne("w1");
  ASSERT_TRUE(scheduler_->CancelJob(cancelling).ok());

  scheduler_.reset();
  store_.reset();
  FailingJobWrites failing(dir_.File("jobs.db"));
  failing.Start();
  OpenStore();
  StartScheduler();
  ASSERT_NE(scheduler_, nullptr);
  EXPECT_EQ(Get(running).state, JobState::kRunning);
  EXPECT_EQ(Get(cancelling).state, JobState::kCancelling);
  absl::StatusOr<bool> heartbeat = scheduler_->Heartbeat(running, 1, {"w1"});
  EXPECT_EQ(heartbeat.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(heartbeat.status().message(), HasSubstr("compressd restarted"));
  clock_.Advance(absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  EXPECT_EQ(Get(running).state, JobState::kRunning);
  EXPECT_EQ(Get(cancelling).state, JobState::kCancelling);

  failing.Stop();
  clock_.Advance(absl::Seconds(1));
  scheduler_->ProcessTimeouts();
  Job job = Get(running);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.attempt_count, 1);
  EXPECT_THAT(job.error_message, HasSubstr("compressd restarted"));
  EXPECT_EQ(Get(cancelling).state, JobState::kCancelled);
  EXPECT_THAT(Get(cancelling).error_message, HasSubstr("compressd restarted"));
  // No lease of this process expired.
  EXPECT_EQ(MetricValue("compressd_leases_expired_total"), 0);
  EXPECT_EQ(scheduler_->Heartbeat(running, 1, {"w1"}).status().code(), absl::StatusCode::kAborted);
  Lease resumed = LeaseOne("w2");
  EXPECT_EQ(resumed.job_id, running);
  EXPECT_EQ(resumed.attempt, 2);
  EXPECT_EQ(LeaseOne("w2").job_id, queued);
}

// A RUNNING job that no worker holds (its lease ended without its new state being written) is
// CANCELLED at once by CancelJob, and can then be deleted.
TEST_F(SchedulerTest, CancelOfARunningJobThatNoWorkerHoldsEndsIt) {
  std::string id = Create();
  Job job = Get(id);
  job.state = JobState::kRunning;
  job.attempt_count = 1;
  ASSERT_TRUE(store_->Write(id, &job, {}).ok());
  absl::StatusOr<Job> cancelled = scheduler_->CancelJob(id);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  EXPECT_EQ(Get(id).state, JobState::kCancelled);
  EXPECT_TRUE(scheduler_->DeleteJob(id).ok());
}

// A worker (or compressd) that stops hands its attempt back: the job is requeued without
// counting it, also on its last attempt, and after a restart resumes as the same attempt. A real
// failure on the last attempt still fails the job.
TEST_F(SchedulerTest, AttemptHandedBackWhileStoppingIsNotCounted) {
  std::string id = Create(0, /*max_attempts=*/1);
  Lease lease = LeaseOne("w1");
  scheduler_->Shutdown();
  AttemptResult stopped;
  stopped.outcome = AttemptResult::Outcome::kFailed;
  stopped.error_code = "UNAVAILABLE";
  stopped.error_message = "the worker is shutting down";
  stopped.retryable = true;
  stopped.stopping = true;
  stopped.stderr_tail = "checkpoint saved";
  ASSERT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, {"w1"}, stopped).ok());
  Job job = Get(id);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.attempt_count, 0);
  EXPECT_THAT(job.error_message, HasSubstr("handed back by worker w1"));
  EXPECT_EQ(scheduler_->Heartbeat(id, lease.attempt, {"w1"}).status().code(),
            absl::StatusCode::kAborted);

  Restart();
  Lease again = LeaseOne("w2");
  EXPECT_EQ(again.job_id, id);
  EXPECT_EQ(again.attempt, 1);
  AttemptResult failed;
  failed.outcome = AttemptResult::Outcome::kFailed;
  failed.error_code = "UNAVAILABLE";
  failed.error_message = "device lost";
  failed.retryable = true;
  ASSERT_TRUE(scheduler_->CompleteAttempt(id, again.attempt, {"w2"}, failed).ok());
  job = Get(id);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_EQ(job.attempt_count, 1);
  EXPECT_THAT(job.error_message, HasSubstr("device lost"));
}

// Every lease has an id of its own: 32 lowercase hex digits, new also when the same attempt is
// leased again.
TEST_F(SchedulerTest, EveryLeaseHasANewId) {
  std::string id = Create();
  Lease first = LeaseOne("w1");
  EXPECT_THAT(first.lease_id, ::testing::MatchesRegex("[0-9a-f]{32}"));
  ASSERT_TRUE(scheduler_->ReturnLease(id, first.attempt, {"w1", first.lease_id}).ok());
  Lease second = LeaseOne("w1");
  EXPECT_EQ(second.attempt, first.attempt);
  EXPECT_THAT(second.lease_id, ::testing::MatchesRegex("[0-9a-f]{32}"));
  EXPECT_NE(second.lease_id, first.lease_id);
  Create();
  EXPECT_NE(LeaseOne("w1").lease_id, second.lease_id);
}

// A lease returned (its LeaseJob answer could not be sent) and given again to the same worker id
// carries the same attempt number: the first lease's calls are fenced off by its lease id, the
// new lease's calls work, and calls without a lease id (older agents) are fenced as before, by
// attempt and worker id.
TEST_F(SchedulerTest, ReturnedLeaseGivenAgainFencesOffTheFirstLease) {
  std::string id = Create();
  Lease first = LeaseOne("w1");
  ASSERT_TRUE(scheduler_->ReturnLease(id, first.attempt, {"w1", first.lease_id}).ok());
  Lease second = LeaseOne("w1");
  ASSERT_EQ(second.job_id, id);
  ASSERT_EQ(second.attempt, first.attempt);
  ExpectFencedOff(id, first.attempt, {"w1", first.lease_id});
  ExpectHolds(id, second.attempt, {"w1"});
  EXPECT_EQ(scheduler_->Heartbeat(id, second.attempt, {"w2"}).status().code(),
            absl::StatusCode::kAborted);
  ExpectHolds(id, second.attempt, {"w1", second.lease_id}, /*complete=*/true);
}

// The same for a lease handed back by a worker that was stopping (CompleteAttempt with
// `stopping`): a call of the first lease still on its way (a retried completion, a late event)
// cannot touch the attempt that replaced it.
TEST_F(SchedulerTest, AttemptHandedBackWhileStoppingFencesOffItsLease) {
  std::string id = Create();
  Lease first = LeaseOne("w1");
  AttemptResult stopped = RetryableFailure();
  stopped.stopping = true;
  ASSERT_TRUE(scheduler_->CompleteAttempt(id, first.attempt, {"w1", first.lease_id}, stopped).ok());
  ASSERT_EQ(Get(id).state, JobState::kQueued);
  Lease second = LeaseOne("w1");
  ASSERT_EQ(second.job_id, id);
  ASSERT_EQ(second.attempt, first.attempt);
  ExpectFencedOff(id, first.attempt, {"w1", first.lease_id});
  // The stopping completion, sent again because its answer was lost, is answered as the first
  // was and does not requeue the job.
  const size_t events = Events(id).size();
  EXPECT_TRUE(scheduler_->CompleteAttempt(id, first.attempt, {"w1", first.lease_id}, stopped).ok());
  EXPECT_EQ(Get(id).state, JobState::kRunning);
  EXPECT_EQ(Events(id).size(), events);
  ExpectHolds(id, second.attempt, {"w1", second.lease_id});
  ExpectHolds(id, second.attempt, {"w1"}, /*complete=*/true);
}

// A completion sent again because its answer was lost (the worker retries CompleteAttempt) is
// answered OK, as the first was, and records nothing; a completion of the same lease that says
// something else, or of another lease, worker or attempt, is still ABORTED.
TEST_F(SchedulerTest, RepeatedCompletionIsAnsweredOkAndRecordedOnce) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  const LeaseHolder holder{"w1", lease.lease_id};
  const AttemptResult success = Success(R"({"top1":0.91})");
  ASSERT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, holder, success).ok());
  const Job done = Get(id);
  const size_t events = Events(id).size();
  ASSERT_EQ(done.state, JobState::kSucceeded);

  clock_.Advance(absl::Minutes(5));
  EXPECT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, holder, success).ok());
  EXPECT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, holder, success).ok());
  EXPECT_EQ(Events(id).size(), events);
  EXPECT_EQ(Get(id).end_time, done.end_time);
  EXPECT_EQ(MetricValue("compressd_jobs_finished_total", "SUCCEEDED"), 1);

  ExpectOtherCompletionsAborted(id, lease.attempt, holder, success);
  // Other calls of the finished lease are refused as before.
  EXPECT_EQ(scheduler_->Heartbeat(id, lease.attempt, holder).status().code(),
            absl::StatusCode::kAborted);
  // An agent without lease ids is matched by attempt and worker.
  EXPECT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, {"w1"}, success).ok());
  EXPECT_EQ(Events(id).size(), events);
  EXPECT_EQ(Get(id).report_json, R"({"top1":0.91})");

  // Remembered for kCompletionMemory, then forgotten.
  clock_.Advance(Scheduler::kCompletionMemory);
  scheduler_->ProcessTimeouts();
  EXPECT_EQ(scheduler_->CompleteAttempt(id, lease.attempt, holder, success).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(Events(id).size(), events);
}

// A retryable failure repeated after the job was requeued, and after it was leased again, is
// answered OK and neither requeues the job again nor touches the new attempt; once the new
// attempt completed, the first one's completion is no longer the job's last and is ABORTED.
TEST_F(SchedulerTest, RepeatedRetryableFailureDoesNotRequeueAgain) {
  std::string id = Create();
  Lease first = LeaseOne("w1");
  const AttemptResult crash = Crash();
  ASSERT_TRUE(scheduler_->CompleteAttempt(id, first.attempt, {"w1", first.lease_id}, crash).ok());
  size_t events = Events(id).size();
  ASSERT_EQ(Get(id).state, JobState::kQueued);
  EXPECT_TRUE(scheduler_->CompleteAttempt(id, first.attempt, {"w1", first.lease_id}, crash).ok());
  EXPECT_EQ(Events(id).size(), events);
  EXPECT_EQ(Get(id).state, JobState::kQueued);
  EXPECT_EQ(Get(id).attempt_count, 1);

  Lease second = LeaseOne("w1");
  ASSERT_EQ(second.attempt, 2);
  events = Events(id).size();
  EXPECT_TRUE(scheduler_->CompleteAttempt(id, first.attempt, {"w1", first.lease_id}, crash).ok());
  EXPECT_EQ(Events(id).size(), events);
  EXPECT_EQ(Get(id).state, JobState::kRunning);
  EXPECT_TRUE(scheduler_->Heartbeat(id, second.attempt, {"w1", second.lease_id}).ok());

  const AttemptResult success = Success();
  ASSERT_TRUE(
      scheduler_->CompleteAttempt(id, second.attempt, {"w1", second.lease_id}, success).ok());
  EXPECT_EQ(scheduler_->CompleteAttempt(id, first.attempt, {"w1", first.lease_id}, crash).code(),
            absl::StatusCode::kAborted);
  EXPECT_TRUE(
      scheduler_->CompleteAttempt(id, second.attempt, {"w1", second.lease_id}, success).ok());
  EXPECT_EQ(Get(id).state, JobState::kSucceeded);
}

// The last completion is stored with the job: after a restart of compressd, the same completion
// sent again (the worker's retry of a call whose answer was lost with the old process) is still
// answered OK and recorded once, within kCompletionMemory of when it was first recorded; any
// other completion of the ended lease is still ABORTED.
TEST_F(SchedulerTest, RepeatedCompletionIsRecognisedAfterARestart) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  const LeaseHolder holder{"w1", lease.lease_id};
  const AttemptResult success = Success(R"({"top1":0.91})");
  ASSERT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, holder, success).ok());
  const Job done = Get(id);
  const size_t events = Events(id).size();
  ASSERT_EQ(done.state, JobState::kSucceeded);

  clock_.Advance(absl::Minutes(5));
  Restart();
  EXPECT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, holder, success).ok());
  EXPECT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, {"w1"}, success).ok());
  EXPECT_EQ(Events(id).size(), events);
  EXPECT_EQ(Get(id).state, JobState::kSucceeded);
  EXPECT_EQ(Get(id).end_time, done.end_time);
  EXPECT_EQ(Get(id).report_json, R"({"top1":0.91})");

  ExpectOtherCompletionsAborted(id, lease.attempt, holder, success);
  EXPECT_EQ(Events(id).size(), events);

  // A second restart keeps it too; the window still counts from the first recording.
  clock_.Advance(absl::Minutes(5));
  Restart();
  EXPECT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, holder, success).ok());
  clock_.Advance(Scheduler::kCompletionMemory - absl::Minutes(10));
  scheduler_->ProcessTimeouts();
  EXPECT_EQ(scheduler_->CompleteAttempt(id, lease.attempt, holder, success).code(),
            absl::StatusCode::kAborted);
  // Nor does a restart past the window bring it back.
  Restart();
  EXPECT_EQ(scheduler_->CompleteAttempt(id, lease.attempt, holder, success).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(Events(id).size(), events);
}

// A retryable failure repeated after a restart does not requeue the job again, nor count another
// attempt; the job's next lease is attempt 2 as without the repeat.
TEST_F(SchedulerTest, RepeatedRetryableFailureAfterARestartDoesNotRequeueAgain) {
  std::string id = Create();
  Lease first = LeaseOne("w1");
  const AttemptResult crash = Crash();
  ASSERT_TRUE(scheduler_->CompleteAttempt(id, first.attempt, {"w1", first.lease_id}, crash).ok());
  const size_t events = Events(id).size();
  Restart();
  EXPECT_TRUE(scheduler_->CompleteAttempt(id, first.attempt, {"w1", first.lease_id}, crash).ok());
  EXPECT_EQ(Events(id).size(), events);
  EXPECT_EQ(Get(id).state, JobState::kQueued);
  EXPECT_EQ(Get(id).attempt_count, 1);
  EXPECT_EQ(LeaseOne("w1").attempt, 2);
}

// The age of a stored completion is its wall time's: one recorded "later" than the restarted
// process's wall clock (the clock was set back) counts as recorded at the restart.
TEST_F(SchedulerTest, CompletionStoredAheadOfTheWallClockIsRememberedFromTheRestart) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  const AttemptResult success = Success();
  ASSERT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, {"w1", lease.lease_id}, success).ok());
  clock_.StepWallClock(-absl::Hours(1));
  Restart();
  EXPECT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, {"w1", lease.lease_id}, success).ok());
  clock_.Advance(Scheduler::kCompletionMemory);
  scheduler_->ProcessTimeouts();
  EXPECT_EQ(scheduler_->CompleteAttempt(id, lease.attempt, {"w1", lease.lease_id}, success).code(),
            absl::StatusCode::kAborted);
}

// A completion whose store write failed recorded nothing: sent again, it is the first to be
// recorded.
TEST_F(SchedulerTest, CompletionThatCouldNotBeWrittenIsNotRemembered) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  const AttemptResult success = Success();
  FailingJobWrites failing(dir_.File("jobs.db"));
  failing.Start();
  EXPECT_FALSE(
      scheduler_->CompleteAttempt(id, lease.attempt, {"w1", lease.lease_id}, success).ok());
  failing.Stop();
  EXPECT_EQ(Get(id).state, JobState::kRunning);
  ASSERT_TRUE(scheduler_->CompleteAttempt(id, lease.attempt, {"w1", lease.lease_id}, success).ok());
  EXPECT_EQ(Get(id).state, JobState::kSucceeded);
}

// The messages of the job's log events, in order.
std::vector<std::string> LogMessages(const std::vector<JobEvent>& events) {
  std::vector<std::string> messages;
  for (const JobEvent& event : events) {
    if (event.kind != EventKind::kLog) continue;
    messages.push_back(nlohmann::json::parse(event.payload_json).value("message", ""));
  }
  return messages;
}

// Numbered ReportEvents requests store each line once: a retry stores nothing, a request that
// overlaps what is stored stores only its new lines, a gap is stored as sent. The count comes
// from the store (it survives a restart) and starts again with every attempt.
TEST_F(SchedulerTest, NumberedEventLinesAreStoredOnce) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  for (int64_t out_of_range : {int64_t{-1}, std::numeric_limits<int64_t>::max()}) {
    EXPECT_EQ(scheduler_->ReportEvents(id, lease.attempt, {"w1"}, NumberedLines(1, 3), out_of_range)
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument)
        << out_of_range;
  }
  ASSERT_TRUE(scheduler_->ReportEvents(id, lease.attempt, {"w1"}, NumberedLines(1, 3), 1).ok());
  ASSERT_TRUE(scheduler_->ReportEvents(id, lease.attempt, {"w1"}, NumberedLines(1, 3), 1).ok());
  EXPECT_THAT(LogMessages(Events(id)), ::testing::ElementsAre("line 1", "line 2", "line 3"));
  ASSERT_TRUE(scheduler_->ReportEvents(id, lease.attempt, {"w1"}, NumberedLines(2, 5), 2).ok());
  EXPECT_THAT(LogMessages(Events(id)),
              ::testing::ElementsAre("line 1", "line 2", "line 3", "line 4", "line 5"));
  ASSERT_TRUE(scheduler_->ReportEvents(id, lease.attempt, {"w1"}, NumberedLines(8, 8), 8).ok());
  ASSERT_TRUE(scheduler_->ReportEvents(id, lease.attempt, {"w1"}, NumberedLines(6, 8), 6).ok());
  EXPECT_THAT(LogMessages(Events(id)),
              ::testing::ElementsAre("line 1", "line 2", "line 3", "line 4", "line 5", "line 8"));
  EXPECT_EQ(Get(id).attempt_lines, 8);
  EXPECT_EQ(scheduler_->ReportEvents(id, lease.attempt, {"w1"}, {}, -1).status().code(),
            absl::StatusCode::kInvalidArgument);

  Restart();
  EXPECT_EQ(Get(id).attempt_lines, 8);
  Lease next = LeaseOne("w2");
  EXPECT_EQ(next.attempt, 2);
  EXPECT_EQ(Get(id).attempt_lines, 0);
  ASSERT_TRUE(scheduler_->ReportEvents(id, next.attempt, {"w2"}, NumberedLines(1, 1), 1).ok());
  EXPECT_EQ(LogMessages(Events(id)).back(), "line 1");
  EXPECT_EQ(LogMessages(Events(id)).size(), 7u);
}

// Unnumbered requests (first_line 0) are appended as sent, a repeat included.
TEST_F(SchedulerTest, UnnumberedEventLinesAreAppended) {
  std::string id = Create();
  Lease lease = LeaseOne("w1");
  ASSERT_TRUE(scheduler_->ReportEvents(id, lease.attempt, {"w1"}, NumberedLines(1, 2)).ok());
  ASSERT_TRUE(scheduler_->ReportEvents(id, lease.attempt, {"w1"}, NumberedLines(1, 2), 0).ok());
  EXPECT_THAT(LogMessages(Events(id)),
              ::testing::ElementsAre("line 1", "line 2", "line 1", "line 2"));
}

}  // namespace
}  // namespace compress::server
