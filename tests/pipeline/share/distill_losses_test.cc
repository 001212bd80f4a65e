// Tests of the weight-distillation losses (against hand-computed values), the teacher trace and
// the share stage driver.
#include "worker/pipeline/share/distill_losses.h"

#include <torch/torch.h>

#include <cmath>

#include "gtest/gtest.h"
#include "tests/pipeline/share/share_test_util.h"
#include "worker/pipeline/share/share_from_teacher.h"
#include "worker/pipeline/share/share_stage.h"
#include "worker/pipeline/train/batch_source.h"

namespace compress::pipeline {
namespace {

using testing::EqualiseGroups;
using testing::MaxAbsDiff;
using testing::TinyConfig;
using testing::TinyTeacher;

TEST(DistillLossesTest, SoftCrossEntropyByHand) {
  const torch::Tensor student = torch::tensor({{0.0f, 0.0f}});
  const torch::Tensor teacher = torch::tensor({{static_cast<float>(std::log(3.0)), 0.0f}});
  // p_teacher = (3/4, 1/4), log p_student = log(1/2) for both: -sum = log 2.
  EXPECT_NEAR(SoftCrossEntropy(student, teacher, 1.0).item<double>(), std::log(2.0), 1e-6);
  // At T = 2 the student is still uniform: T^2 * log 2.
  EXPECT_NEAR(SoftCrossEntropy(student, teacher, 2.0).item<double>(), 4.0 * std::log(2.0), 1e-6);
  // Two rows are averaged: the second one's teacher is sure of class 1 (p = e^10/(1+e^10)),
  // student logits (0, log 3) give log p = (log 1/4, log 3/4).
  const torch::Tensor s2 = torch::tensor({{0.0f, 0.0f}, {0.0f, static_cast<float>(std::log(3.0))}});
  const torch::Tensor t2 =
      torch::tensor({{static_cast<float>(std::log(3.0)), 0.0f}, {0.0f, 10.0f}});
  const double p1 = std::exp(10.0) / (1.0 + std::exp(10.0));
  const double row2 = -((1.0 - p1) * std::log(0.25) + p1 * std::log(0.75));
  EXPECT_NEAR(SoftCrossEntropy(s2, t2, 1.0).item<double>(), (std::log(2.0) + row2) / 2.0, 1e-5);
}

TEST(DistillLossesTest, RelationKlByHand) {
  // One window, one head, two tokens, d = 1. Student x = (1, 0): X X^T = [[1, 0], [0, 0]],
  // rows softmax to (e, 1)/(e+1) and (1/2, 1/2). Teacher x = (0, 0): uniform rows.
  // KL(row 0) = log(1/2) + log(e+1) - 1/2, KL(row 1) = 0; mean over the two rows.
  const torch::Tensor student = torch::tensor({1.0f, 0.0f}).view({1, 1, 2, 1});
  const torch::Tensor teacher = torch::zeros({1, 1, 2, 1});
  const double expected = (std::log(0.5) + std::log(std::exp(1.0) + 1.0) - 0.5) / 2.0;
  EXPECT_NEAR(RelationKl(student, teacher, 0).item<double>(), expected, 1e-6);
  EXPECT_NEAR(RelationKl(teacher, teacher, 0).item<double>(), 0.0, 1e-7);
  // Teacher head dim 3 against student head dim 1: the relations are N x N either way; scaling
  // by 1/sqrt(3) with x = (sqrt(3), 0) in one coordinate gives X X^T / sqrt(3) = [[sqrt 3, 0],..].
  const torch::Tensor wide = torch::tensor({1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f}).view({1, 1, 2, 3});
  const torch::Tensor wide_student =
      torch::tensor({static_cast<float>(std::pow(3.0, 0.25)), 0.0f}).view({1, 1, 2, 1});
  // Student relation of wide_student: logits [[sqrt 3, 0], [0, 0]]; teacher of `wide`:
  // [[1/sqrt 3, 0], [0, 0]]. Row 0 KL by hand, row 1 zero.
  const double a = std::sqrt(3.0), b = 1.0 / std::sqrt(3.0);
  const double pt0 = std::exp(b) / (std::exp(b) + 1.0), ps0 = std::exp(a) / (std::exp(a) + 1.0);
  const double kl0 = pt0 * std::log(pt0 / ps0) + (1 - pt0) * std::log((1 - pt0) / (1 - ps0));
  EXPECT_NEAR(RelationKl(wide_student, wide, 0).item<double>(), kl0 / 2.0, 1e-6);
}

TEST(DistillLossesTest, RelationHeadsRegroupConcatenatedHeads) {
  torch::manual_seed(3);
  const torch::Tensor student = torch::randn({4, 2, 9, 3});  // 2 heads of 3
  const torch::Tensor teacher = torch::randn({4, 3, 9, 4});  // 3 heads of 4
  // One relation head: each side's heads concatenated.
  const torch::Tensor s_cat = student.transpose(1, 2).reshape({4, 9, 1, 6}).transpose(1, 2);
  const torch::Tensor t_cat = teacher.transpose(1, 2).reshape({4, 9, 1, 12}).transpose(1, 2);
  EXPECT_NEAR(RelationKl(student, teacher, 1).item<double>(),
              RelationKl(s_cat, t_cat, 0).item<double>(), 1e-6);
  // Windows are averaged: the loss of two copies of a batch equals the loss of one.
  EXPECT_NEAR(
      RelationKl(torch::cat({student, student}), torch::cat({teacher, teacher}), 1).item<double>(),
      RelationKl(student, teacher, 1).item<double>(), 1e-6);
  EXPECT_THROW(RelationKl(student, teacher, 0), c10::Error);  // 2 vs 3 heads
}

TEST(DistillLossesTest, HiddenRelationByHand) {
  // Student tokens (1,0), (0,1): G = I. Teacher tokens (1,0,0), (2,0,0): normalised equal, G = 1.
  const torch::Tensor student = torch::tensor({1.0f, 0.0f, 0.0f, 1.0f}).view({1, 1, 2, 2});
  const torch::Tensor teacher =
      torch::tensor({1.0f, 0.0f, 0.0f, 2.0f, 0.0f, 0.0f}).view({1, 1, 2, 3});
  EXPECT_NEAR(HiddenRelationLoss(student, teacher).item<double>(), 0.5, 1e-7);
  EXPECT_NEAR(HiddenRelationLoss(teacher, teacher * 5.0).item<double>(), 0.0, 1e-7);
}

TEST(DistillLossesTest, TeacherTraceMatchesForwardAndTheSharedModel) {
  SwinTransformer teacher = TinyTeacher();
  SharingOptions options;
  absl::StatusOr<SharingConfig> config = MakeSharingConfig(teacher->config(), options);
  ASSERT_TRUE(config.ok());
  EqualiseGroups(teacher, *config);
  absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, options);
  ASSERT_TRUE(shared.ok());
  teacher->eval();
  (*shared)->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor images = torch::randn({2, 3, 16, 16});
  const std::vector<std::pair<int, int>> blocks = RelationBlocks(teacher->config(), true);
  ASSERT_EQ(blocks.size(), 5u);
  TeacherTrace trace = TraceTeacher(teacher, images, blocks);
  EXPECT_TRUE(trace.logits.equal(teacher->forward(images)));
  SharedForwardRequest request;
  request.qkv_blocks = blocks;
  SharedSwinOutput out = (*shared)->Forward(images, request);
  for (size_t i = 0; i < blocks.size(); ++i) {
    // Shifted block 1 of stage 0: 2 images x 4 windows, 2 heads, 16 tokens, head dim 4.
    if (blocks[i] == std::make_pair(0, 1)) {
      EXPECT_EQ(trace.qkv[i].q.sizes(), (std::vector<int64_t>{8, 2, 16, 4}));
    }
    EXPECT_LT(MaxAbsDiff(out.qkv[i].q, trace.qkv[i].q), 1e-5) << i;
    EXPECT_LT(MaxAbsDiff(out.qkv[i].v, trace.qkv[i].v), 1e-5) << i;
    EXPECT_NEAR(AttentionRelationLoss(out.qkv[i], trace.qkv[i], 0).item<double>(), 0.0, 1e-6);
  }
  EXPECT_EQ(RelationBlocks(teacher->config(), false),
            (std::vector<std::pair<int, int>>{{0, 1}, {1, 2}}));
}

TEST(DistillLossesTest, WeightDistillationLossOfAnEquivalentStudent) {
  SwinTransformer teacher = TinyTeacher();
  absl::StatusOr<SharingConfig> config = MakeSharingConfig(teacher->config(), SharingOptions());
  ASSERT_TRUE(config.ok());
  EqualiseGroups(teacher, *config);
  absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, SharingOptions());
  ASSERT_TRUE(shared.ok());
  teacher->eval();
  (*shared)->eval();
  WeightDistillOptions options;
  options.ce_weight = 0.5;
  options.relation_on_all_blocks = true;
  ASSERT_TRUE(ValidateWeightDistillOptions(options, (*config).base, teacher->config()).ok());
  LossFn loss = WeightDistillationLoss(*shared, teacher, options);
  TrainBatch batch{torch::randn({2, 3, 16, 16}), torch::tensor({0, 3}, torch::kLong),
                   torch::Tensor()};
  LossOutput out = loss(batch);
  ASSERT_EQ(out.terms.size(), 4u);
  const torch::Tensor logits = teacher->forward(batch.inputs);
  const torch::Tensor p = torch::softmax(logits, -1);
  const double entropy = -(p * torch::log_softmax(logits, -1)).sum(-1).mean().item<double>();
  EXPECT_EQ(out.terms[1].first, "soft_ce");
  EXPECT_NEAR(out.terms[1].second.item<double>(), entropy, 1e-5);
  EXPECT_NEAR(out.terms[2].second.item<double>(), 0.0, 1e-6);  // attn_rel
  EXPECT_NEAR(out.terms[3].second.item<double>(), 0.0, 1e-6);  // hidden_rel
  const double ce = torch::nn::functional::cross_entropy(logits, batch.targets).item<double>();
  EXPECT_NEAR(out.loss.item<double>(), 0.5 * ce + entropy, 1e-5);
  out.loss.backward();
  EXPECT_TRUE((*shared)->group(0, 0)->shared->attn->qkv->weight.grad().defined());
}

