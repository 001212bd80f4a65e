// JobNotifier: tells interested parties (WatchJob streams) that a job has new events.
#ifndef COMPRESS_SERVER_CORE_JOB_NOTIFIER_H_
#define COMPRESS_SERVER_CORE_JOB_NOTIFIER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace compress::server {

// Thread-safe. Callbacks run on the thread that calls Notify, while the notifier's mutex is held:
// they must be quick, must not block and must not call back into the notifier. In exchange,
// once Unsubscribe returns, the callback is not running and will never run again, so its
// owner may be destroyed.
class JobNotifier {
 public:
  using Callback = std::function<void()>;

  // Calls `callback` after each Notify(job_id) from now on. Returns a token for Unsubscribe.
  int64_t Subscribe(const std::string& job_id, Callback callback);
  void Unsubscribe(int64_t token);
  // Runs the callbacks of every subscriber of `job_id`.
  void Notify(const std::string& job_id);
  // Runs the callbacks of every subscriber (the server is shutting down).
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
