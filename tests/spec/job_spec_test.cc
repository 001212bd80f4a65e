#include "worker/spec/job_spec.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace compress::spec {
namespace {

constexpr char kMinimal[] = R"({
  "dataset": {"format": "fashion_mnist", "path": "/data/fmnist"},
  "teacher": {"train": {"epochs": 3}}
})";

TEST(JobSpecTest, MinimalSpecTakesDefaults) {
  auto spec = ParseJobSpec(kMinimal);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model.preset, "swin_micro");
  EXPECT_EQ(spec->teacher.train.epochs, 3);
  EXPECT_EQ(spec->teacher.train.batch_size, 64);
  EXPECT_DOUBLE_EQ(spec->teacher.train.weight_decay, 0.05);
  EXPECT_DOUBLE_EQ(spec->prune.target_macs_reduction, 0.32);
  EXPECT_EQ(spec->prune.importance, "taylor");
  EXPECT_TRUE(spec->share.attention_transform);
  EXPECT_EQ(spec->share.init, "first");
  EXPECT_DOUBLE_EQ(spec->share.hidden_loss_weight, 0.1);
  EXPECT_EQ(spec->prune.ranking, "global");
  EXPECT_EQ(spec->prune.attention, "heads");
  EXPECT_EQ(spec->prune.calibration_batches, 8);
  EXPECT_TRUE(spec->distill.cache_teacher_logits);
  EXPECT_EQ(spec->resources.device, "auto");
}

TEST(JobSpecTest, ProtobufJsonFormIsAccepted) {
  // What protobuf's JSON printer writes: int64 as strings, lowerCamelCase when names are not
  // preserved, zero values omitted, explicit zeros for `optional` fields.
  auto spec = ParseJobSpec(R"({
    "dataset": {"format": "synthetic", "syntheticTrain": 64},
    "teacher": {"train": {"maxSteps": 10, "weightDecay": 0, "clipGradNorm": 0}},
    "distill": {"enabled": true, "train": {"epochs": 1}, "alpha": 0},
    "share": {"attentionTransform": false},
    "resources": {"time_limit_seconds": "3600", "seed": "-7"}
  })");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset.synthetic_train, 64);
  EXPECT_EQ(spec->teacher.train.max_steps, 10);
  EXPECT_DOUBLE_EQ(spec->teacher.train.weight_decay, 0.0);
  EXPECT_DOUBLE_EQ(spec->teacher.train.clip_grad_norm, 0.0);
  EXPECT_DOUBLE_EQ(spec->distill.alpha, 0.0);
  EXPECT_FALSE(spec->share.attention_transform);
  EXPECT_EQ(spec->resources.time_limit_seconds, 3600);
  EXPECT_EQ(spec->resources.seed, -7);
}

TEST(JobSpecTest, ToJsonRoundTrips) {
  auto spec = ParseJobSpec(R"({
    "model": {"config": {"image_size": 32, "in_channels": 3, "num_classes": 5, "patch_size": 4,
              "embed_dim": 24, "depths": [2, 2], "num_heads": [2, 4], "window_size": 4}},
    "dataset": {"format": "synthetic", "synthetic_classes": 5},
    "teacher": {"train": {"max_steps": 5, "label_smoothing": 0}},
    "prune": {"enabled": true, "target_macs_reduction": 0.4, "importance": "l2"}
  })");
  ASSERT_TRUE(spec.ok()) << spec.status();
  nlohmann::json first = ToJson(*spec);
  auto again = ParseJobSpecJson(first);
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << first.dump(2);
  EXPECT_EQ(ToJson(*again), first);
  EXPECT_TRUE(again->model.has_config);
  EXPECT_EQ(again->model.config.depths, (std::vector<int>{2, 2}));
  EXPECT_DOUBLE_EQ(again->teacher.train.label_smoothing, 0.0);
}

