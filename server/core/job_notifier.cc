#include "server/core/job_notifier.h"

#include <utility>

namespace compress::server {

int64_t JobNotifier::Subscribe(const std::string& job_id, Callback callback) {
  absl::MutexLock lock(&mu_);
  int64_t token = next_token_++;
  subscriptions_.emplace(token, Subscription{job_id, std::move(callback)});
  by_job_.emplace(job_id, token);
  return token;
}

void JobNotifier::Unsubscribe(int64_t token) {
  absl::MutexLock lock(&mu_);
  auto it = subscriptions_.find(token);
  if (it == subscriptions_.end()) return;
  auto [begin, end] = by_job_.equal_range(it->second.job_id);
  for (auto j = begin; j != end; ++j) {
    if (j->second == token) {
      by_job_.erase(j);
      break;
    }
  }
  subscriptions_.erase(it);
}

void JobNotifier::Notify(const std::string& job_id, std::shared_ptr<const JobUpdate> update) {
  absl::MutexLock lock(&mu_);
  auto [begin, end] = by_job_.equal_range(job_id);
  for (auto it = begin; it != end; ++it) subscriptions_.at(it->second).callback(update.get());
}

void JobNotifier::NotifyAll() {
  absl::MutexLock lock(&mu_);
  for (auto& [token, subscription] : subscriptions_) subscription.callback(nullptr);
}

int JobNotifier::SubscriberCount() {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(subscriptions_.size());
}

}  // namespace compress::server
