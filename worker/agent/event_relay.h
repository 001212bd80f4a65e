// EventRelay: sends the executor's event lines to the server, in order, batched, from its own
// thread, retrying with backoff while the server is away.
#ifndef COMPRESS_WORKER_AGENT_EVENT_RELAY_H_
#define COMPRESS_WORKER_AGENT_EVENT_RELAY_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "compress/v1/worker_service.grpc.pb.h"
#include "worker/agent/rpc_retry.h"

namespace compress::worker {

// Thread-safety: every public method may be called from any thread. Lines are sent in the order
// Add() received them, each exactly once unless the relay failed (then none is sent after the
// failure). Invariant: a line leaves `pending_` only after the server acknowledged its batch.
class EventRelay {
 public:
  struct Options {
    // Most lines, and most bytes, in one ReportEvents call.
    int max_batch_lines = 256;
    size_t max_batch_bytes = 1 << 20;
    // Deadline of each call.
    absl::Duration rpc_timeout = absl::Seconds(10);
    // Backoff between tries after a transient failure.
    absl::Duration initial_backoff = absl::Milliseconds(200);
    absl::Duration max_backoff = absl::Seconds(5);
  };

  // Called from the relay's thread when the server says the job's cancellation was requested.
  using CancelCallback = std::function<void()>;
  // Called from the relay's thread once when the relay gives up: the attempt is gone (ABORTED,
  // NOT_FOUND, FAILED_PRECONDITION), the server refused a batch, or the give-up time passed.
  using FailureCallback = std::function<void(const absl::Status&)>;

  // `stub` is not owned and must outlive the relay. Starts the relay's thread.
  EventRelay(compress::v1::WorkerService::StubInterface* stub, AttemptKey key,
             const Options& options, CancelCallback on_cancel, FailureCallback on_failure);
  // Stops the thread; lines not yet sent are dropped (call Flush() first to send them).
  ~EventRelay();

  void Add(std::string event_json);

  // Blocks until every line added so far was sent, or the relay failed; returns OK or the
  // failure.
  absl::Status Flush();

  // From now on, stop retrying transient failures at `deadline` and fail instead. Used when the
  // agent shuts down and must not wait for a server that is gone.
  void GiveUpAt(absl::Time deadline);

  // Lines acknowledged by the server so far.
  int64_t sent() const;

 private:
  void Loop();

  compress::v1::WorkerService::StubInterface* const stub_;
  const AttemptKey key_;
  const Options options_;
  const CancelCallback on_cancel_;
  const FailureCallback on_failure_;

  mutable absl::Mutex mu_;
  std::deque<std::string> pending_ ABSL_GUARDED_BY(mu_);
  int64_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  absl::Time give_up_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();

  std::thread thread_;
};

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_EVENT_RELAY_H_
