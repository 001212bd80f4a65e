// JobNotifier: tells interested parties (WatchJob streams) that a job has new events.
#ifndef COMPRESS_SERVER_CORE_JOB_NOTIFIER_H_
#define COMPRESS_SERVER_CORE_JOB_NOTIFIER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/core/job.h"

namespace compress::server {

// What a committed change of a job wrote, handed to subscribers so that a watcher that is up to
// date can send the new events without reading them back from the store.
struct JobUpdate {
  // The events the change stored, in sequence order (consecutive sequences).
  std::vector<JobEvent> events;
  // The job's state after the change, when the change knew it.
  std::optional<JobState> state;
};

// Thread-safe. Callbacks run on the thread that calls Notify, while the notifier's mutex is held:
// they must be quick, must not block and must not call back into the notifier. In exchange,
// once Unsubscribe returns, the callback is not running and will never run again, so its
// owner may be destroyed. Notifications of one job may arrive in another order than its changes
// were committed (each is sent after its transaction, outside the scheduler's lock).
class JobNotifier {
 public:
  // `update` is null when the change is not described (a deletion, shutdown, or a change whose
  // events were not kept): the subscriber reads the store.
  using Callback = std::function<void(const JobUpdate* update)>;

  // Calls `callback` after each Notify(job_id) from now on. Returns a token for Unsubscribe.
  int64_t Subscribe(const std::string& job_id, Callback callback);
  void Unsubscribe(int64_t token);
  // Runs the callbacks of every subscriber of `job_id` with `update` (may be null).
  void Notify(const std::string& job_id, std::shared_ptr<const JobUpdate> update = nullptr);
  // Runs the callbacks of every subscriber with no update (the server is shutting down).
  void NotifyAll();

  // Number of live subscriptions (for tests and leak checks).
  int SubscriberCount();

 private:
  struct Subscription {
    std::string job_id;
    Callback callback;
  };

  absl::Mutex mu_;
  int64_t next_token_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<int64_t, Subscription> subscriptions_ ABSL_GUARDED_BY(mu_);
  std::multimap<std::string, int64_t> by_job_ ABSL_GUARDED_BY(mu_);
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_JOB_NOTIFIER_H_
