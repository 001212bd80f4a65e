#include "server/core/job_filter.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace compress::server {
namespace {

using ::testing::HasSubstr;

TEST(JobFilterTest, EmptyMatchesEverything) {
  absl::StatusOr<JobFilter> filter = ParseJobFilter("  ");
  ASSERT_TRUE(filter.ok()) << filter.status();
  EXPECT_FALSE(filter->state.has_value());
  EXPECT_TRUE(filter->labels.empty());
}

TEST(JobFilterTest, ParsesStateAndLabels) {
  absl::StatusOr<JobFilter> filter =
      ParseJobFilter(R"(state = RUNNING AND labels.team = "vision" AND labels.x=" a\"b ")");
  ASSERT_TRUE(filter.ok()) << filter.status();
  EXPECT_EQ(filter->state, JobState::kRunning);
  EXPECT_EQ(filter->labels.at("team"), "vision");
  EXPECT_EQ(filter->labels.at("x"), " a\"b ");
  Job job;
  job.state = JobState::kRunning;
  job.labels = {{"team", "vision"}, {"x", " a\"b "}, {"other", "1"}};
  EXPECT_TRUE(filter->Matches(job));
  job.labels["team"] = "nlp";
  EXPECT_FALSE(filter->Matches(job));
}

TEST(JobFilterTest, RejectsWhatItDoesNotSupport) {
  for (const char* text : {"state = SLEEPING", "priority = 3", "state = RUNNING OR state = QUEUED",
                           "labels.team = vision", "labels.team = \"open", "state RUNNING",
                           "state = QUEUED AND state = RUNNING"}) {
    absl::StatusOr<JobFilter> filter = ParseJobFilter(text);
    EXPECT_EQ(filter.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(filter.status().message(), HasSubstr("filter: ")) << text;
  }
}

// A label key CreateJob refuses (the same rule) is refused in a filter too: no job has it, so an
// answer of no jobs would hide the mistake.
TEST(JobFilterTest, RejectsLabelKeysNoJobCanHave) {
  const std::string long_key(kMaxLabelKeyLength + 1, 'k');
  for (const std::string& key : {std::string("Team"), std::string("tEam"), std::string("9team"),
                                 std::string("_team"), long_key}) {
    const std::string text = absl::StrCat("state = QUEUED AND labels.", key, " = \"x\"");
    absl::StatusOr<JobFilter> filter = ParseJobFilter(text);
    EXPECT_EQ(filter.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_EQ(filter.status().message(),
              absl::StrCat("filter: label key '", key,
                           "' is not one a job can have (1-63 characters of [a-z0-9_.-/] starting "
                           "with a lowercase letter) at position 26 (supported: state = NAME AND "
                           "labels.KEY = \"VALUE\")"));
  }
  absl::StatusOr<JobFilter> filter = ParseJobFilter(
      absl::StrCat("labels.a-b.c/d_9 = \"x\" AND labels.", long_key.substr(1), " = \"y\""));
  ASSERT_TRUE(filter.ok()) << filter.status();
  EXPECT_EQ(filter->labels.size(), 2u);
}

// `count` clauses labels.k0 = "v" AND labels.k1 = "v" ...
std::string LabelClauses(int count) {
  std::vector<std::string> clauses;
  for (int i = 0; i < count; ++i) clauses.push_back(absl::StrCat("labels.k", i, " = \"v\""));
  return absl::StrJoin(clauses, " AND ");
}

// No job has more than kMaxLabels labels: a filter testing more is refused, naming the limit,
// before it reaches the store (whose query grows with every clause).
TEST(JobFilterTest, AtMostAsManyLabelsClausesAsAJobHasLabels) {
  absl::StatusOr<JobFilter> filter = ParseJobFilter(LabelClauses(kMaxLabels));
  ASSERT_TRUE(filter.ok()) << filter.status();
  EXPECT_EQ(filter->labels.size(), static_cast<size_t>(kMaxLabels));
  for (int count : {kMaxLabels + 1, 1000}) {
    filter = ParseJobFilter(LabelClauses(count));
    EXPECT_EQ(filter.status().code(), absl::StatusCode::kInvalidArgument) << count;
    EXPECT_THAT(filter.status().message(),
                HasSubstr(absl::StrCat("filter: more than ", kMaxLabels, " labels clauses")))
        << count;
  }
}

}  // namespace
}  // namespace compress::server
