// Tests of the distill stage: the loss terms against hand-computed values, gradients reaching
// the student only, precomputed teacher logits, students of other widths, and resume.
#include "worker/pipeline/distill/distill_stage.h"

#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "tests/pipeline/share/share_test_util.h"
#include "worker/pipeline/share/share_from_teacher.h"
#include "worker/pipeline/data/batch_loader.h"
#include "worker/pipeline/train/batch_source.h"
#include "worker/pipeline/train/teacher.h"

namespace compress::pipeline {
namespace {

using testing::MaxAbsDiff;
using testing::TinyConfig;
using testing::TinyTeacher;

// 24 examples of the tiny config's 16x16x3 input, 5 classes.
struct TinyData {
  torch::Tensor images = torch::randn({24, 3, 16, 16});
  torch::Tensor labels = torch::arange(24, torch::kInt64).remainder(5);
};

std::unique_ptr<TensorBatchSource> Source(const TinyData& data, bool shuffle,
                                          int64_t batch_size = 8) {
  TensorBatchSourceOptions o;
  o.batch_size = batch_size;
  o.shuffle = shuffle;
  o.seed = 3;
  absl::StatusOr<std::unique_ptr<TensorBatchSource>> source =
      TensorBatchSource::Create(data.images, data.labels, o);
  EXPECT_TRUE(source.ok()) << source.status();
  return std::move(*source);
}

TEST(DistillStageTest, KlDivergenceByHand) {
  const torch::Tensor student = torch::tensor({{0.0f, 0.0f}});
  const torch::Tensor teacher = torch::tensor({{static_cast<float>(std::log(3.0)), 0.0f}});
  // p_teacher = (3/4, 1/4) against a uniform student.
  const double kl1 = 0.75 * std::log(0.75 / 0.5) + 0.25 * std::log(0.25 / 0.5);
  EXPECT_NEAR(KdKlDivergence(student, teacher, 1.0).item<double>(), kl1, 1e-6);
  // At T = 2 the teacher's logits halve: p = (sqrt 3, 1) / (sqrt 3 + 1); scaled by T^2.
  const double p = std::sqrt(3.0) / (std::sqrt(3.0) + 1.0);
  const double kl2 = p * std::log(p / 0.5) + (1 - p) * std::log((1 - p) / 0.5);
  EXPECT_NEAR(KdKlDivergence(student, teacher, 2.0).item<double>(), 4.0 * kl2, 1e-6);
  EXPECT_NEAR(KdKlDivergence(teacher, teacher, 3.0).item<double>(), 0.0, 1e-7);
}

TEST(DistillStageTest, LossIsAlphaCePlusScaledKl) {
  torch::manual_seed(0);
  SwinTransformer teacher = TinyTeacher(1);
  SwinTransformer student = TinyTeacher(2);
  teacher->eval();
  student->eval();  // no drop path, so that the loss can be recomputed
  DistillStageOptions o;
  o.alpha = 0.3;
  o.temperature = 2.0;
  absl::StatusOr<WeightDistillOptions> loss_options =
      ResolveDistillLoss(o, student->config(), teacher->config());
  ASSERT_TRUE(loss_options.ok()) << loss_options.status();
  DistillStudent s = MakeDistillStudent(student);
  LossFn loss = StudentDistillationLoss(s.forward, s.config, teacher, *loss_options);
  TinyData data;
  TrainBatch batch{data.images.slice(0, 0, 6), data.labels.slice(0, 0, 6), torch::Tensor()};
  LossOutput out = loss(batch);
  torch::NoGradGuard no_grad;
  const torch::Tensor ls = student->forward(batch.inputs);
  const torch::Tensor lt = teacher->forward(batch.inputs);
  const double ce = torch::nn::functional::cross_entropy(ls, batch.targets).item<double>();
  const double kl = KdKlDivergence(ls, lt, 2.0).item<double>();
  EXPECT_NEAR(out.loss.item<double>(), 0.3 * ce + 0.7 * kl, 1e-5);
  ASSERT_EQ(out.terms.size(), 2u);
  EXPECT_EQ(out.terms[0].first, "ce");
  EXPECT_EQ(out.terms[1].first, "kd_kl");
}

TEST(DistillStageTest, GradientsReachTheStudentOnly) {
  SwinTransformer teacher = TinyTeacher(1);
  SwinTransformer student = TinyTeacher(2);
  teacher->eval();
  DistillStageOptions o;
  o.attention_weight = 1.0;
  o.hidden_weight = 1.0;
  absl::StatusOr<WeightDistillOptions> loss_options =
      ResolveDistillLoss(o, student->config(), teacher->config());
  ASSERT_TRUE(loss_options.ok()) << loss_options.status();
  DistillStudent s = MakeDistillStudent(student);
  LossFn loss = StudentDistillationLoss(s.forward, s.config, teacher, *loss_options);
  TinyData data;
  LossOutput out =
      loss(TrainBatch{data.images.slice(0, 0, 4), data.labels.slice(0, 0, 4), torch::Tensor()});
  EXPECT_EQ(out.terms.size(), 4u);
  out.loss.backward();
  for (const auto& p : teacher->named_parameters()) {
    EXPECT_FALSE(p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0)
        << "teacher parameter " << p.key() << " got a gradient";
  }
  int with_grad = 0;
  for (const auto& p : student->named_parameters()) {
    if (p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0) ++with_grad;
  }
  EXPECT_GT(with_grad, static_cast<int>(student->named_parameters().size()) / 2);
}

TEST(DistillStageTest, CachedTeacherLogitsMatchRunningTheTeacher) {
  SwinTransformer teacher = TinyTeacher(1);
  TinyData data;
  std::unique_ptr<TensorBatchSource> ordered = Source(data, /*shuffle=*/true);
  absl::StatusOr<torch::Tensor> table =
      ComputeTeacherLogits(teacher, *ordered, data.images.size(0), torch::kCPU);
  ASSERT_TRUE(table.ok()) << table.status();
  torch::NoGradGuard no_grad;
  teacher->eval();
  EXPECT_LT(MaxAbsDiff(*table, teacher->forward(data.images)), 1e-5);
  // A split the source does not cover is refused.
  std::unique_ptr<TensorBatchSource> again = Source(data, true);
  absl::StatusOr<torch::Tensor> bigger =
      ComputeTeacherLogits(teacher, *again, data.images.size(0) + 1, torch::kCPU);
  EXPECT_EQ(bigger.status().code(), absl::StatusCode::kInvalidArgument);
}

// The executor's sources watch its cancel flag: the teacher-logit pass (like every loop over
// them) ends CANCELLED at the next batch, not after the whole split.
TEST(DistillStageTest, TeacherLogitPassStopsAtACancel) {
  SwinTransformer teacher = TinyTeacher(1);
  const torch::Tensor images = torch::randint(0, 256, {24, 3, 16, 16}, torch::kUInt8);
  const torch::Tensor labels = torch::arange(24, torch::kInt64).remainder(5);
  std::atomic<bool> cancel{false};
  auto source = [&] {
    BatchLoaderOptions o = BatchLoaderOptions().ForEval();
    o.batch_size = 8;
    absl::StatusOr<std::unique_ptr<BatchLoader>> loader = BatchLoader::Create(images, labels, o);
    EXPECT_TRUE(loader.ok()) << loader.status();
    return std::make_unique<LoaderBatchSource>(std::move(*loader), &cancel);
  };
  std::unique_ptr<LoaderBatchSource> whole = source();
  absl::StatusOr<torch::Tensor> table = ComputeTeacherLogits(teacher, *whole, 24, torch::kCPU);
  ASSERT_TRUE(table.ok()) << table.status();

  std::unique_ptr<LoaderBatchSource> reading = source();
  ASSERT_TRUE(reading->StartEpoch(0, 0).ok());
  ASSERT_TRUE(reading->Next().ok());
  cancel = true;
  absl::StatusOr<std::optional<TrainBatch>> next = reading->Next();
  EXPECT_EQ(next.status().code(), absl::StatusCode::kCancelled) << next.status();
  EXPECT_EQ(reading->StartEpoch(0, 1).code(), absl::StatusCode::kCancelled);
  absl::StatusOr<torch::Tensor> stopped = ComputeTeacherLogits(teacher, *source(), 24, torch::kCPU);
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled) << stopped.status();
}

TEST(DistillStageTest, PrunedAndSharedStudentsDistil) {
  SwinTransformer teacher = TinyTeacher(1);
  // A student with other head counts and widths: relation heads are resolved to one.
  SwinConfig narrow = TinyConfig();
  for (auto& stage : narrow.stages) {
    for (BlockWidths& b : stage.blocks) {
      b.num_heads = 1;
      b.mlp_hidden = 8;
    }
  }
  absl::StatusOr<SwinTransformer> student = CreateSwinTransformer(narrow);
  ASSERT_TRUE(student.ok()) << student.status();
  DistillStageOptions o;
  o.attention_weight = 0.5;
  o.hidden_weight = 0.5;
  absl::StatusOr<WeightDistillOptions> resolved = ResolveDistillLoss(o, narrow, teacher->config());
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->relation_heads, 1);
  o.relation_heads = 0;
  absl::StatusOr<WeightDistillOptions> refused = ResolveDistillLoss(o, narrow, teacher->config());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("distill.relation_heads"), std::string::npos);

  absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, SharingOptions{});
  ASSERT_TRUE(shared.ok()) << shared.status();
  TinyData data;
  for (const DistillStudent& s : {MakeDistillStudent(*student), MakeDistillStudent(*shared)}) {
    DistillStageOptions run = o;
    run.relation_heads = -1;
    run.trainer.max_steps = 2;
    run.trainer.epochs = 0;
    run.trainer.log_every_steps = 1;
    std::unique_ptr<TensorBatchSource> train = Source(data, true);
    absl::StatusOr<TrainResult> r =
        RunDistillStage(s, teacher, *train, nullptr, torch::Tensor(), run);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->steps, 2);
  }
}