// A params target replaces the MAC target: the normalised spec carries only the one in use, so
// that it parses again, and a spec without it normalises without the field.
TEST(JobSpecTest, ParamsTargetReplacesTheMacTarget) {
  auto spec = ParseJobSpec(R"({"dataset": {"format": "synthetic"},
    "teacher": {"train": {"epochs": 1}},
    "prune": {"enabled": true, "target_params_reduction": 0.5}})");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_DOUBLE_EQ(spec->prune.target_params_reduction, 0.5);
  nlohmann::json json = ToJson(*spec);
  EXPECT_FALSE(json["prune"].contains("target_macs_reduction")) << json["prune"].dump();
  EXPECT_DOUBLE_EQ(json["prune"]["target_params_reduction"].get<double>(), 0.5);
  auto again = ParseJobSpecJson(json);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ToJson(*again), json);

  auto macs = ParseJobSpec(R"({"dataset": {"format": "synthetic"},
    "teacher": {"train": {"epochs": 1}}, "prune": {"target_params_reduction": 0}})");
  ASSERT_TRUE(macs.ok()) << macs.status();
  EXPECT_DOUBLE_EQ(macs->prune.target_params_reduction, 0.0);
  EXPECT_FALSE(ToJson(*macs)["prune"].contains("target_params_reduction"));
  EXPECT_DOUBLE_EQ(ToJson(*macs)["prune"]["target_macs_reduction"].get<double>(), 0.32);

  auto both = ParseJobSpec(R"({"dataset": {"format": "synthetic"},
    "teacher": {"train": {"epochs": 1}},
    "prune": {"target_macs_reduction": 0.3, "target_params_reduction": 0.5}})");
  ASSERT_FALSE(both.ok());
  EXPECT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(both.status().message().find("spec.prune.target_params_reduction: set "
                                         "target_macs_reduction or target_params_reduction, "
                                         "not both"),
            absl::string_view::npos)
      << both.status();
  auto range = ParseJobSpec(R"({"dataset": {"format": "synthetic"},
    "teacher": {"train": {"epochs": 1}}, "prune": {"targetParamsReduction": 0.99}})");
  ASSERT_FALSE(range.ok());
  EXPECT_NE(range.status().message().find(
                "spec.prune.target_params_reduction: must be in [0.001, 0.95], got 0.99"),
            absl::string_view::npos)
      << range.status();
}

TEST(JobSpecTest, ModelConfigIsThePresetOrTheExplicitConfig) {
  auto preset = ParseJobSpec(kMinimal);
  ASSERT_TRUE(preset.ok()) << preset.status();
  auto config = ModelConfig(*preset);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->image_size, 28);  // swin_micro
  EXPECT_EQ(config->num_classes, 10);
  EXPECT_EQ(config->stages.size(), 2u);

  auto explicit_config = ParseJobSpec(R"({
    "model": {"num_classes": 7, "config": {"image_size": 32, "in_channels": 3, "patch_size": 4,
              "embed_dim": 16, "depths": [1, 2], "num_heads": [2, 4], "window_size": 4,
              "mlp_ratio": 2}},
    "dataset": {"format": "synthetic", "image_size": 32, "synthetic_classes": 7},
    "teacher": {"train": {"epochs": 1}}})");
  ASSERT_TRUE(explicit_config.ok()) << explicit_config.status();
  config = ModelConfig(*explicit_config);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_classes, 7);
  EXPECT_EQ(config->in_channels, 3);
  ASSERT_EQ(config->stages.size(), 2u);
  EXPECT_EQ(config->stages[1].dim, 32);
  ASSERT_EQ(config->stages[1].blocks.size(), 2u);
  EXPECT_EQ(config->stages[1].blocks[0].num_heads, 4);
  EXPECT_EQ(config->stages[1].blocks[0].mlp_hidden, 64);
}

TEST(JobSpecTest, DevicesTakeCudaWithOrWithoutAnIndex) {
  for (const char* device : {"auto", "cpu", "cuda", "cuda:0", "cuda:12"}) {
    auto spec = ParseJobSpec(absl::StrCat(
        R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
            "resources": {"device": ")",
        device, R"("}})"));
    ASSERT_TRUE(spec.ok()) << device << ": " << spec.status();
    EXPECT_EQ(spec->resources.device, device);
  }
}

