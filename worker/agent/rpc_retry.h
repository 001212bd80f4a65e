// Retry policy of the agent's calls to the server: which failures are worth another try, and
// the exponential backoff between tries.
#ifndef COMPRESS_WORKER_AGENT_RPC_RETRY_H_
#define COMPRESS_WORKER_AGENT_RPC_RETRY_H_

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/server_cancels.h"
#include "grpcpp/support/status.h"

namespace compress::worker {

// Names one attempt of one job, as every WorkerService call about it does.
struct AttemptKey {
  std::string worker_id;
  std::string job;  // "jobs/{job_id}"
  int attempt = 0;
  // The lease's lease_id: a lease handed back and given again keeps its attempt number, so the
  // server tells this lease's calls from those of the next one by it.
  std::string lease_id;

  // Names the attempt in `request` (a HeartbeatRequest, ReportEventsRequest,
  // UploadArtifactRequest.Header or CompleteAttemptRequest).
  template <typename Request>
  void SetOn(Request& request) const {
    request.set_worker_id(worker_id);
    request.set_job(job);
    request.set_attempt(attempt);
    request.set_lease_id(lease_id);
  }
};

// The request was larger than the receiver's message limit (gRPC's own RESOURCE_EXHAUSTED,
// "Received message larger than max (N vs. M)"): sending it again cannot help. Other
// RESOURCE_EXHAUSTED answers (the server's disk is full) are transient.
inline bool IsMessageTooLarge(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
         absl::StrContains(status.error_message(), "larger than max");
}

// The server failed the call with an error of its own (INTERNAL, UNKNOWN; gRPC also reports some
// transport faults so): it may pass, or recur for the same request every time.
inline bool IsServerError(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::INTERNAL ||
         status.error_code() == grpc::StatusCode::UNKNOWN;
}

// The server is away or busy: try again later. A request larger than the receiver's message
// limit is not transient. Server errors (IsServerError) count as transient, but every caller
// bounds its tries of them (by time, or by count).
inline bool IsTransient(const grpc::Status& status) {
  if (IsServerError(status)) return true;
  switch (status.error_code()) {
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return !IsMessageTooLarge(status);
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return true;
    default:
      return false;
  }
}

// The call ended CANCELLED although this agent did not cancel it (`cancelled_here` false): the
// server did. compressd cancels a file transfer (UploadArtifact, ReadBlob) that moved nothing for
// its --file_stream_idle_timeout (a slow disk, a paused VM), and the calls still open when its
// shutdown grace has passed; gRPC tells the peer plain CANCELLED. Such a transfer is worth another
// try, like one that met UNAVAILABLE. The agent's own cancels (a cancelled job, a lost lease, a
// shutdown) are never retried.
inline bool IsCancelledByServer(const grpc::Status& status, bool cancelled_here) {
  return status.error_code() == grpc::StatusCode::CANCELLED && !cancelled_here;
}

// How many tries of one transfer the server may cancel (IsCancelledByServer) before the agent
// gives up on it: the bound compressctl download keeps too (client/server_cancels.h).
using client::kMaxServerCancels;

// What a transfer given up after `status` returns, its message prefixed with `what`. A try the
// server cancelled is UNAVAILABLE: CANCELLED stands for the agent's own stops, which end an
// attempt (and, before its executor started, the job) for good.
inline absl::Status TransferFailure(const grpc::Status& status, bool cancelled_here,
                                    absl::string_view what) {
  if (IsCancelledByServer(status, cancelled_here)) {
    return absl::UnavailableError(
        absl::StrCat(what, ": cancelled by the server (", status.error_message(), ")"));
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

// The server no longer considers this attempt current (its lease was taken over, or the job is
// gone): the attempt must be dropped.
inline bool IsAttemptGone(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::ABORTED ||
         status.error_code() == grpc::StatusCode::NOT_FOUND ||
         status.error_code() == grpc::StatusCode::FAILED_PRECONDITION;
}

inline absl::Status ToAbslStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

// Exponential backoff: initial, 2x initial, ... capped at max. Not thread-safe.
class Backoff {
 public:
  Backoff(absl::Duration initial, absl::Duration max) : initial_(initial), max_(max) {}
  // The delay before the next try.
  absl::Duration Next() {
    absl::Duration delay = next_ == absl::ZeroDuration() ? initial_ : next_;
    next_ = std::min(delay * 2, max_);
    return delay;
  }
  void Reset() { next_ = absl::ZeroDuration(); }

 private:
  const absl::Duration initial_;
  const absl::Duration max_;
  absl::Duration next_ = absl::ZeroDuration();
};

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_RPC_RETRY_H_