TEST(DistillStageTest, BadOptionsNameTheField) {
  SwinConfig config = TinyConfig();
  DistillStageOptions o;
  o.alpha = 1.5;
  EXPECT_NE(ResolveDistillLoss(o, config, config).status().message().find("distill.alpha"),
            std::string::npos);
  o.alpha = 0.5;
  o.temperature = 0.0;
  EXPECT_NE(ResolveDistillLoss(o, config, config).status().message().find("distill.temperature"),
            std::string::npos);
  SwinConfig other = config;
  other.num_classes = 7;
  o.temperature = 1.0;
  EXPECT_EQ(ResolveDistillLoss(o, other, config).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Runs 6 steps with cached logits, or 3 then a resumed 3; returns the final student and result.
struct DistillRun {
  SwinTransformer student{nullptr};
  TrainResult result;
};
DistillRun Distil(const std::string& dir, int64_t stop_after, const TinyData& data) {
  SwinTransformer teacher = TinyTeacher(1);
  DistillRun run;
  run.student = TinyTeacher(2);
  std::unique_ptr<TensorBatchSource> ordered = Source(data, false);
  absl::StatusOr<torch::Tensor> table =
      ComputeTeacherLogits(teacher, *ordered, data.images.size(0), torch::kCPU);
  EXPECT_TRUE(table.ok()) << table.status();
  DistillStageOptions o;
  o.trainer.epochs = 0;
  o.trainer.max_steps = 6;
  o.trainer.checkpoint_dir = dir;
  o.trainer.checkpoint_every_steps = 0;
  o.trainer.num_threads = 1;
  o.trainer.seed = 5;
  TrainerCallbacks callbacks;
  int64_t steps = 0;
  if (stop_after > 0) {
    callbacks.on_metric = [&steps](const MetricPoint& p) {
      if (p.kind == MetricPoint::Kind::kTrain) steps = p.step;
    };
    callbacks.should_cancel = [&steps, stop_after] { return steps >= stop_after; };
    o.trainer.log_every_steps = 1;
  }
  std::unique_ptr<TensorBatchSource> train = Source(data, true);
  absl::StatusOr<TrainResult> r = RunDistillStage(MakeDistillStudent(run.student), teacher, *train,
                                                  nullptr, *table, o, callbacks);
  if (stop_after > 0) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  } else {
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) run.result = *r;
  }
  return run;
}

TEST(DistillStageTest, ResumedDistillationContinuesWhereItStopped) {
  namespace fs = std::filesystem;
  const std::string base = ::testing::TempDir() + "/distill_resume";
  fs::remove_all(base);
  TinyData data;
  DistillRun straight = Distil(base + "/straight", 0, data);
  Distil(base + "/resumed", 3, data);
  DistillRun resumed = Distil(base + "/resumed", 0, data);
  EXPECT_EQ(resumed.result.resumed_from_step, 3);
  EXPECT_EQ(resumed.result.steps, 6);
  torch::NoGradGuard no_grad;
  auto a = straight.student->named_parameters();
  auto b = resumed.student->named_parameters();
  for (const auto& p : a) {
    EXPECT_LT(MaxAbsDiff(p.value(), b[p.key()]), 1e-5) << p.key();
  }
}

}  // namespace
}  // namespace compress::pipeline
