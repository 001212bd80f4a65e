// Tests of SaveModel / LoadModel / LoadStateDict and of the naming schemes.
#include "worker/pipeline/checkpoint/model_io.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "nlohmann/json.hpp"
#include "worker/pipeline/checkpoint/naming.h"
#include "worker/pipeline/checkpoint/safetensors.h"

namespace compress::pipeline {
namespace {

using ::testing::HasSubstr;

SwinConfig UnevenConfig() {
  SwinConfig config = *SwinPreset("swin_micro");
  config.stages[0].dim = 40;
  config.stages[0].blocks = {{2, 16, 96}, {3, 8, 72}};
  config.stages[1].dim = 72;
  config.stages[1].blocks = {{4, 24, 200}, {1, 40, 64}};
  return config;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/model_io_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

SwinTransformer Build(const SwinConfig& config) {
  absl::StatusOr<SwinTransformer> model = CreateSwinTransformer(config);
  EXPECT_TRUE(model.ok()) << model.status();
  return *model;
}

TEST(ModelIoTest, SaveThenLoadGivesIdenticalOutputs) {
  torch::manual_seed(0);
  for (const SwinConfig& config : {*SwinPreset("swin_micro"), UnevenConfig()}) {
    SwinTransformer model = Build(config);
    const std::string dir = FreshDir("round_trip");
    absl::Status saved = SaveModel(dir, model);
    ASSERT_TRUE(saved.ok()) << saved;
    EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors"));
    EXPECT_TRUE(std::filesystem::exists(dir + "/config.json"));

    absl::StatusOr<LoadedModel> loaded = LoadModel(dir);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->config, config);
    model->eval();
    loaded->model->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor images = torch::randn({2, 1, 28, 28});
    EXPECT_TRUE(torch::equal(model->forward(images), loaded->model->forward(images)));
  }
}

TEST(ModelIoTest, StoredTensorsAreTheStateDict) {
  SwinTransformer model = Build(*SwinPreset("swin_micro"));
  const std::string dir = FreshDir("contents");
  ASSERT_TRUE(SaveModel(dir, model).ok());
  absl::StatusOr<SafetensorsContents> contents = ReadSafetensors(dir + "/model.safetensors");
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_EQ(contents->tensors.size(), model->StateDict().size());
  EXPECT_EQ(contents->metadata.at("format"), "pt");
}

TEST(ModelIoTest, WrongShapeIsReportedByName) {
  SwinTransformer model = Build(*SwinPreset("swin_micro"));
  const std::string dir = FreshDir("wrong_shape");
  ASSERT_TRUE(SaveModel(dir, model).ok());
  NamedTensors tensors = model->StateDict();
  for (auto& [name, tensor] : tensors) {
    if (name == "layers.1.blocks.0.mlp.fc1.weight") tensor = torch::zeros({100, 96});
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  absl::StatusOr<LoadedModel> loaded = LoadModel(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("\"layers.1.blocks.0.mlp.fc1.weight\" has shape [100,96] but the model "
                        "expects [384,96]"));
  EXPECT_THAT(loaded.status().message(), HasSubstr(dir + "/model.safetensors"));
}

TEST(ModelIoTest, MissingAndUnexpectedTensorsAreReportedByName) {
  SwinTransformer model = Build(*SwinPreset("swin_micro"));
  NamedTensors tensors;
  for (const auto& [name, tensor] : model->StateDict()) {
    if (name != "layers.0.blocks.1.attn.relative_position_bias_table") {
      tensors.emplace_back(name, tensor.clone());
    }
  }
  tensors.emplace_back("layers.0.blocks.1.attn.extra", torch::zeros({1}));
  SwinTransformer target = Build(*SwinPreset("swin_micro"));
  const torch::Tensor before = target->norm->weight.clone();
  absl::Status status = LoadStateDict(target, tensors, "test");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      status.message(),
      HasSubstr("missing tensors: \"layers.0.blocks.1.attn.relative_position_bias_table\""));
  EXPECT_THAT(status.message(), HasSubstr("unexpected tensors: \"layers.0.blocks.1.attn.extra\""));
  // Nothing was copied.
  EXPECT_TRUE(torch::equal(target->norm->weight, before));
}

TEST(ModelIoTest, HalfPrecisionWeightsAreConverted) {
  SwinTransformer model = Build(*SwinPreset("swin_micro"));
  NamedTensors tensors;
  for (const auto& [name, tensor] : model->StateDict()) {
    tensors.emplace_back(name, tensor.to(torch::kBFloat16));
  }
  SwinTransformer target = Build(*SwinPreset("swin_micro"));
  ASSERT_TRUE(LoadStateDict(target, tensors, "bf16").ok());
  EXPECT_EQ(target->head->fc->weight.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(target->head->fc->weight,
                           model->head->fc->weight.to(torch::kBFloat16).to(torch::kFloat)));
}

TEST(ModelIoTest, BadConfigJsonNamesFileAndField) {
  SwinTransformer model = Build(*SwinPreset("swin_micro"));
  const std::string dir = FreshDir("bad_config");
  ASSERT_TRUE(SaveModel(dir, model).ok());
  {
    std::ofstream out(dir + "/config.json");
    nlohmann::json json = model->config().ToJson();
    json["stages"][0]["width"] = 3;
    out << json.dump();
  }
  absl::StatusOr<LoadedModel> loaded = LoadModel(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr("config.json"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("stages[0].width"));
}

// A config.json claiming far more parameters than the weights file holds is refused before the
// model is built (a block with an MLP of 5e8 units would need 32 GB).
TEST(ModelIoTest, ConfigLargerThanItsWeightsIsDataLossBeforeBuilding) {
  SwinTransformer model = Build(*SwinPreset("swin_micro"));
  const std::string dir = FreshDir("config_too_large");
  ASSERT_TRUE(SaveModel(dir, model).ok());
  SwinConfig huge = model->config();
  huge.stages[0].blocks[0].mlp_hidden = 500'000'000;
  std::ofstream(dir + "/config.json") << huge.ToJsonString();
  absl::StatusOr<LoadedModel> loaded = LoadModel(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("config.json: describes a model of "));
  EXPECT_THAT(loaded.status().message(), HasSubstr("model.safetensors"));
}

TEST(ModelIoTest, MissingCheckpointIsNotFound) {
  EXPECT_EQ(LoadModel(FreshDir("nothing")).status().code(), absl::StatusCode::kNotFound);
  SwinTransformer model = Build(*SwinPreset("swin_micro"));
  const std::string dir = FreshDir("no_weights");
  ASSERT_TRUE(SaveModel(dir, model).ok());
  std::filesystem::remove(dir + "/model.safetensors");
  absl::StatusOr<LoadedModel> loaded = LoadModel(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(loaded.status().message(), HasSubstr("model.safetensors"));
}

TEST(ModelIoTest, CorruptWeightsAreDataLoss) {
  SwinTransformer model = Build(*SwinPreset("swin_micro"));
  const std::string dir = FreshDir("corrupt");
  ASSERT_TRUE(SaveModel(dir, model).ok());
  std::filesystem::resize_file(dir + "/model.safetensors",
                               std::filesystem::file_size(dir + "/model.safetensors") - 100);
  EXPECT_EQ(LoadModel(dir).status().code(), absl::StatusCode::kDataLoss);
}

TEST(ModelIoTest, NonFiniteWeightsAreDataLossNamingTheTensor) {
  SwinTransformer model = Build(*SwinPreset("swin_micro"));
  for (const float bad :
       {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    const std::string dir = FreshDir("non_finite");
    NamedTensors tensors = model->StateDict();
    for (auto& [name, tensor] : tensors) {
      if (name == "layers.1.blocks.0.mlp.fc1.weight") {
        tensor = tensor.clone();
        tensor[3][5] = bad;
      }
    }
    ASSERT_TRUE(SaveModel(dir, model).ok());
    ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
    absl::StatusOr<LoadedModel> loaded = LoadModel(dir);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
    EXPECT_THAT(loaded.status().message(), HasSubstr(dir + "/model.safetensors"));
    EXPECT_THAT(loaded.status().message(),
                HasSubstr("\"layers.1.blocks.0.mlp.fc1.weight\" has non-finite values"));
  }
}

TEST(NamingTest, TorchvisionNames) {
  const Naming tv = Naming::kTorchvision;
  EXPECT_EQ(ToNativeName("features.0.0.weight", tv), "patch_embed.proj.weight");
  EXPECT_EQ(ToNativeName("features.0.2.bias", tv), "patch_embed.norm.bias");
  EXPECT_EQ(ToNativeName("features.1.0.attn.qkv.weight", tv), "layers.0.blocks.0.attn.qkv.weight");
  EXPECT_EQ(ToNativeName("features.5.4.mlp.0.weight", tv), "layers.2.blocks.4.mlp.fc1.weight");
  EXPECT_EQ(ToNativeName("features.7.1.mlp.3.bias", tv), "layers.3.blocks.1.mlp.fc2.bias");
  EXPECT_EQ(ToNativeName("features.3.1.attn.relative_position_bias_table", tv),
            "layers.1.blocks.1.attn.relative_position_bias_table");
  EXPECT_EQ(ToNativeName("features.2.reduction.weight", tv),
            "layers.1.downsample.reduction.weight");
  EXPECT_EQ(ToNativeName("features.6.norm.weight", tv), "layers.3.downsample.norm.weight");
  EXPECT_EQ(ToNativeName("norm.weight", tv), "norm.weight");
  EXPECT_EQ(ToNativeName("head.bias", tv), "head.fc.bias");
  EXPECT_EQ(ToNativeName("features.1.0.attn.relative_position_index", tv), std::nullopt);
}

TEST(NamingTest, MicrosoftNames) {
  const Naming ms = Naming::kMicrosoft;
  EXPECT_EQ(ToNativeName("patch_embed.proj.weight", ms), "patch_embed.proj.weight");
  EXPECT_EQ(ToNativeName("layers.0.downsample.reduction.weight", ms),
            "layers.1.downsample.reduction.weight");
  EXPECT_EQ(ToNativeName("layers.2.downsample.norm.bias", ms), "layers.3.downsample.norm.bias");
  EXPECT_EQ(ToNativeName("layers.2.blocks.5.mlp.fc2.weight", ms),
            "layers.2.blocks.5.mlp.fc2.weight");
  EXPECT_EQ(ToNativeName("head.weight", ms), "head.fc.weight");
  EXPECT_EQ(ToNativeName("layers.1.blocks.1.attn_mask", ms), std::nullopt);
  EXPECT_EQ(ToNativeName("layers.1.blocks.1.attn.relative_position_index", ms), std::nullopt);
}

TEST(NamingTest, DetectionAndParsing) {
  EXPECT_EQ(DetectNaming({"features.0.0.weight"}), Naming::kTorchvision);
  EXPECT_EQ(DetectNaming({"norm.weight", "head.fc.weight"}), Naming::kNative);
  EXPECT_EQ(DetectNaming({"layers.0.downsample.norm.weight", "head.weight"}), Naming::kMicrosoft);
  EXPECT_EQ(DetectNaming({"layers.1.downsample.norm.weight"}), Naming::kNative);
  EXPECT_EQ(*ParseNaming("torchvision"), Naming::kTorchvision);
  EXPECT_EQ(*ParseNaming("timm"), Naming::kNative);
  EXPECT_EQ(ParseNaming("hf").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace compress::pipeline
