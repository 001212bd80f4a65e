#include "server/rpc/watch_job_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/rpc/proto_convert.h"
#include "server/rpc/status_util.h"

namespace compress::server {

WatchJobReactor::WatchJobReactor(Scheduler* scheduler, ThreadPool* pool, std::string job_id,
                                 int64_t after_sequence, std::optional<std::string> tenant)
    : scheduler_(scheduler),
      pool_(pool),
      job_id_(std::move(job_id)),
      tenant_(std::move(tenant)),
      last_read_(after_sequence) {
  // Busy from the start: a notification that arrives before the first read only marks the
  // reactor dirty. Subscribe before the first read, so no event committed after it goes unseen.
  {
    absl::MutexLock lock(&mu_);
    busy_ = true;
  }
  token_ = scheduler_->notifier().Subscribe(job_id_,
                                            [this](const JobUpdate* update) { OnNotify(update); });
  pool_->Schedule([this] { Fetch(); });
}

bool WatchJobReactor::QueuesNotified(int64_t last_read, size_t queued,
                                     const std::vector<JobEvent>& events) {
  return !events.empty() && events.front().sequence == last_read + 1 &&
         queued + events.size() <= static_cast<size_t>(kBatch);
}

bool WatchJobReactor::QueueStored(std::vector<JobEvent> events, int64_t* last_read,
                                  std::deque<JobEvent>* pending) {
  for (JobEvent& event : events) {
    if (event.sequence <= *last_read) continue;
    if (pending->size() >= static_cast<size_t>(kBatch)) return false;
    *last_read = event.sequence;
    pending->push_back(std::move(event));
  }
  return true;
}

bool WatchJobReactor::ClaimFinishLocked() {
  if (finished_) return false;
  finished_ = true;
  return true;
}

void WatchJobReactor::OnNotify(const JobUpdate* update) {
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  // Events that follow the last one queued are taken as they are; their order and completeness
  // hold by their sequence numbers, whatever order notifications arrive in. A watch whose client
  // lags keeps at most kBatch events queued; what does not fit is read later.
  if (update == nullptr || !QueuesNotified(last_read_, pending_.size(), update->events)) {
    dirty_ = true;
  } else {
    for (const JobEvent& event : update->events) pending_.push_back(event);
    last_read_ = update->events.back().sequence;
    if (update->state.has_value() && IsFinished(*update->state)) finish_seen_ = true;
  }
  if (busy_) return;
  busy_ = true;
  // The write (or read) starts on the pool, so that the thread that committed the change, which
  // notifies every watcher of the job, only queues work.
  if (!pending_.empty()) {
    pool_->Schedule([this] { SendPending(); });
  } else {
    pool_->Schedule([this] { Fetch(); });
  }
}

void WatchJobReactor::SendPending() {
  {
    absl::MutexLock lock(&mu_);
    if (!cancelled_) {
      // Only the holder of busy_ takes from pending_, so it still holds what OnNotify queued.
      WriteNextLocked();
      return;
    }
    if (!ClaimFinishLocked()) return;
  }
  Finish(grpc::Status::CANCELLED);
}

void WatchJobReactor::Fetch() {
  int64_t after = 0;
  bool cancelled = false;
  bool finish = false;
  {
    absl::MutexLock lock(&mu_);
    cancelled = cancelled_;
    if (cancelled) {
      finish = ClaimFinishLocked();
    } else {
      dirty_ = false;
      after = last_read_;
    }
  }
  if (cancelled) {
    if (finish) Finish(grpc::Status::CANCELLED);
    return;
  }
  // The job's state is read before its events: its final state change is committed with the
  // state, so a finished job with no events after `after` has had every event sent.
  absl::StatusOr<Job> job = scheduler_->store().GetJob(job_id_);
  if (job.ok() && tenant_.has_value() && job->tenant != *tenant_) {
    job = absl::NotFoundError(absl::StrCat("job '", job_id_, "' not found"));
  }
  absl::StatusOr<std::vector<JobEvent>> events =
      job.ok() ? scheduler_->store().ListEvents(job_id_, after, kBatch) : job.status();
  // Read after the events: Shutdown() sets the flag before it notifies, so a reactor that saw
  // it unset is notified (dirty_) and reads again.
  const bool shutting_down = scheduler_->ShuttingDown();
  grpc::Status finish_status;
  {
    absl::MutexLock lock(&mu_);
    if (events.ok()) {
      const bool read_all = static_cast<int>(events->size()) < kBatch;
      // Once what is queued is sent, the store decides how the call ends.
      if (IsFinished(job->state) || shutting_down) finish_seen_ = true;
      // Notifications may have queued some of these meanwhile, and more after them: the queue
      // keeps at most kBatch, and what is left out is read again once it is sent.
      const bool queued_all = QueueStored(*std::move(events), &last_read_, &pending_);
      caught_up_ = read_all && queued_all;
    }
    if (!events.ok()) {
      finish_status = ToGrpcStatus(events.status());
    } else if (!pending_.empty()) {
      WriteNextLocked();
      return;
    } else if (IsFinished(job->state)) {
      finish_status = grpc::Status::OK;
    } else if (shutting_down) {
      finish_status = grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          // Every event up to last_read_ was sent (nothing is pending), some perhaps from
          // notifications that arrived during the read.
          absl::StrCat("compressd is shutting down; watch again with after_sequence ", last_read_));
    } else if (dirty_ && !cancelled_) {
      dirty_ = false;
      pool_->Schedule([this] { Fetch(); });
      return;
    } else if (cancelled_) {
      finish_status = grpc::Status::CANCELLED;
    } else {
      busy_ = false;
      return;
    }
    if (!ClaimFinishLocked()) return;
  }
  Finish(finish_status);
}

void WatchJobReactor::WriteNextLocked() {
  EventToProto(pending_.front(), &message_);
  pending_.pop_front();
  StartWrite(&message_);
}

void WatchJobReactor::OnWriteDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    if (ok && !cancelled_) {
      if (!pending_.empty()) {
        WriteNextLocked();
      } else if (dirty_ || !caught_up_ || finish_seen_) {
        // More may be stored than was queued, or the call may be over: read the store.
        pool_->Schedule([this] { Fetch(); });
      } else {
        // Up to date: the next notification wakes the watch.
        busy_ = false;
      }
      return;
    }
    if (!ClaimFinishLocked()) return;
  }
  Finish(grpc::Status::CANCELLED);
}

void WatchJobReactor::OnCancel() {
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    // A busy reactor finishes when its read or write completes.
    if (busy_ || !ClaimFinishLocked()) return;
  }
  Finish(grpc::Status::CANCELLED);
}

void WatchJobReactor::OnDone() {
  scheduler_->notifier().Unsubscribe(token_);
  delete this;
}

}  // namespace compress::server
