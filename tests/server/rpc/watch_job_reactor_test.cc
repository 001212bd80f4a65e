// The queue bound of WatchJobReactor: a watch keeps at most kBatch events queued, whether they
// come from notifications or from store reads.
#include "server/rpc/watch_job_reactor.h"

#include <cstdint>
#include <deque>
#include <vector>

#include "gtest/gtest.h"

namespace compress::server {
namespace {

constexpr size_t kBatch = WatchJobReactor::kBatch;

// Events of sequences first, first + 1, ..., last.
std::vector<JobEvent> Events(int64_t first, int64_t last) {
  std::vector<JobEvent> events;
  for (int64_t sequence = first; sequence <= last; ++sequence) {
    JobEvent event;
    event.job_id = "j";
    event.sequence = sequence;
    events.push_back(event);
  }
  return events;
}

std::deque<JobEvent> Queue(int64_t first, int64_t last) {
  std::vector<JobEvent> events = Events(first, last);
  return {events.begin(), events.end()};
}

TEST(WatchJobReactorTest, NotifiedEventsAreQueuedWhenTheyFollowAndFit) {
  EXPECT_TRUE(WatchJobReactor::QueuesNotified(10, 0, Events(11, 11)));
  EXPECT_TRUE(WatchJobReactor::QueuesNotified(10, 0, Events(11, 10 + kBatch)));
  EXPECT_TRUE(WatchJobReactor::QueuesNotified(10, kBatch - 2, Events(11, 12)));
  EXPECT_TRUE(WatchJobReactor::QueuesNotified(10, kBatch - 1, Events(11, 11)));
  // A gap, a repeat, or no events: read from the store.
  EXPECT_FALSE(WatchJobReactor::QueuesNotified(10, 0, Events(12, 12)));
  EXPECT_FALSE(WatchJobReactor::QueuesNotified(10, 0, Events(10, 11)));
  EXPECT_FALSE(WatchJobReactor::QueuesNotified(10, 0, {}));
}

// A lagging watch never queues more than kBatch events: a notification that would take the queue
// past it is read from the store later, also when the queue has room for some of its events.
TEST(WatchJobReactorTest, NotifiedEventsThatWouldOverfillTheQueueAreNotQueued) {
  EXPECT_FALSE(WatchJobReactor::QueuesNotified(10, kBatch - 1, Events(11, 12)));
  EXPECT_FALSE(WatchJobReactor::QueuesNotified(10, kBatch - 1, Events(11, 10 + kBatch)));
  EXPECT_FALSE(WatchJobReactor::QueuesNotified(10, kBatch, Events(11, 11)));
  EXPECT_FALSE(WatchJobReactor::QueuesNotified(10, 0, Events(11, 11 + kBatch)));
}

TEST(WatchJobReactorTest, StoredEventsFollowWhatIsQueued) {
  // Notifications queued 5 to 8 while the store was read from 4: 5 to 8 are not queued twice.
  std::deque<JobEvent> pending = Queue(5, 8);
  int64_t last_read = 8;
  EXPECT_TRUE(WatchJobReactor::QueueStored(Events(5, 12), &last_read, &pending));
  EXPECT_EQ(last_read, 12);
  ASSERT_EQ(pending.size(), 8u);
  for (size_t i = 0; i < pending.size(); ++i)
    EXPECT_EQ(pending[i].sequence, 5 + static_cast<int64_t>(i));
  // Nothing new.
  EXPECT_TRUE(WatchJobReactor::QueueStored(Events(9, 12), &last_read, &pending));
  EXPECT_EQ(last_read, 12);
  EXPECT_EQ(pending.size(), 8u);
}

// A store read that follows events notifications queued meanwhile fills the queue to kBatch and
// no further; the rest is left for a later read, which continues after the last event queued.
TEST(WatchJobReactorTest, StoredEventsDoNotOverfillTheQueue) {
  // Notifications queued 1 to 100 before the read (from 100) started and 101 to 200 during it;
  // the store holds 101 to 356.
  std::deque<JobEvent> pending = Queue(1, 200);
  int64_t last_read = 200;
  EXPECT_FALSE(WatchJobReactor::QueueStored(Events(101, 100 + kBatch), &last_read, &pending));
  ASSERT_EQ(pending.size(), kBatch);
  EXPECT_EQ(last_read, static_cast<int64_t>(kBatch));
  for (size_t i = 0; i < pending.size(); ++i) {
    EXPECT_EQ(pending[i].sequence, 1 + static_cast<int64_t>(i));
  }
  // Full already: nothing is taken, and the next read starts where this one would have.
  EXPECT_FALSE(
      WatchJobReactor::QueueStored(Events(last_read + 1, last_read + 5), &last_read, &pending));
  EXPECT_EQ(pending.size(), kBatch);
  EXPECT_EQ(last_read, static_cast<int64_t>(kBatch));
  // Exactly the room left: every event is taken.
  pending = Queue(1, 200);
  last_read = 200;
  EXPECT_TRUE(WatchJobReactor::QueueStored(Events(1, kBatch), &last_read, &pending));
  EXPECT_EQ(pending.size(), kBatch);
  EXPECT_EQ(last_read, static_cast<int64_t>(kBatch));
}

}  // namespace
}  // namespace compress::server
