// Many clients at once against a real compressd: CreateJob with one request_id from many
// connections at the same moment creates exactly one job, and --max_concurrent_streams bounds
// the calls of one connection (a call beyond the limit waits for a free stream; other
// connections are not held up).
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/faults/fault_processes.h"

namespace compress::faults {
namespace {

constexpr int kClients = 16;
constexpr int kRounds = 5;

TEST(ConcurrencyTest, OneRequestIdFromManyConcurrentClientsCreatesOneJob) {
  TempDir dir;
  ServerOptions options;
  options.data_dir = dir.File("data");
  options.flags = {"--rpc_threads=8"};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();

  // Each client has its own connection, all connected before the race starts.
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<Client>((*server)->address()));
    ASSERT_TRUE(clients.back()->channel()->WaitForConnected(
        absl::ToChronoTime(absl::Now() + absl::Seconds(10))));
  }
  std::set<std::string> all_names;
  for (int round = 0; round < kRounds; ++round) {
    const std::string request_id = absl::StrCat("same-request-", round);
    absl::Mutex mu;
    std::vector<std::string> names;
    std::vector<std::string> errors;
    absl::Barrier* start = new absl::Barrier(kClients);
    std::vector<std::thread> threads;
    for (int i = 0; i < kClients; ++i) {
      threads.emplace_back([&, i] {
        v1::CreateJobRequest request = Client::JobRequest(3, 0, request_id);
        if (start->Block()) delete start;
        v1::Job job;
        grpc::Status status = clients[i]->CreateJob(request, &job);
        absl::MutexLock lock(&mu);
        if (status.ok()) {
          names.push_back(job.name());
        } else {
          errors.push_back(status.error_message());
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_THAT(errors, ::testing::IsEmpty());
    ASSERT_EQ(names.size(), static_cast<size_t>(kClients));
    EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), 1u)
        << "round " << round << " created several jobs for one request_id";
    all_names.insert(names.front());
  }
  EXPECT_EQ(all_names.size(), static_cast<size_t>(kRounds));
  std::vector<v1::Job> listed;
  ASSERT_TRUE(clients[0]->ListAllJobs(&listed).ok());
  EXPECT_EQ(listed.size(), static_cast<size_t>(kRounds));
}

TEST(ConcurrencyTest, MaxConcurrentStreamsHoldsBackCallsBeyondTheLimitOnOneConnection) {
  TempDir dir;
  ServerOptions options;
  options.data_dir = dir.File("data");
  options.flags = {"--max_concurrent_streams=2"};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->address());
  v1::Job job;
  ASSERT_TRUE(client.CreateJob(Client::JobRequest(3), &job).ok());
  // A call on the connection lets the client learn the server's settings.
  ASSERT_TRUE(client.GetJob(job.name(), &job).ok());

  // Two watches of a job that never runs (no worker) take both streams.
  grpc::ClientContext watch_contexts[2];
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> watches[2];
  for (int i = 0; i < 2; ++i) {
    watch_contexts[i].set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::WatchJobRequest request;
    request.set_name(job.name());
    watches[i] = client.stub().WatchJob(&watch_contexts[i], request);
    v1::JobEvent event;
    ASSERT_TRUE(watches[i]->Read(&event)) << "watch " << i << " did not start";
  }

  // A third call on the same connection does not start while both are open ...
  v1::Job got;
  grpc::Status held = client.GetJob(job.name(), &got, absl::Seconds(1));
  EXPECT_EQ(held.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << held.error_message();

  // ... while another connection is served at once ...
  Client other((*server)->address());
  grpc::Status elsewhere = other.GetJob(job.name(), &got, absl::Seconds(5));
  EXPECT_TRUE(elsewhere.ok()) << elsewhere.error_message();

  // ... and once a stream is free, calls on the connection run again.
  watch_contexts[0].TryCancel();
  EXPECT_EQ(watches[0]->Finish().error_code(), grpc::StatusCode::CANCELLED);
  grpc::Status freed = client.GetJob(job.name(), &got, absl::Seconds(5));
  EXPECT_TRUE(freed.ok()) << freed.error_code() << ": " << freed.error_message();
  watch_contexts[1].TryCancel();
  watches[1]->Finish().IgnoreError();
}

}  // namespace
}  // namespace compress::faults
