// Tests of the optimisation recipe (schedule, weight-decay grouping, clipping) and of the
// classification metrics, each against hand-computed values.
#include "worker/pipeline/train/optimization.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "worker/pipeline/train/evaluation.h"
#include "worker/pipeline/train/trainer.h"

namespace compress::pipeline {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

TEST(LrScheduleTest, WarmupThenCosine) {
  // peak 1.0, min 0.1, 4 warm-up steps, 14 steps in all.
  const LrSchedule schedule(1.0, 0.1, 4, 14);
  EXPECT_DOUBLE_EQ(schedule.At(0), 0.25);
  EXPECT_DOUBLE_EQ(schedule.At(1), 0.5);
  EXPECT_DOUBLE_EQ(schedule.At(3), 1.0);
  EXPECT_DOUBLE_EQ(schedule.At(4), 1.0);  // cosine starts at the peak
  // Step 9: progress 5/10, cos(pi/2) = 0 -> 0.1 + 0.9 * 0.5.
  EXPECT_NEAR(schedule.At(9), 0.55, 1e-12);
  // Step 13: progress 9/10, cos(0.9 pi) = -0.9510565163 -> 0.1 + 0.45 * 0.0489434837.
  EXPECT_NEAR(schedule.At(13), 0.1220245677, 1e-9);
  EXPECT_DOUBLE_EQ(schedule.At(14), 0.1);
  EXPECT_DOUBLE_EQ(schedule.At(100), 0.1);
}

TEST(LrScheduleTest, NoWarmup) {
  const LrSchedule schedule(2e-3, 0.0, 0, 10);
  EXPECT_DOUBLE_EQ(schedule.At(0), 2e-3);
  // Step 5: progress 1/2 -> half the peak.
  EXPECT_NEAR(schedule.At(5), 1e-3, 1e-15);
}

struct GroupingNetImpl : torch::nn::Module {
  GroupingNetImpl() {
    pos_embed = register_parameter("pos_embed", torch::zeros({4, 8}));
    fc = register_module("fc", torch::nn::Linear(8, 8));
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({8})));
    table = register_parameter("relative_position_bias_table", torch::zeros({9, 2}));
    frozen = register_parameter("frozen", torch::zeros({2, 2}), /*requires_grad=*/false);
  }
  torch::Tensor pos_embed;
  torch::nn::Linear fc{nullptr};
  torch::nn::LayerNorm norm1{nullptr};
  torch::Tensor table;
  torch::Tensor frozen;
};
TORCH_MODULE(GroupingNet);

TEST(WeightDecayTest, GroupsByName) {
  GroupingNet net;
  const TrainerOptions options;
  const ParameterGrouping grouping = GroupParameters(*net, options.no_decay_name_patterns);
  EXPECT_THAT(grouping.decay, ElementsAre("fc.weight"));
  EXPECT_THAT(grouping.no_decay,
              UnorderedElementsAre("pos_embed", "fc.bias", "norm1.weight", "norm1.bias",
                                   "relative_position_bias_table"));
}

TEST(WeightDecayTest, NameRules) {
  const std::vector<std::string> patterns = TrainerOptions().no_decay_name_patterns;
  const torch::Tensor matrix = torch::zeros({3, 3});
  EXPECT_TRUE(UsesWeightDecay("layers.0.blocks.1.attn.qkv.weight", matrix, patterns));
  EXPECT_FALSE(UsesWeightDecay("layers.0.downsample.norm.weight", matrix, patterns));
  EXPECT_FALSE(
      UsesWeightDecay("layers.0.blocks.1.attn.relative_position_bias_table", matrix, patterns));
  EXPECT_FALSE(UsesWeightDecay("head.fc.bias", matrix, patterns));
  EXPECT_FALSE(UsesWeightDecay("head.fc.weight", torch::zeros({3}), patterns));
}

