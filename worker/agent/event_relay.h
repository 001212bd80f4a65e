// EventRelay: sends the executor's event lines to the server, in order, numbered, batched, from
// its own thread, retrying with backoff while the server is away. A line over the relay's bound
// is cut (BoundEventLine) so that no request can exceed the server's message limit.
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

// `text` if it has at most `max_bytes` bytes; otherwise its beginning, cut at a UTF-8 character
// boundary, followed by a note saying how long it was, `max_bytes` bytes at most in all.
std::string CutText(std::string text, size_t max_bytes);

// `line` if it has at most `max_bytes` bytes; otherwise a well-formed event line of at most
// `max_bytes` bytes (for `max_bytes` of a few KiB or more) saying that it was cut: a `log` or
// `error` event keeps its type, level or code, and the beginning of its message; any other line
// becomes a `warning` log event carrying the beginning of the line's text.
std::string BoundEventLine(std::string line, size_t max_bytes);

// Thread-safety: every public method may be called from any thread. Lines are sent in the order
// Add() received them, each exactly once unless the relay failed (then none is sent after the
// failure), and numbered 1, 2, ... in that order: every ReportEvents request carries the number
// of its first line (first_line), and a retried request the numbers it had, so that the server
// can skip lines it already has. A line the server refuses as larger than its message limit is
// replaced by a short `log` line under the same number. Invariants: a line leaves `pending_`
// only after the server acknowledged its batch (or the relay was abandoned); the front of
// `pending_` is line number `sent_` + 1; `pending_bytes_` is the sum of the sizes in `pending_`.
class EventRelay {
 public:
  // The default bound on the bytes of lines queued and not yet acknowledged
  // (Options::max_pending_bytes).
  static constexpr size_t kMaxPendingBytes = size_t{64} << 20;

  struct Options {
    // Most lines, and most bytes, in one ReportEvents call. After the server refused a batch as
    // larger than its message limit, batches hold at most half that batch's bytes.
    int max_batch_lines = 256;
    size_t max_batch_bytes = 1 << 20;
    // A longer line is cut to this many bytes (BoundEventLine): well below compressd's message
    // limit (--max_message_bytes, 4 MiB by default), so that one line cannot make a request the
    // server refuses.
    size_t max_line_bytes = 256 << 10;
    // Deadline of each call.
    absl::Duration rpc_timeout = absl::Seconds(10);
    // Backoff between tries after a transient failure.
    absl::Duration initial_backoff = absl::Milliseconds(200);
    absl::Duration max_backoff = absl::Seconds(5);
    // Most bytes of lines queued and not yet acknowledged (while the server is away, say). Add()
    // blocks while the queue holds this much: the caller stops reading the executor's stdout, the
    // pipe fills and the executor's writes wait, instead of the agent's memory growing without
    // bound. One line is always admitted into an empty queue.
    size_t max_pending_bytes = kMaxPendingBytes;
    // A batch the server answers INTERNAL or UNKNOWN (its own error, which may recur for these
    // lines every time) is tried at most this many times; then the relay fails with that code.
    // UNAVAILABLE and the like (the server is away or busy) are retried without such a bound.
    int server_error_tries = 10;
  };

  // Called from the relay's thread when the server says the job's cancellation was requested.
  using CancelCallback = std::function<void()>;
  // Called from the relay's thread once when the relay gives up: the attempt is gone (ABORTED,
  // NOT_FOUND, FAILED_PRECONDITION), the server refused a batch (other than as too large, and
  // INTERNAL or UNKNOWN only after Options::server_error_tries answers), or the give-up time
  // passed. Not called after Abandon().
  using FailureCallback = std::function<void(const absl::Status&)>;

  // `stub` is not owned and must outlive the relay. Starts the relay's thread.
  EventRelay(compress::v1::WorkerService::StubInterface* stub, AttemptKey key,
             const Options& options, CancelCallback on_cancel, FailureCallback on_failure);
  // Stops the thread; lines not yet sent are dropped (call Flush() first to send them).
  ~EventRelay();

  // Queues one line, cut to Options::max_line_bytes. Blocks while the queue holds
  // Options::max_pending_bytes (until the server takes lines, the relay fails, it is abandoned or
  // destroyed). Once the relay failed or was abandoned, drops the line and returns at once.
  void Add(std::string event_json);

  // Blocks until every line added so far was sent, or the relay failed; returns OK or the
  // failure.
  absl::Status Flush();

  // From now on, stop retrying transient failures at `deadline` and fail instead. Used when the
  // agent shuts down and must not wait for a server that is gone.
  void GiveUpAt(absl::Time deadline);

  // The attempt is gone (its lease was lost): drops the queued lines, sends no more, releases a
  // blocked Add() and makes Flush() return `why`. The failure callback is not called.
  void Abandon(const absl::Status& why);

  // Lines acknowledged by the server so far.
  int64_t sent() const;

 private:
  void Loop();
  // The server refused `request` as larger than its message limit: sends smaller batches from now
  // on, or, for a batch of one line, replaces that line with a short note. False when even that
  // cannot help (the refused line was already short).
  bool ShrinkRefused(const compress::v1::ReportEventsRequest& request, const grpc::Status& status);

  compress::v1::WorkerService::StubInterface* const stub_;
  const AttemptKey key_;
  const Options options_;
  const CancelCallback on_cancel_;
  const FailureCallback on_failure_;

  mutable absl::Mutex mu_;
  std::deque<std::string> pending_ ABSL_GUARDED_BY(mu_);
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // When Add() last said that it waits on a full queue (at most once a minute).
  absl::Time last_full_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int64_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  absl::Time give_up_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();

  // Owned by the relay's thread.
  size_t batch_bytes_ = 0;  // the current most bytes in one batch

  std::thread thread_;
};

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_EVENT_RELAY_H_
