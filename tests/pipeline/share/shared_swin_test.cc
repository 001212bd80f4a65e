// Tests of the shared Swin: its config, equivalence with the unshared model, gradients,
// parameter and operation counts, and checkpoints.
#include "worker/pipeline/share/shared_swin.h"

#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/pipeline/share/share_test_util.h"
#include "worker/pipeline/checkpoint/model_io.h"
#include "worker/pipeline/checkpoint/safetensors.h"
#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/share/share_from_teacher.h"
#include "worker/pipeline/share/shared_cost.h"
#include "worker/pipeline/share/sharing_config.h"

namespace compress::pipeline {
namespace {

using testing::EqualiseGroups;
using testing::MaxAbsDiff;
using testing::TinyConfig;
using testing::TinyTeacher;

std::string TempDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      (name + "_" + std::to_string(::getpid()) + "_" +
       ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  return dir.string();
}

// Random, non-identity transforms, so that they are exercised.
void PerturbTransforms(SharedSwin& model) {
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    if (name.find("proj_l") != std::string::npos || name.find("proj_w") != std::string::npos ||
        name.find("mlp_transform") != std::string::npos) {
      item.value().add_(torch::randn_like(item.value()) * 0.1);
    }
  }
}

TEST(SharingConfigTest, JsonRoundTripAndDefaults) {
  SharingConfig config = DefaultSharing(TinyConfig());
  EXPECT_EQ(config.group_sizes, (std::vector<std::vector<int>>{{2}, {3}}));
  config.group_sizes = {{1, 1}, {2, 1}};
  config.mlp_transform = false;
  ASSERT_TRUE(config.Validate().ok());
  EXPECT_EQ(config.group_of_block(1, 2), 1);
  EXPECT_EQ(config.pass_of_block(1, 1), 1);
  absl::StatusOr<SharingConfig> back = SharingConfig::FromJsonString(config.ToJsonString());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, config);
  EXPECT_EQ(UniformGroupSizes(TinyConfig(), 2), (std::vector<std::vector<int>>{{2}, {2, 1}}));
}

TEST(SharingConfigTest, RejectsBadSharingNamingTheField) {
  SharingConfig config = DefaultSharing(TinyConfig());
  config.group_sizes = {{2}, {2}};
  absl::Status status = config.Validate();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("group_sizes[1] sums to 2"), std::string::npos) << status;

  config.base.stages[1].blocks[1].mlp_hidden = 8;  // block 1 of stage 1 narrower than block 0
  config.group_sizes = {{2}, {3}};
  status = config.Validate();
  EXPECT_NE(status.message().find("other widths"), std::string::npos) << status;

  nlohmann::json json = DefaultSharing(TinyConfig()).ToJson();
  json["sharing"]["extra"] = 1;
  status = SharingConfig::FromJson(json).status();
  EXPECT_NE(status.message().find("sharing.extra"), std::string::npos) << status;
  json = TinyConfig().ToJson();  // a plain model's config
  status = SharingConfig::FromJson(json).status();
  EXPECT_NE(status.message().find("\"sharing\""), std::string::npos) << status;
}

// The central property: identity transforms and shared weights copied from one block give
// exactly the unshared model with every block of the group set to those weights.
void ExpectEquivalent(const std::vector<std::vector<int>>& group_sizes) {
  SwinTransformer teacher = TinyTeacher();
  SharingOptions options;
  options.group_sizes = group_sizes;
  absl::StatusOr<SharingConfig> config = MakeSharingConfig(teacher->config(), options);
  ASSERT_TRUE(config.ok()) << config.status();
  EqualiseGroups(teacher, *config);
  absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, options);
  ASSERT_TRUE(shared.ok()) << shared.status();
  teacher->eval();
  (*shared)->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor images = torch::randn({3, 3, 16, 16});
  SwinOutput expected = teacher->ForwardWithHidden(images);
  SharedForwardRequest request;
  request.stage_hidden = true;
  SharedSwinOutput actual = (*shared)->Forward(images, request);
  EXPECT_LT(MaxAbsDiff(actual.logits, expected.logits), 1e-5);
  ASSERT_EQ(actual.stage_hidden.size(), 2u);
  for (int s = 0; s < 2; ++s) {
    EXPECT_LT(MaxAbsDiff(actual.stage_hidden[s], expected.stage_hidden[s]), 1e-5) << s;
  }
}

