#include "worker/agent/event_relay.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "worker/agent/log.h"
#include "worker/events/event.h"

namespace compress::worker {
namespace {

// The longest prefix of `text` of at most `max_bytes` bytes that does not end inside a UTF-8
// character (protobuf strings and JSON must stay valid UTF-8).
absl::string_view Utf8Prefix(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t keep = max_bytes;
  while (keep > 0 && (static_cast<unsigned char>(text[keep]) & 0xC0) == 0x80) --keep;
  return text.substr(0, keep);
}

// A line the server refused as too large is replaced by a note, which is never this long.
constexpr size_t kMaxNoteBytes = 4096;

}  // namespace

std::string CutText(std::string text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  std::string note = absl::StrCat(" [cut: ", text.size(), " bytes in all]");
  if (note.size() > max_bytes) note.clear();
  std::string cut(Utf8Prefix(text, max_bytes - note.size()));
  return cut + note;
}

std::string BoundEventLine(std::string line, size_t max_bytes) {
  if (line.size() <= max_bytes) return line;
  const size_t size = line.size();
  absl::StatusOr<events::Event> parsed = events::Parse(line);
  events::Event bounded = events::Log("warning", "");
  std::string what = "a line that is not an event";
  std::string text;
  if (parsed.ok()) {
    what = absl::StrCat("a ", events::EventTypeName(parsed->type), " event");
    bounded.time = parsed->time;
    // A log or error line keeps its type (an error line still ends a failed run), unless its
    // level or code is itself what is too long.
    bool keeps_type =
        (parsed->type == events::EventType::kLog || parsed->type == events::EventType::kError) &&
        parsed->level.size() + parsed->code.size() <= 64;
    if (keeps_type) {
      bounded.type = parsed->type;
      bounded.level = parsed->level;
      bounded.code = parsed->code;
      text = std::move(parsed->message);
    }
  }
  if (text.empty()) text = std::move(line);
  const std::string note = absl::StrCat(" [cut by compress-worker: ", what, " of ", size,
                                        " bytes, over its bound of ", max_bytes, " bytes]");
  // JSON escapes can make the kept text longer than it is: shorten it until the line fits. Each
  // byte taken off the text takes at least one off the line, so this ends.
  size_t keep = max_bytes > 1024 ? max_bytes - 1024 : 0;
  while (true) {
    bounded.message = absl::StrCat(Utf8Prefix(text, keep), note);
    std::string bounded_line = events::Serialize(bounded);
    if (bounded_line.size() <= max_bytes || keep == 0) return bounded_line;
    keep -= std::min(keep, bounded_line.size() - max_bytes);
  }
}

EventRelay::EventRelay(compress::v1::WorkerService::StubInterface* stub, AttemptKey key,
                       const Options& options, CancelCallback on_cancel, FailureCallback on_failure)
    : stub_(stub),
      key_(std::move(key)),
      options_(options),
      on_cancel_(std::move(on_cancel)),
      on_failure_(std::move(on_failure)),
      batch_bytes_(options.max_batch_bytes) {
  thread_ = std::thread([this] { Loop(); });
}

EventRelay::~EventRelay() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void EventRelay::Add(std::string event_json) {
  if (event_json.size() > options_.max_line_bytes) {
    const size_t size = event_json.size();
    event_json = BoundEventLine(std::move(event_json), options_.max_line_bytes);
    AgentLog(key_.job, " attempt ", key_.attempt, ": cut an event line of ", size, " bytes to ",
             event_json.size());
  }
  const size_t size = event_json.size();
  absl::MutexLock lock(&mu_);
  auto admitted = [this, size]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_.empty() || pending_bytes_ + size <= options_.max_pending_bytes ||
           !failure_.ok() || stopping_;
  };
  if (!admitted()) {
    if (absl::Now() - last_full_log_ >= absl::Minutes(1)) {
      last_full_log_ = absl::Now();
      AgentLog(key_.job, " attempt ", key_.attempt, ": ", pending_bytes_,
               " bytes of lines wait for the server, the most the relay holds; reading the "
               "executor's output waits until the server takes lines");
    }
    mu_.Await(absl::Condition(&admitted));
  }
  // Lines after a failure would never be sent.
  if (!failure_.ok() || stopping_) return;
  pending_.push_back(std::move(event_json));
  pending_bytes_ += size;
}

absl::Status EventRelay::Flush() {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_.empty() || !failure_.ok() || stopping_;
  };
  mu_.Await(absl::Condition(&done));
  if (!failure_.ok()) return failure_;
  if (!pending_.empty()) return absl::CancelledError("event relay stopped with lines unsent");
  return absl::OkStatus();
}

void EventRelay::GiveUpAt(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  give_up_at_ = deadline;
}

void EventRelay::Abandon(const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  if (failure_.ok()) failure_ = why;
  pending_.clear();
  pending_bytes_ = 0;
}

