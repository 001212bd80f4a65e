// ThreadPool: a few threads that run the slow parts of RPCs (SQLite, file I/O), so that gRPC's
// reactors never block.
#ifndef COMPRESS_SERVER_RPC_THREAD_POOL_H_
#define COMPRESS_SERVER_RPC_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace compress::server {

// Thread-safe. Tasks run in the order scheduled (across threads, concurrently).
class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  // Runs every task already scheduled, then joins the threads.
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Schedule(std::function<void()> task);

 private:
  void Work();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_THREAD_POOL_H_