TEST(SharedSwinTest, IdentityTransformsMatchTheUnsharedModel) { ExpectEquivalent({}); }

TEST(SharedSwinTest, IdentityTransformsMatchWithSeveralGroupsPerStage) {
  ExpectEquivalent({{1, 1}, {2, 1}});
}

TEST(SharedSwinTest, TransformsChangeTheOutput) {
  SwinTransformer teacher = TinyTeacher();
  absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, SharingOptions());
  ASSERT_TRUE(shared.ok());
  (*shared)->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor images = torch::randn({2, 3, 16, 16});
  const torch::Tensor before = (*shared)->forward(images);
  PerturbTransforms(*shared);
  EXPECT_GT(MaxAbsDiff((*shared)->forward(images), before), 1e-4);
}

TEST(SharedSwinTest, MeanInitAveragesTheGroupsBlocks) {
  SwinTransformer teacher = TinyTeacher();
  SharingOptions options;
  options.init = SharedInit::kMean;
  absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, options);
  ASSERT_TRUE(shared.ok());
  const torch::Tensor expected =
      (teacher->block(1, 0)->mlp->fc1->weight + teacher->block(1, 1)->mlp->fc1->weight +
       teacher->block(1, 2)->mlp->fc1->weight) /
      3.0;
  EXPECT_LT(MaxAbsDiff((*shared)->group(1, 0)->shared->mlp->fc1->weight, expected), 1e-6);
  // Norms come from the block each pass replaces.
  EXPECT_TRUE((*shared)->pass(1, 2)->norm2->weight.equal(teacher->block(1, 2)->norm2->weight));
  EXPECT_TRUE((*shared)->head->fc->weight.equal(teacher->head->fc->weight));
}

// The shared weight's gradient is the sum of the gradients its passes would give to the
// blocks of the unshared model: every pass contributes.
TEST(SharedSwinTest, GradientsReachSharedWeightsFromEveryPass) {
  SwinTransformer teacher = TinyTeacher();
  SharingOptions options;
  absl::StatusOr<SharingConfig> config = MakeSharingConfig(teacher->config(), options);
  ASSERT_TRUE(config.ok());
  EqualiseGroups(teacher, *config);
  absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, options);
  ASSERT_TRUE(shared.ok());
  teacher->eval();
  (*shared)->eval();
  const torch::Tensor images = torch::randn({2, 3, 16, 16});
  teacher->forward(images).pow(2).sum().backward();
  (*shared)->forward(images).pow(2).sum().backward();
  for (int s = 0; s < 2; ++s) {
    SharedBlockWeights weights = (*shared)->group(s, 0)->shared;
    torch::Tensor qkv_sum = torch::zeros_like(weights->attn->qkv->weight);
    torch::Tensor fc2_sum = torch::zeros_like(weights->mlp->fc2->weight);
    torch::Tensor table_sum = torch::zeros_like(weights->attn->relative_position_bias_table);
    for (int b = 0; b < config->group_sizes[s][0]; ++b) {
      const torch::Tensor block_grad = teacher->block(s, b)->attn->qkv->weight.grad();
      EXPECT_GT(block_grad.abs().sum().item<double>(), 0.0) << s << "/" << b;
      qkv_sum += block_grad;
      fc2_sum += teacher->block(s, b)->mlp->fc2->weight.grad();
      table_sum += teacher->block(s, b)->attn->relative_position_bias_table.grad();
    }
    const double scale = qkv_sum.abs().max().item<double>();
    EXPECT_LT(MaxAbsDiff(weights->attn->qkv->weight.grad(), qkv_sum), 1e-4 * scale) << s;
    EXPECT_LT(MaxAbsDiff(weights->mlp->fc2->weight.grad(), fc2_sum),
              1e-4 * fc2_sum.abs().max().item<double>())
        << s;
    EXPECT_LT(MaxAbsDiff(weights->attn->relative_position_bias_table.grad(), table_sum),
              1e-4 * table_sum.abs().max().item<double>())
        << s;
    // The transforms are trainable from the start.
    EXPECT_GT((*shared)->pass(s, 1)->proj_l->weight.grad().abs().sum().item<double>(), 0.0);
    EXPECT_GT((*shared)->pass(s, 1)->mlp_transform->conv->weight.grad().abs().sum().item<double>(),
              0.0);
  }
}