int64_t EventRelay::sent() const {
  absl::MutexLock lock(&mu_);
  return sent_;
}

void EventRelay::Loop() {
  Backoff backoff(options_.initial_backoff, options_.max_backoff);
  // INTERNAL or UNKNOWN answers to the batch at the front of the queue.
  int server_errors = 0;
  while (true) {
    compress::v1::ReportEventsRequest request;
    key_.SetOn(request);
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !failure_.ok() || !pending_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      // Abandoned (failure_ set by Abandon()) or destroyed.
      if (stopping_ || !failure_.ok()) return;
      request.set_first_line(sent_ + 1);
      size_t bytes = 0;
      for (const std::string& line : pending_) {
        if (request.event_json_size() >= options_.max_batch_lines) break;
        if (request.event_json_size() > 0 && bytes + line.size() > batch_bytes_) break;
        bytes += line.size();
        request.add_event_json(line);
      }
    }

    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
    compress::v1::ReportEventsResponse response;
    grpc::Status status = stub_->ReportEvents(&context, request, &response);
    if (status.ok()) {
      backoff.Reset();
      server_errors = 0;
      {
        absl::MutexLock lock(&mu_);
        // Abandoned while the call ran: the queue is gone.
        if (!failure_.ok()) return;
        for (int i = 0; i < request.event_json_size(); ++i) {
          pending_bytes_ -= pending_.front().size();
          pending_.pop_front();
        }
        sent_ += request.event_json_size();
      }
      if (response.cancel_requested()) on_cancel_();
      continue;
    }

    if (IsMessageTooLarge(status) && ShrinkRefused(request, status)) continue;

    absl::Status failure;
    if (IsServerError(status) && ++server_errors >= options_.server_error_tries) {
      // The server fails on these lines every time, it seems; the attempt fails (retryably)
      // rather than wait for the server forever.
      failure = absl::Status(
          ToAbslStatus(status).code(),
          absl::StrCat("ReportEvents for ", key_.job, " attempt ", key_.attempt, ": gave up after ",
                       server_errors, " ", absl::StatusCodeToString(ToAbslStatus(status).code()),
                       " answers to lines ", request.first_line(), "..",
                       request.first_line() + request.event_json_size() - 1, ": ",
                       status.error_message()));
      AgentLog(failure.message());
    } else if (IsTransient(status)) {
      absl::Duration delay = backoff.Next();
      absl::MutexLock lock(&mu_);
      if (absl::Now() + delay < give_up_at_) {
        auto woken = [this]()
                         ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !failure_.ok(); };
        mu_.AwaitWithTimeout(absl::Condition(&woken), delay);
        continue;
      }
      failure =
          absl::UnavailableError(absl::StrCat("ReportEvents for ", key_.job, " attempt ",
                                              key_.attempt, ": gave up: ", status.error_message()));
    } else {
      failure = ToAbslStatus(status);
      failure =
          absl::Status(failure.code(), absl::StrCat("ReportEvents for ", key_.job, " attempt ",
                                                    key_.attempt, ": ", status.error_message()));
    }
    {
      absl::MutexLock lock(&mu_);
      // Abandoned meanwhile: the runner already knows the attempt is gone.
      if (!failure_.ok()) return;
      failure_ = failure;
    }
    on_failure_(failure);
    return;
  }
}

bool EventRelay::ShrinkRefused(const compress::v1::ReportEventsRequest& request,
                               const grpc::Status& status) {
  size_t bytes = 0;
  for (const std::string& line : request.event_json()) bytes += line.size();
  if (request.event_json_size() > 1) {
    batch_bytes_ = std::max<size_t>(bytes / 2, 1);
    AgentLog(key_.job, " attempt ", key_.attempt, ": ReportEvents refused ",
             request.event_json_size(), " lines (", bytes, " bytes) as too large (",
             status.error_message(), "); sending batches of at most ", batch_bytes_, " bytes");
    return true;
  }
  // A note refused as well: the server's limit is below anything the relay can send.
  if (bytes <= kMaxNoteBytes) return false;
  std::string note = events::Serialize(events::Log(
      "warning", absl::StrCat("compress-worker dropped an event line of ", bytes,
                              " bytes: the server refused it as larger than its message limit (",
                              CutText(status.error_message(), 512), ")")));
  AgentLog(key_.job, " attempt ", key_.attempt, ": ReportEvents refused line ",
           request.first_line(), " (", bytes, " bytes) as too large (", status.error_message(),
           "); sending a note in its place");
  absl::MutexLock lock(&mu_);
  // Abandoned while the call ran: the loop ends on its next turn.
  if (!failure_.ok() || pending_.empty()) return true;
  pending_bytes_ = pending_bytes_ - pending_.front().size() + note.size();
  pending_.front() = std::move(note);
  return true;
}

}  // namespace compress::worker
