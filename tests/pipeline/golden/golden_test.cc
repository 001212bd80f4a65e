// Parity with torchvision's SwinTransformer: the golden files (made by make_golden.py beside
// this file) hold a reduced torchvision Swin's random weights, a fixed input and its logits.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/pipeline/checkpoint/model_io.h"
#include "worker/pipeline/checkpoint/safetensors.h"
#include "worker/pipeline/model/swin.h"

namespace compress::pipeline {
namespace {

constexpr double kTolerance = 1e-4;

std::string GoldenPath(const char* file) { return absl::StrCat(COMPRESS_GOLDEN_DIR, "/", file); }

// The config make_golden.py gives torchvision.
SwinConfig GoldenConfig() {
  UniformSwinOptions options;
  options.image_size = 56;
  options.in_channels = 3;
  options.num_classes = 5;
  options.patch_size = 4;
  options.window_size = 7;
  options.embed_dim = 24;
  options.depths = {2, 2};
  options.num_heads = {2, 4};
  options.mlp_ratio = 4.0;
  options.drop_path_rate = 0.0;
  absl::StatusOr<SwinConfig> config = MakeUniformSwinConfig(options);
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

class GoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<SafetensorsContents> io = ReadSafetensors(GoldenPath("swin_io.safetensors"));
    ASSERT_TRUE(io.ok()) << io.status();
    for (auto& [name, tensor] : io->tensors) {
      if (name == "images") images_ = tensor;
      if (name == "logits") logits_ = tensor;
    }
    ASSERT_TRUE(images_.defined() && logits_.defined());
  }

  // Max |logits - golden| of `model` on the golden input, in eval mode.
  double MaxError(SwinTransformer& model) {
    model->eval();
    torch::NoGradGuard no_grad;
    return (model->forward(images_) - logits_).abs().max().item<double>();
  }

  SwinTransformer FreshModel() {
    absl::StatusOr<SwinTransformer> model = CreateSwinTransformer(GoldenConfig());
    EXPECT_TRUE(model.ok()) << model.status();
    return *model;
  }

  torch::Tensor images_;
  torch::Tensor logits_;
};

TEST_F(GoldenTest, TorchvisionWeightsGiveTorchvisionLogits) {
  SwinTransformer model = FreshModel();
  const double before = MaxError(model);
  ASSERT_TRUE(
      LoadWeights(model, GoldenPath("swin_torchvision.safetensors"), Naming::kTorchvision).ok());
  const double error = MaxError(model);
  EXPECT_LT(error, kTolerance);
  RecordProperty("max_abs_logit_error", std::to_string(error));
  std::printf("max |logit - torchvision logit| = %.3g\n", error);
  EXPECT_GT(before, 100 * kTolerance);  // A fresh model does not pass by accident.
}

TEST_F(GoldenTest, NamingIsDetectedAutomatically) {
  SwinTransformer model = FreshModel();
  absl::Status status =
      LoadWeights(model, GoldenPath("swin_torchvision.safetensors"), Naming::kAuto);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_LT(MaxError(model), kTolerance);
}

TEST_F(GoldenTest, ImportedWeightsRoundTripThroughNativeNames) {
  SwinTransformer model = FreshModel();
  ASSERT_TRUE(
      LoadWeights(model, GoldenPath("swin_torchvision.safetensors"), Naming::kTorchvision).ok());
  const std::string dir = ::testing::TempDir() + "/golden_round_trip";
  std::filesystem::remove_all(dir);
  absl::Status status = SaveModel(dir, model);
  ASSERT_TRUE(status.ok()) << status;
  absl::StatusOr<LoadedModel> loaded = LoadModel(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config, GoldenConfig());
  EXPECT_LT(MaxError(loaded->model), kTolerance);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(loaded->model->forward(images_), model->forward(images_)));
}

// The original Microsoft names, written here from torchvision's by a table of their own:
// patch_embed.{proj,norm}, layers.{s}.blocks.{b}.{..., mlp.fc1, mlp.fc2}, the patch merging
// as layers.{s}.downsample at the END of stage s, head.{weight,bias}, plus the attn_mask and
// relative_position_index buffers that the original checkpoints carry.
NamedTensors ToMicrosoftNames(const NamedTensors& torchvision) {
  const std::map<std::string, std::string> prefixes = {{"features.0.0.", "patch_embed.proj."},
                                                       {"features.0.2.", "patch_embed.norm."},
                                                       {"features.1.", "layers.0.blocks."},
                                                       {"features.2.", "layers.0.downsample."},
                                                       {"features.3.", "layers.1.blocks."},
                                                       {"head.", "head."},
                                                       {"norm.", "norm."}};
  NamedTensors renamed;
  for (const auto& [name, tensor] : torchvision) {
    std::string out;
    for (const auto& [from, to] : prefixes) {
      if (absl::StartsWith(name, from)) out = to + name.substr(from.size());
    }
    EXPECT_FALSE(out.empty()) << name;
    for (const auto& [from, to] :
         {std::pair<std::string, std::string>{".mlp.0.", ".mlp.fc1."}, {".mlp.3.", ".mlp.fc2."}}) {
      if (const size_t at = out.find(from); at != std::string::npos)
        out.replace(at, from.size(), to);
    }
    renamed.emplace_back(out, tensor);
  }
  renamed.emplace_back("layers.0.blocks.1.attn_mask", torch::zeros({4, 49, 49}));
  return renamed;
}

TEST_F(GoldenTest, MicrosoftNamesLoadToTheSameLogits) {
  absl::StatusOr<SafetensorsContents> torchvision =
      ReadSafetensors(GoldenPath("swin_torchvision.safetensors"));
  ASSERT_TRUE(torchvision.ok()) << torchvision.status();
  const std::string path = ::testing::TempDir() + "/golden_microsoft.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, ToMicrosoftNames(torchvision->tensors)).ok());

  for (Naming naming : {Naming::kMicrosoft, Naming::kAuto}) {
    SwinTransformer model = FreshModel();
    absl::Status status = LoadWeights(model, path, naming);
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_LT(MaxError(model), kTolerance) << NamingName(naming);
  }
  // Read as native names, the Microsoft layout is rejected, naming the misplaced merging.
  SwinTransformer model = FreshModel();
  absl::Status status = LoadWeights(model, path, Naming::kNative);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), ::testing::HasSubstr("layers.0.downsample.reduction.weight"));
  EXPECT_THAT(status.message(), ::testing::HasSubstr("head.fc.weight"));
}

}  // namespace
}  // namespace compress::pipeline