int64_t CountParameters(const torch::nn::Module& module) {
  int64_t count = 0;
  for (const auto& parameter : module.parameters()) count += parameter.numel();
  return count;
}

TEST(SharedSwinTest, ParameterCountsDropAsComputed) {
  SwinTransformer teacher = TinyTeacher();
  for (bool transforms : {false, true}) {
    SharingOptions options;
    options.attention_transform = transforms;
    options.mlp_transform = transforms;
    absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, options);
    ASSERT_TRUE(shared.ok());
    absl::StatusOr<SharedCost> cost = AnalyzeSharedCost((*shared)->config());
    ASSERT_TRUE(cost.ok());
    EXPECT_EQ(cost->base_params, CountParameters(*teacher));
    EXPECT_EQ(cost->params, CountParameters(**shared));
    // Independently: each non-first block's qkv, proj, table, fc1, fc2 is dropped.
    int64_t dropped = 0;
    for (int s = 0; s < 2; ++s) {
      for (int b = 1; b < static_cast<int>(teacher->config().stages[s].blocks.size()); ++b) {
        SwinBlock block = teacher->block(s, b);
        dropped += CountParameters(*block->attn) + CountParameters(*block->mlp);
      }
    }
    int64_t transform_params = 0;
    for (const auto& item : (*shared)->named_parameters()) {
      const std::string& name = item.key();
      if (name.find("proj_l") != std::string::npos || name.find("proj_w") != std::string::npos ||
          name.find("mlp_transform") != std::string::npos) {
        transform_params += item.value().numel();
      }
    }
    EXPECT_EQ(transform_params, cost->transform_params);
    EXPECT_EQ(CountParameters(*teacher) - CountParameters(**shared), dropped - transform_params);
    if (!transforms) {
      EXPECT_EQ(transform_params, 0);
    }
  }
}

TEST(SharedSwinTest, AnalyticOperationsEqualCounted) {
  SwinTransformer teacher = TinyTeacher();
  for (const std::vector<std::vector<int>>& groups :
       {std::vector<std::vector<int>>{}, std::vector<std::vector<int>>{{1, 1}, {2, 1}}}) {
    for (bool transforms : {false, true}) {
      SharingOptions options;
      options.group_sizes = groups;
      options.attention_transform = transforms;
      options.mlp_transform = transforms;
      absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, options);
      ASSERT_TRUE(shared.ok());
      (*shared)->eval();
      absl::StatusOr<SharedCost> cost = AnalyzeSharedCost((*shared)->config());
      ASSERT_TRUE(cost.ok());
      torch::NoGradGuard no_grad;
      MacCounter counter;
      (*shared)->forward(torch::randn({2, 3, 16, 16}));
      EXPECT_EQ(counter.count().macs, 2 * cost->total.macs) << transforms;
      EXPECT_EQ(counter.count().elementwise, 2 * cost->total.elementwise) << transforms;
      if (!transforms) {
        EXPECT_EQ(cost->total, cost->base_total);
      }
      if (transforms) {
        EXPECT_GT(cost->transforms.macs, 0);
      }
    }
  }
}

