// The CLI's pure parts: job names, spec files, progress rendering.
#include <sstream>
#include <string>

#include "absl/time/clock.h"
#include "client/job_names.h"
#include "client/progress_view.h"
#include "client/retry_schedule.h"
#include "client/spec_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace compress::client {
namespace {

using ::testing::HasSubstr;

TEST(JobNamesTest, AcceptsIdOrResourceName) {
  EXPECT_EQ(*JobName("abc"), "jobs/abc");
  EXPECT_EQ(*JobName("jobs/abc"), "jobs/abc");
  EXPECT_EQ(JobName("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JobName("jobs/").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JobName("jobs/a/b").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JobId("jobs/abc"), "abc");
  EXPECT_EQ(ArtifactResourceName("jobs/abc", "model.safetensors"),
            "jobs/abc/artifacts/model.safetensors");
}

TEST(SpecFileTest, ShippedExamplesAreValid) {
  for (const char* name : {"default-job.json", "tiny-synthetic-job.json"}) {
    std::string path = std::string(COMPRESS_SOURCE_DIR) + "/client/examples/" + name;
    absl::StatusOr<compress::v1::JobSpec> spec = LoadJobSpecFile(path);
    ASSERT_TRUE(spec.ok()) << spec.status();
    EXPECT_GT(spec->teacher().train().epochs() + spec->teacher().train().max_steps(), 0);
  }
}

TEST(SpecFileTest, ErrorsNameTheFileAndTheField) {
  absl::StatusOr<compress::v1::JobSpec> unknown =
      ParseJobSpecText(R"({"model":{"presett":"swin_t"}})", "my.json");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("my.json"));
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("presett"));

  absl::StatusOr<compress::v1::JobSpec> wrong_type =
      ParseJobSpecText(R"({"dataset":{"image_size":"big"}})", "my.json");
  EXPECT_THAT(std::string(wrong_type.status().message()), HasSubstr("dataset.image_size"));

  absl::StatusOr<compress::v1::JobSpec> invalid = ParseJobSpecText(
      R"({"dataset":{"format":"synthetic"},"teacher":{"train":{"epochs":1}},
          "prune":{"enabled":true,"target_macs_reduction":1.5}})",
      "my.json");
  EXPECT_EQ(invalid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(invalid.status().message()),
              HasSubstr("my.json: spec.prune.target_macs_reduction"));

  EXPECT_EQ(LoadJobSpecFile("/nonexistent/spec.json").status().code(), absl::StatusCode::kNotFound);
}

TEST(SpecFileTest, ADuplicateKeyIsRefusedAndAByteOrderMarkIgnored) {
  // protobuf's JSON parser kept one of the two epochs silently.
  absl::StatusOr<compress::v1::JobSpec> twice = ParseJobSpecText(
      R"({"dataset":{"format":"synthetic"},"teacher":{"train":{"epochs":1,"epochs":2}}})",
      "my.json");
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(twice.status().message(),
            "my.json: spec.teacher.train.epochs: given twice (a JSON object names each key once)");

  const std::string spec = R"({"dataset":{"format":"synthetic"},"teacher":{"train":{"epochs":1}}})";
  absl::StatusOr<compress::v1::JobSpec> marked = ParseJobSpecText("\xEF\xBB\xBF" + spec, "my.json");
  ASSERT_TRUE(marked.ok()) << marked.status();
  EXPECT_EQ(marked->teacher().train().epochs(), 1);
  // Without an extension, the first character after the mark decides between JSON and YAML.
  absl::StatusOr<compress::v1::JobSpec> unnamed = ParseJobSpecText("\xEF\xBB\xBF" + spec, "spec");
  ASSERT_TRUE(unnamed.ok()) << unnamed.status();
}

TEST(SpecFileTest, AFileThatCannotBeReadSaysWhy) {
  absl::StatusOr<compress::v1::JobSpec> missing = LoadJobSpecFile("/nonexistent/spec.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(),
            "cannot read spec file /nonexistent/spec.json: No such file or directory");
  // A directory used to read as an empty YAML document ("expected a mapping ...").
  absl::StatusOr<compress::v1::JobSpec> directory = LoadJobSpecFile("/tmp/");
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(directory.status().message(), "cannot read spec file /tmp/: Is a directory");
}

TEST(RetryScheduleTest, TheLastTryIsMadeAtTheDeadline) {
  EXPECT_FALSE(RetrySchedule(absl::ZeroDuration()).WaitForNextTry());
  const absl::Time start = absl::Now();
  RetrySchedule retry(absl::Milliseconds(500));
  int tries = 1;
  while (retry.WaitForNextTry()) ++tries;
  // 200 ms, then 300 ms (not 400) to the deadline: three tries, the last at 500 ms.
  EXPECT_EQ(tries, 3);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(500));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(700));
}

TEST(ProgressViewTest, BarAndFigures) {
  EXPECT_EQ(ProgressView::Bar(0.5, 10), "[#####-----]  50%");
  EXPECT_EQ(ProgressView::Bar(1.5, 4), "[####] 100%");
  EXPECT_EQ(ProgressView::Bar(-1, 4), "[----]   0%");
  EXPECT_EQ(ProgressView::Figures({{"loss", 0.25}, {"lr", 0.001}, {"top1", 0.875}}),
            "loss 0.2500  top1 0.8750");
}

compress::v1::JobEvent Metric(int64_t step, double progress, double loss) {
  compress::v1::JobEvent event;
  event.mutable_metric()->set_phase("teacher");
  event.mutable_metric()->set_step(step);
  event.mutable_metric()->set_progress(progress);
  (*event.mutable_metric()->mutable_values())["loss"] = loss;
  return event;
}

TEST(ProgressViewTest, WithoutATerminalPrintsALinePerTenthAndThePhaseEnd) {
  std::ostringstream out;
  ProgressView view(&out, /*tty=*/false);
  compress::v1::JobEvent started;
  started.mutable_phase_started()->set_phase("teacher");
  view.Show(started);
  for (int step = 1; step <= 100; ++step) view.Show(Metric(step, step / 100.0, 1.0 / step));
  compress::v1::JobEvent finished;
  finished.mutable_phase_finished()->set_phase("teacher");
  finished.mutable_phase_finished()->set_wall_seconds(12.5);
  (*finished.mutable_phase_finished()->mutable_values())["top1"] = 0.9;
  view.Show(finished);
  view.Close();
  std::string text = out.str();
  // 0 %, 10 %, ..., 100 % from the metrics, plus the phase's final line.
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 12);
  EXPECT_THAT(text, HasSubstr("teacher  [###############---------------]  50%  step 50"));
  EXPECT_THAT(text, HasSubstr("loss 0.0200"));
  EXPECT_THAT(text, HasSubstr("100%  12.5 s  loss 0.0100  top1 0.9000\n"));
  EXPECT_EQ(text.find('\r'), std::string::npos);
}

TEST(ProgressViewTest, OnATerminalRedrawsInPlace) {
  std::ostringstream out;
  ProgressView view(&out, /*tty=*/true);
  view.Show(Metric(1, 0.1, 2.0));
  view.Show(Metric(2, 0.2, 1.0));
  compress::v1::JobEvent log;
  log.mutable_log()->set_level("info");
  log.mutable_log()->set_message("checkpoint saved");
  view.Show(log);
  view.Close();
  std::string text = out.str();
  EXPECT_THAT(text, HasSubstr("\r\033[K[info] checkpoint saved\n"));
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
}

}  // namespace
}  // namespace compress::client