TEST(JobSpecTest, ErrorsNameTheField) {
  struct Case {
    const char* json;
    const char* expected;
  } cases[] = {
      {R"({"teacher": {"train": {"epochs": 1}}})", "spec.dataset.format: required"},
      {R"({"dataset": {"format": "mnist"}, "teacher": {"train": {"epochs": 1}}})",
       "spec.dataset.format: unknown value 'mnist'"},
      {R"({"dataset": {"format": "cifar10"}, "teacher": {"train": {"epochs": 1}}})",
       "spec.dataset.path: required for format 'cifar10'"},
      {R"({"dataset": {"format": "synthetic"}})", "spec.teacher: give checkpoint_path"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": -1}}})",
       "spec.teacher.train.epochs: must be in [0, 100000], got -1"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
           "prune": {"target_macs_reduction": 1.5}})",
       "spec.prune.target_macs_reduction: must be in"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
           "prune": {"importance": "random"}})",
       "spec.prune.importance: unknown value 'random'"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
           "prune": {"ranking": "best"}})",
       "spec.prune.ranking: unknown value 'best'"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
           "share": {"init": "random"}})",
       "spec.share.init: unknown value 'random'"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
           "share": {"enabled": true, "train": {"epochs": 1}, "logit_weight": 0,
                     "attention_loss_weight": 0, "hidden_loss_weight": 0}})",
       "spec.share.logit_weight: the weight distillation needs"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
           "distill": {"enabled": true}})",
       "spec.distill.train.epochs: required"},
      {R"({"dataset": {"format": "synthetic", "colour": true}, "teacher": {"train": {"epochs": 1}}})",
       "spec.dataset.colour: unknown field"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": "three"}}})",
       "spec.teacher.train.epochs: expected an integer"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"lr": "fast"}}})",
       "spec.teacher.train.lr: expected a number"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"blob_sha256": "abc"}})",
       "spec.teacher.blob_sha256: must be 64 lowercase hex digits"},
      {R"({"dataset": "synthetic"})", "spec.dataset: expected a JSON object"},
      {R"({"model": {"config": {"image_size": 30, "in_channels": 1, "patch_size": 4,
           "embed_dim": 8, "depths": [2], "num_heads": [1], "window_size": 4}},
           "dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}}})",
       "spec.model.config.image_size: must be a multiple of patch_size 4"},
      {R"({"model": {"config": {"image_size": 32, "in_channels": 1, "patch_size": 4,
           "embed_dim": 8, "depths": [2, 2], "num_heads": [1], "window_size": 4}},
           "dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}}})",
       "spec.model.config.num_heads: must have one entry per stage"},
      // Shapes only the model builder refuses are refused with the spec, not when the job runs.
      {R"({"model": {"config": {"image_size": 32, "in_channels": 1, "patch_size": 4,
           "embed_dim": 8, "depths": [2], "num_heads": [3], "window_size": 4}},
           "dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}}})",
       "spec.model.config: stage 0 width 8 is not divisible by num_heads[0] = 3"},
      {R"({"model": {"config": {"image_size": 48, "in_channels": 1, "patch_size": 4,
           "embed_dim": 8, "depths": [2], "num_heads": [1], "window_size": 5}},
           "dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}}})",
       "spec.model.config: stages[0] feature map side 12 is not divisible by window_size 5"},
      {R"({"model": {"config": {"image_size": 4096, "in_channels": 1, "patch_size": 1,
           "embed_dim": 8192, "depths": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
           "num_heads": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], "window_size": 1}},
           "dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}}})",
       "spec.model.config: stage 12 width embed_dim * 2^12 is implausibly large"},
      {R"({"dataset": {"format": "synthetic", "image_size": 32}, "teacher": {"train": {"epochs": 1}}})",
       "spec.dataset.image_size: 32 differs from the model's 28"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
           "resources": {"device": "tpu"}})",
       "spec.resources.device: unknown device 'tpu'"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
           "resources": {"device": "cuda:abc"}})",
       "spec.resources.device: unknown device 'cuda:abc'"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
           "resources": {"device": "cuda:-1"}})",
       "spec.resources.device: unknown device 'cuda:-1'"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
           "resources": {"device": "cuda:"}})",
       "spec.resources.device: unknown device 'cuda:'"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1, "epochs": 2}}})",
       "spec.teacher.train.epochs: given twice"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1, "lr": "NaN"}}})",
       "spec.teacher.train.lr: must be a finite number in [1e-09, 10], got NaN"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1e20}}})",
       "spec.teacher.train.epochs: must be in [0, 100000], got 1e+20"},
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1.5}}})",
       "spec.teacher.train.epochs: expected an integer"},
      // Beyond int64: it read as a negative seed.
      {R"({"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}},
           "resources": {"seed": 18446744073709551615}})",
       "spec.resources.seed: must be in [-9223372036854775808, 9223372036854775807], got "
       "18446744073709551615"},
      {R"({"model": {"num_classes": 7}, "dataset": {"format": "synthetic", "synthetic_classes": 4},
           "teacher": {"train": {"epochs": 1}}})",
       "spec.model.num_classes: the model has 7 classes, the synthetic data set 4"},
      {R"({"dataset": {"format": "cifar10", "path": "/data/c\u0000/x"},
           "teacher": {"train": {"epochs": 1}}})",
       "spec.dataset.path: contains the control character 0x00 at offset 7"},
      {"{not json", "spec: not valid JSON: parse error at line 1, column 3"},
      // Found by fuzz/job_spec_fuzzer: nlohmann throws out_of_range, not parse_error, here.
      {"1e8888888888888888888888888[s\"", "spec: not valid JSON: number overflow parsing"},
      {R"({"resources": {"seed": 1e999}})", "spec: not valid JSON: number overflow parsing"},
  };
  for (const Case& c : cases) {
    auto spec = ParseJobSpec(c.json);
    ASSERT_FALSE(spec.ok()) << c.json;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(spec.status().message().find(c.expected), absl::string_view::npos)
        << "got: " << spec.status().message() << "\nwanted: " << c.expected;
  }
}

}  // namespace
}  // namespace compress::spec