TEST(DistillLossesTest, OptionsAreValidated) {
  const SwinConfig config = TinyConfig();
  WeightDistillOptions options;
  options.temperature = 0.0;
  EXPECT_EQ(ValidateWeightDistillOptions(options, config, config).code(),
            absl::StatusCode::kInvalidArgument);
  options = WeightDistillOptions();
  SwinConfig narrow = config;
  narrow.stages[1].blocks[2].num_heads = 2;
  narrow.stages[1].blocks[2].head_dim = 8;
  absl::Status status = ValidateWeightDistillOptions(options, narrow, config);
  EXPECT_NE(status.message().find("relation_heads"), std::string::npos) << status;
  options.relation_heads = 2;
  EXPECT_TRUE(ValidateWeightDistillOptions(options, narrow, config).ok());
}

TEST(ShareStageTest, TrainsTheSharedModelAndReducesTheDistillationLoss) {
  torch::set_num_threads(1);
  SwinTransformer teacher = TinyTeacher();
  torch::manual_seed(5);
  const torch::Tensor images = torch::randn({64, 3, 16, 16});
  const torch::Tensor labels = std::get<1>(teacher->forward(images).max(-1));
  TensorBatchSourceOptions source_options;
  source_options.batch_size = 16;
  auto train = TensorBatchSource::Create(images, labels, source_options);
  source_options.shuffle = false;
  auto validation = TensorBatchSource::Create(images, labels, source_options);
  ASSERT_TRUE(train.ok() && validation.ok());
  ShareStageOptions options;
  options.sharing.init = SharedInit::kMean;
  options.trainer.epochs = 6;
  options.trainer.lr = 2e-3;
  options.trainer.log_every_steps = 4;
  options.trainer.checkpoint_at_end = false;
  std::vector<double> losses;
  TrainerCallbacks callbacks;
  callbacks.on_metric = [&losses](const MetricPoint& point) {
    if (point.kind == MetricPoint::Kind::kTrain) losses.push_back(point.loss);
  };
  absl::StatusOr<ShareStageResult> result =
      RunShareStage(teacher, **train, validation->get(), options, callbacks);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->train.steps, 24);
  ASSERT_TRUE(result->train.final_eval.has_value());
  ASSERT_GE(losses.size(), 2u);
  EXPECT_LT(losses.back(), losses.front());
  EXPECT_LT(result->cost.params, result->cost.base_params);
  EXPECT_FALSE(result->model->is_training());

  options.distill.temperature = -1.0;
  EXPECT_EQ(RunShareStage(teacher, **train, nullptr, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace compress::pipeline