TEST(WeightDecayTest, AdamWGroupsCarryTheirDecay) {
  GroupingNet net;
  TrainerOptions options;
  options.weight_decay = 0.05;
  options.lr = 3e-3;
  auto optimizer = MakeAdamW(*net, options);
  ASSERT_TRUE(optimizer.ok()) << optimizer.status();
  auto& groups = (*optimizer)->param_groups();
  ASSERT_EQ(groups.size(), 2u);
  const auto& decay = static_cast<const torch::optim::AdamWOptions&>(groups[0].options());
  const auto& no_decay = static_cast<const torch::optim::AdamWOptions&>(groups[1].options());
  EXPECT_DOUBLE_EQ(decay.weight_decay(), 0.05);
  EXPECT_DOUBLE_EQ(no_decay.weight_decay(), 0.0);
  EXPECT_DOUBLE_EQ(decay.lr(), 3e-3);
  EXPECT_EQ(groups[0].params().size(), 1u);
  EXPECT_EQ(groups[1].params().size(), 5u);
  SetLearningRate(**optimizer, 0.5);
  EXPECT_DOUBLE_EQ(groups[1].options().get_lr(), 0.5);
}

TEST(WeightDecayTest, RejectsBadHyperParameters) {
  GroupingNet net;
  TrainerOptions options;
  options.lr = -1.0;
  EXPECT_EQ(MakeAdamW(*net, options).status().code(), absl::StatusCode::kInvalidArgument);
  options.lr = 1e-3;
  options.beta2 = 1.0;
  EXPECT_EQ(MakeAdamW(*net, options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ClipTest, ScalesToMaxNorm) {
  torch::Tensor a = torch::zeros({2}, torch::requires_grad());
  torch::Tensor b = torch::zeros({1}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  const double norm = ClipGradientNorm({a, b}, 1.0);
  EXPECT_NEAR(norm, 5.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<float>(), 0.6f, 1e-5);
  EXPECT_NEAR(b.grad()[0].item<float>(), 0.8f, 1e-5);
}

TEST(ClipTest, LeavesSmallGradientsAlone) {
  torch::Tensor a = torch::zeros({2}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({3.0f, 4.0f});
  EXPECT_NEAR(ClipGradientNorm({a}, 10.0), 5.0, 1e-6);
  EXPECT_FLOAT_EQ(a.grad()[1].item<float>(), 4.0f);
  EXPECT_NEAR(ClipGradientNorm({a}, 0.0), 5.0, 1e-6);  // disabled: norm only
  EXPECT_FLOAT_EQ(a.grad()[1].item<float>(), 4.0f);
}

// The device variant scales like ClipGradientNorm and returns the norm as a tensor; it leaves
// gradients alone when the norm is small or not finite.
TEST(ClipTest, OnDeviceVariantMatchesTheHostOne) {
  torch::Tensor a = torch::zeros({2}, torch::requires_grad());
  torch::Tensor b = torch::zeros({1}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  torch::Tensor norm = ClipGradientNormOnDevice({a, b}, 1.0);
  ASSERT_TRUE(norm.defined());
  EXPECT_EQ(norm.dim(), 0);
  EXPECT_NEAR(norm.item<double>(), 5.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<float>(), 0.6f, 1e-5);
  EXPECT_NEAR(b.grad()[0].item<float>(), 0.8f, 1e-5);

  a.mutable_grad() = torch::tensor({3.0f, 4.0f});
  EXPECT_NEAR(ClipGradientNormOnDevice({a}, 10.0).item<double>(), 5.0, 1e-6);
  EXPECT_FLOAT_EQ(a.grad()[1].item<float>(), 4.0f);

  a.mutable_grad() = torch::tensor({std::numeric_limits<float>::infinity(), 4.0f});
  EXPECT_TRUE(std::isinf(ClipGradientNormOnDevice({a}, 1.0).item<double>()));
  EXPECT_FLOAT_EQ(a.grad()[1].item<float>(), 4.0f);

  torch::Tensor no_grad = torch::zeros({2}, torch::requires_grad());
  EXPECT_FALSE(ClipGradientNormOnDevice({no_grad}, 1.0).defined());
}

TEST(MetricsTest, TopKOnHandMadeLogits) {
  // Row 0: target 2 is the arg-max. Row 1: target 0 is second. Row 2: target 3 is last of 6.
  const torch::Tensor logits = torch::tensor({{0.1f, 0.2f, 0.9f, 0.0f, -1.f, -2.f},
                                              {0.5f, 0.7f, 0.1f, 0.0f, -1.f, -2.f},
                                              {0.5f, 0.7f, 0.1f, 0.0f, 0.2f, 0.3f}});
  const torch::Tensor targets = torch::tensor({2, 0, 3}, torch::kLong);
  EXPECT_EQ(TopKCorrect(logits, targets, 1), 1);
  EXPECT_EQ(TopKCorrect(logits, targets, 2), 2);
  EXPECT_EQ(TopKCorrect(logits, targets, 5), 2);
  EXPECT_EQ(TopKCorrect(logits, targets, 6), 3);
  EXPECT_EQ(TopKCorrect(logits, targets, 50), 3);  // k clamped to the class count
}

TEST(MetricsTest, EvaluateOverASplit) {
  const torch::Tensor logits = torch::tensor(
      {{2.0f, 0.0f, 0.0f}, {0.0f, 2.0f, 0.0f}, {0.0f, 2.0f, 0.0f}, {0.0f, 0.0f, 2.0f}});
  const torch::Tensor targets = torch::tensor({0, 1, 2, 0}, torch::kLong);
  TensorBatchSourceOptions source_options;
  source_options.batch_size = 3;
  source_options.shuffle = false;
  auto source = TensorBatchSource::Create(logits, targets, source_options);
  ASSERT_TRUE(source.ok()) << source.status();
  torch::nn::Identity identity;
  auto metrics = Evaluate(
      *identity, [](const torch::Tensor& x) { return x; }, **source, torch::kCPU);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(metrics->samples, 4);
  EXPECT_DOUBLE_EQ(metrics->top1, 0.5);
  EXPECT_DOUBLE_EQ(metrics->top5, 1.0);
  // Cross-entropy: right rows -log(e^2/(e^2+2)), wrong rows -log(1/(e^2+2)).
  const double e2 = std::exp(2.0);
  const double expected = 0.5 * (-std::log(e2 / (e2 + 2))) + 0.5 * std::log(e2 + 2);
  EXPECT_NEAR(metrics->loss, expected, 1e-5);
  EXPECT_TRUE(identity->is_training());  // mode restored
}

TEST(ClassificationLossTest, LabelSmoothing) {
  const torch::Tensor logits = torch::tensor({{1.0f, 0.0f, 0.0f}});
  const TrainBatch batch{logits, torch::tensor({0}, torch::kLong), torch::Tensor()};
  const LossFn loss_fn =
      ClassificationLoss([](const torch::Tensor& x) { return x; }, /*label_smoothing=*/0.3);
  const LossOutput output = loss_fn(batch);
  // Smoothed target: 0.3/3 on every class + 0.7 on class 0.
  const double log_z = std::log(std::exp(1.0) + 2.0);
  const double expected = 0.8 * (log_z - 1.0) + 0.1 * log_z + 0.1 * log_z;
  EXPECT_NEAR(output.loss.item<double>(), expected, 1e-6);
  ASSERT_EQ(output.terms.size(), 1u);
  EXPECT_EQ(output.terms[0].first, "ce");
}

TEST(TensorBatchSourceTest, ResumesMidEpochWithTheSameBatches) {
  const torch::Tensor inputs = torch::arange(10, torch::kFloat).view({10, 1});
  const torch::Tensor targets = torch::arange(10, torch::kLong);
  TensorBatchSourceOptions options;
  options.batch_size = 3;
  options.seed = 7;
  options.transform = [](TrainBatch batch, torch::Generator& generator) {
    batch.inputs = batch.inputs + torch::rand(batch.inputs.sizes(), generator);
    return batch;
  };
  auto a = TensorBatchSource::Create(inputs, targets, options);
  auto b = TensorBatchSource::Create(inputs, targets, options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->BatchesPerEpoch(), 4);
  ASSERT_TRUE((*a)->StartEpoch(2, 0).ok());
  ASSERT_TRUE((*b)->StartEpoch(2, 2).ok());
  (void)(*a)->Next();
  (void)(*a)->Next();
  auto from_a = (*a)->Next();
  auto from_b = (*b)->Next();
  ASSERT_TRUE(from_a.ok() && from_b.ok() && from_a->has_value() && from_b->has_value());
  EXPECT_TRUE(torch::equal((**from_a).inputs, (**from_b).inputs));
  EXPECT_TRUE(torch::equal((**from_a).targets, (**from_b).targets));
  // Another epoch is another order.
  ASSERT_TRUE((*b)->StartEpoch(3, 0).ok());
  ASSERT_TRUE((*a)->StartEpoch(2, 0).ok());
  auto first_a = (*a)->Next();
  auto first_b = (*b)->Next();
  EXPECT_FALSE(torch::equal((**first_a).targets, (**first_b).targets));
  EXPECT_EQ((*a)->StartEpoch(0, 5).code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace compress::pipeline