TEST(SharedCheckpointTest, SaveLoadRoundTripGivesIdenticalOutputs) {
  SwinTransformer teacher = TinyTeacher();
  SharingOptions options;
  options.group_sizes = {{2}, {2, 1}};
  absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, options);
  ASSERT_TRUE(shared.ok());
  PerturbTransforms(*shared);
  const std::string dir = TempDir("shared_ckpt");
  ASSERT_TRUE(SaveSharedModel(dir, *shared).ok());
  absl::StatusOr<SharedSwin> loaded = LoadSharedModel(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->config(), (*shared)->config());
  (*shared)->eval();
  (*loaded)->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor images = torch::randn({2, 3, 16, 16});
  EXPECT_TRUE((*loaded)->forward(images).equal((*shared)->forward(images)));
  // A plain model's loader rejects the shared checkpoint (its config has "sharing").
  EXPECT_FALSE(LoadModel(dir).ok());
  std::filesystem::remove_all(dir);
}

TEST(SharedCheckpointTest, StrictLoadNamesTheTensors) {
  SwinTransformer teacher = TinyTeacher();
  absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, SharingOptions());
  ASSERT_TRUE(shared.ok());
  NamedTensors tensors = (*shared)->StateDict();
  NamedTensors broken;
  for (auto& [name, tensor] : tensors) {
    if (name == "layers.1.groups.0.passes.2.proj_w.weight") continue;
    if (name == "layers.0.groups.0.shared.mlp.fc1.weight") {
      broken.emplace_back(name, torch::zeros({3, 3}));
    } else {
      broken.emplace_back(name, tensor);
    }
  }
  broken.emplace_back("layers.0.blocks.0.norm1.weight", torch::zeros({8}));
  absl::Status status = LoadSharedStateDict(*shared, broken, "test");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  for (const char* name :
       {"layers.1.groups.0.passes.2.proj_w.weight", "layers.0.groups.0.shared.mlp.fc1.weight",
        "layers.0.blocks.0.norm1.weight"}) {
    EXPECT_NE(status.message().find(name), std::string::npos) << status;
  }
  // A plain model's checkpoint cannot be loaded as a shared one.
  const std::string dir = TempDir("plain_ckpt");
  ASSERT_TRUE(SaveModel(dir, teacher).ok());
  EXPECT_EQ(LoadSharedModel(dir).status().code(), absl::StatusCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
}

TEST(SharedSwinTest, ParameterNamesAreStable) {
  absl::StatusOr<SharedSwin> shared = CreateSharedSwin(DefaultSharing(TinyConfig()));
  ASSERT_TRUE(shared.ok());
  std::map<std::string, std::vector<int64_t>> names;
  for (const auto& [name, tensor] : (*shared)->StateDict()) {
    names[name] = tensor.sizes().vec();
  }
  const std::map<std::string, std::vector<int64_t>> expected_subset = {
      {"layers.0.groups.0.shared.attn.qkv.weight", {24, 8}},
      {"layers.0.groups.0.shared.attn.relative_position_bias_table", {49, 2}},
      {"layers.1.groups.0.shared.mlp.fc1.weight", {32, 16}},
      {"layers.0.groups.0.passes.1.norm1.weight", {8}},
      {"layers.1.groups.0.passes.2.proj_l.weight", {4, 4}},
      {"layers.1.groups.0.passes.2.proj_w.bias", {4}},
      {"layers.1.groups.0.passes.0.mlp_transform.norm.weight", {16}},
      {"layers.1.groups.0.passes.0.mlp_transform.conv.weight", {16, 1, 7, 7}},
      {"layers.1.downsample.reduction.weight", {16, 32}},
      {"head.fc.weight", {5, 16}}};
  for (const auto& [name, shape] : expected_subset) {
    ASSERT_TRUE(names.count(name)) << name;
    EXPECT_EQ(names[name], shape) << name;
  }
  for (const auto& [name, shape] : names) {
    EXPECT_EQ(name.find("attn_mask"), std::string::npos);
    EXPECT_EQ(name.find("relative_position_index"), std::string::npos);
  }
}

}  // namespace
}  // namespace compress::pipeline
