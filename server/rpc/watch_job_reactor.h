// WatchJobReactor: the server stream of WatchJob.
#ifndef COMPRESS_SERVER_RPC_WATCH_JOB_REACTOR_H_
#define COMPRESS_SERVER_RPC_WATCH_JOB_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "compress/v1/compression_service.pb.h"
#include "server/core/job.h"
#include "server/core/scheduler.h"
#include "server/rpc/thread_pool.h"

namespace compress::server {

// Streams the stored events of a job after a sequence number, then follows new ones as the
// scheduler announces them (JobNotifier), and finishes OK once the job has finished and every
// event was sent. When the server shuts down, a watch of an unfinished job finishes UNAVAILABLE
// once it has sent every stored event, so that the client resumes it (after_sequence) later. Reads
// from the store run on the thread pool; gRPC's threads only start writes. At most one store read
// or one write is in flight at a time ("busy").
//
// A watch that is up to date takes new events from the notification itself (JobUpdate) when they
// follow the last event it has, so a thousand watchers of a running job cost no store reads per
// event; a notification it cannot use that way (a gap, no events, another order than the commits)
// is remembered ("dirty") and answered with a store read, so no event is missed, none is sent
// twice, and no thread waits. Deletes itself in OnDone, after unsubscribing.
class WatchJobReactor : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  // `scheduler` and `pool` must outlive the call. With `tenant` set, a job of another tenant
  // is NOT_FOUND.
  WatchJobReactor(Scheduler* scheduler, ThreadPool* pool, std::string job_id,
                  int64_t after_sequence, std::optional<std::string> tenant = std::nullopt);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  // Events read per store query, and the most events a watch keeps queued for sending.
  static constexpr int kBatch = 256;

  // Whether the events of a notification are queued as they are: they follow the newest event
  // queued or sent (`last_read`), and they fit in kBatch with the `queued` events waiting to be
  // sent. When not, the watch reads them from the store later.
  static bool QueuesNotified(int64_t last_read, size_t queued, const std::vector<JobEvent>& events);
  // Appends the events of a store read (in sequence order) that follow `*last_read` to
  // `*pending` while it holds fewer than kBatch, and advances `*last_read` to the last one
  // appended. Returns false when some were left out, for a later read.
  static bool QueueStored(std::vector<JobEvent> events, int64_t* last_read,
                          std::deque<JobEvent>* pending);

 private:
  void OnNotify(const JobUpdate* update);
  // Runs on the pool while busy_: writes pending_.front() (queued by OnNotify), or finishes a
  // cancelled call.
  void SendPending();
  // Runs on the pool while busy_: reads the next events and writes the first, or goes idle, or
  // finishes the call.
  void Fetch();
  // Writes pending_.front(). Requires busy_ and a non-empty pending_.
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the call finished; true when it was not already (the caller then calls Finish,
  // without holding mu_).
  bool ClaimFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  Scheduler* const scheduler_;
  ThreadPool* const pool_;
  const std::string job_id_;
  const std::optional<std::string> tenant_;
  int64_t token_ = 0;  // set in the constructor, read in OnDone

  absl::Mutex mu_;
  // Sequence of the newest event queued for sending (from the store or a notification).
  int64_t last_read_ ABSL_GUARDED_BY(mu_);
  // Whether the last store read found every stored event (fewer than kBatch); when not, the
  // store is read again once the queue is sent.
  bool caught_up_ ABSL_GUARDED_BY(mu_) = false;
  // The job finished or the server is stopping (as a notification or a store read said): read
  // the store once more, after what is queued was sent, to end the call.
  bool finish_seen_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<JobEvent> pending_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // The message being written; only touched by whoever holds busy_.
  v1::JobEvent message_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_WATCH_JOB_REACTOR_H_
