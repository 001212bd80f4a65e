// Tests of SwinConfig (presets, validation, config.json) and of the analytic cost.
#include "worker/pipeline/model/swin_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "worker/pipeline/model/cost.h"

namespace compress::pipeline {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

SwinConfig Preset(const char* name) {
  absl::StatusOr<SwinConfig> config = SwinPreset(name);
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

// A config whose blocks all differ, as pruning leaves them.
SwinConfig UnevenConfig() {
  SwinConfig config = Preset("swin_micro");
  config.stages[0].dim = 40;
  config.stages[0].blocks = {{2, 16, 96}, {3, 8, 72}};
  config.stages[1].dim = 72;
  config.stages[1].blocks = {{4, 24, 200}, {1, 40, 64}};
  return config;
}

TEST(SwinConfigTest, SwinTPresetHasTheOriginalShape) {
  const SwinConfig config = Preset("swin_t");
  EXPECT_EQ(config.image_size, 224);
  EXPECT_EQ(config.in_channels, 3);
  EXPECT_EQ(config.num_classes, 1000);
  EXPECT_EQ(config.patch_size, 4);
  EXPECT_EQ(config.window_size, 7);
  EXPECT_EQ(config.embed_dim(), 96);
  EXPECT_EQ(config.depths(), (std::vector<int>{2, 2, 6, 2}));
  const int heads[] = {3, 6, 12, 24};
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ(config.stages[s].dim, 96 << s);
    for (const BlockWidths& widths : config.stages[s].blocks) {
      EXPECT_EQ(widths.num_heads, heads[s]);
      EXPECT_EQ(widths.head_dim, 32);
      EXPECT_EQ(widths.mlp_hidden, 4 * (96 << s));
    }
  }
  EXPECT_EQ(config.stage_resolution(3), 7);
}

TEST(SwinConfigTest, UnknownPresetIsNotFound) {
  EXPECT_EQ(SwinPreset("swin_huge").status().code(), absl::StatusCode::kNotFound);
}

TEST(SwinConfigTest, ShiftOnlyWhereTheMapIsLargerThanTheWindow) {
  const SwinConfig swin_t = Preset("swin_t");
  EXPECT_EQ(swin_t.block_shift(0, 0), 0);
  EXPECT_EQ(swin_t.block_shift(0, 1), 3);
  EXPECT_EQ(swin_t.block_shift(2, 5), 3);
  EXPECT_EQ(swin_t.block_shift(3, 1), 0);  // 7x7 map, one window.
  const SwinConfig micro = Preset("swin_micro");
  EXPECT_EQ(micro.stage_resolution(0), 14);
  EXPECT_EQ(micro.block_shift(0, 1), 3);
  EXPECT_EQ(micro.stage_resolution(1), 7);
  EXPECT_EQ(micro.block_shift(1, 1), 0);

  SwinConfig small = micro;
  small.image_size = 16;
  small.patch_size = 4;  // 4x4 map, window 7 clamped to 4.
  small.stages.resize(1);
  ASSERT_TRUE(small.Validate().ok()) << small.Validate();
  EXPECT_EQ(small.stage_window(0), 4);
  EXPECT_EQ(small.block_shift(0, 1), 0);
}

TEST(SwinConfigTest, OddMapsArePaddedBeforeMerging) {
  SwinConfig config = Preset("swin_micro");
  config.stages.push_back(config.stages.back());  // 14 -> 7 -> 4 (7 padded to 8)
  ASSERT_TRUE(config.Validate().ok()) << config.Validate();
  EXPECT_EQ(config.stage_resolution(2), 4);
  EXPECT_EQ(config.stage_window(2), 4);
}

TEST(SwinConfigTest, DropPathRampsLinearlyOverAllBlocks) {
  SwinConfig config = Preset("swin_t");
  config.drop_path_rate = 0.22;
  EXPECT_DOUBLE_EQ(config.block_drop_path(0, 0), 0.0);
  EXPECT_DOUBLE_EQ(config.block_drop_path(2, 0), 0.22 * 4 / 11);
  EXPECT_DOUBLE_EQ(config.block_drop_path(3, 1), 0.22);
}

TEST(SwinConfigTest, JsonRoundTripKeepsEveryBlockWidth) {
  for (const SwinConfig& config : {Preset("swin_t"), Preset("swin_micro"), UnevenConfig()}) {
    absl::StatusOr<SwinConfig> back = SwinConfig::FromJsonString(config.ToJsonString());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, config);
  }
  const Json json = UnevenConfig().ToJson();
  EXPECT_EQ(json["stages"][1]["blocks"][0]["mlp_hidden"], 200);
  EXPECT_EQ(json["stages"][0]["dim"], 40);
}

TEST(SwinConfigTest, UnknownFieldsAreRejectedByName) {
  Json json = Preset("swin_micro").ToJson();
  json["sharing"] = Json::object();
  absl::StatusOr<SwinConfig> result = SwinConfig::FromJson(json);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("unknown field \"sharing\""));

  json = Preset("swin_micro").ToJson();
  json["stages"][1]["blocks"][0]["heads"] = 3;
  result = SwinConfig::FromJson(json);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("\"stages[1].blocks[0].heads\""));
}

TEST(SwinConfigTest, MissingAndMistypedFieldsAreRejectedByName) {
  Json json = Preset("swin_micro").ToJson();
  json["stages"][0]["blocks"][1].erase("head_dim");
  absl::StatusOr<SwinConfig> result = SwinConfig::FromJson(json);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(),
              HasSubstr("missing field \"stages[0].blocks[1].head_dim\""));

  json = Preset("swin_micro").ToJson();
  json.erase("window_size");
  EXPECT_THAT(SwinConfig::FromJson(json).status().message(),
              HasSubstr("missing field \"window_size\""));

  json = Preset("swin_micro").ToJson();
  json["patch_size"] = "2";
  EXPECT_THAT(SwinConfig::FromJson(json).status().message(),
              HasSubstr("\"patch_size\" must be an integer"));

  json = Preset("swin_micro").ToJson();
  json["format_version"] = 7;
  EXPECT_THAT(SwinConfig::FromJson(json).status().message(), HasSubstr("format_version 7"));

  EXPECT_EQ(SwinConfig::FromJsonString("{\"image_size\": ").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SwinConfig::FromJsonString("[1, 2]").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SwinConfigTest, ValidateNamesTheBadField) {
  SwinConfig config = UnevenConfig();
  config.stages[1].blocks[1].num_heads = 0;
  EXPECT_THAT(config.Validate().message(), HasSubstr("stages[1].blocks[1].num_heads"));

  config = UnevenConfig();
  config.stages[0].blocks[0].mlp_hidden = -4;
  EXPECT_THAT(config.Validate().message(), HasSubstr("stages[0].blocks[0].mlp_hidden"));

  config = UnevenConfig();
  config.image_size = 27;
  EXPECT_THAT(config.Validate().message(), HasSubstr("not divisible by patch_size"));

  config = Preset("swin_t");
  config.window_size = 5;  // 56 % 5 != 0
  EXPECT_THAT(config.Validate().message(), HasSubstr("not divisible by window_size"));

  config = Preset("swin_micro");
  config.image_size = 40;  // 20x20 map, window 7
  EXPECT_THAT(config.Validate().message(), HasSubstr("stages[0] feature map side 20"));

  config = Preset("swin_micro");
  config.stages[1].blocks.clear();
  EXPECT_THAT(config.Validate().message(), HasSubstr("stages[1].blocks must not be empty"));

  UniformSwinOptions options;
  options.num_heads = {3, 6, 12, 25};
  EXPECT_THAT(MakeUniformSwinConfig(options).status().message(), HasSubstr("num_heads[3]"));
}

TEST(SwinCostTest, SwinTMatchesPublishedFigures) {
  absl::StatusOr<SwinCost> cost = AnalyzeSwinCost(Preset("swin_t"));
  ASSERT_TRUE(cost.ok()) << cost.status();
  // torchvision.models.swin_t(): 28,288,354 parameters; 4.49 GFLOPS (MACs) in its model table.
  EXPECT_EQ(cost->params, 28288354);
  EXPECT_NEAR(cost->total.macs / 1e9, 4.49, 0.005);
  ASSERT_EQ(cost->blocks.size(), 4u);
  EXPECT_EQ(cost->blocks[2].size(), 6u);
  EXPECT_EQ(cost->downsample[0], OpCount{});
  // Patch merging of stage 1: 28x28 tokens, 384 -> 192.
  EXPECT_EQ(cost->downsample[1].macs, 28 * 28 * 384 * 192);
  EXPECT_EQ(cost->patch_embed.macs, 56 * 56 * 96 * 3 * 16);
  EXPECT_EQ(cost->head.macs, 768 * 1000);
}

TEST(SwinCostTest, BlockCostFollowsItsOwnWidths) {
  const SwinConfig config = UnevenConfig();
  absl::StatusOr<SwinCost> cost = AnalyzeSwinCost(config);
  ASSERT_TRUE(cost.ok()) << cost.status();
  // Stage 1 block 0: 7x7 tokens, one 7x7 window, C=72, 4 heads of 24, MLP 200, no shift.
  const int64_t tokens = 49, dim = 72, attn = 96, hidden = 200;
  const int64_t expected = tokens * dim * 3 * attn + 2 * tokens * tokens * attn +
                           tokens * attn * dim + 2 * tokens * dim * hidden;
  EXPECT_EQ(cost->blocks[1][0].macs, expected);
  const int64_t expected_params = 2 * dim + dim * 3 * attn + 3 * attn + attn * dim + dim +
                                  13 * 13 * 4 + 2 * dim + 2 * dim * hidden + hidden + dim;
  EXPECT_EQ(BlockParams(config, 1, 0), expected_params);
  // The shifted block pays for the mask add, the unshifted one does not.
  const int64_t logits0 = 4 * 2 * 49 * 49;  // stage 0 block 0: 4 windows, 2 heads
  const int64_t logits1 = 4 * 3 * 49 * 49;  // stage 0 block 1: 4 windows, 3 heads, shifted
  EXPECT_EQ(cost->blocks[0][0].elementwise,
            2 * 196 * 40 + 196 * 32 + 2 * logits0 + 196 * 96 + 2 * 196 * 40);
  EXPECT_EQ(cost->blocks[0][1].elementwise,
            2 * 196 * 40 + 196 * 24 + 3 * logits1 + 196 * 72 + 2 * 196 * 40);
}

TEST(SwinCostTest, InvalidConfigIsRejected) {
  SwinConfig config = UnevenConfig();
  config.stages[0].dim = 0;
  EXPECT_EQ(AnalyzeSwinCost(config).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MacCounterTest, NestedCountersAddUp) {
  EXPECT_FALSE(MacCounter::Active());
  MacCounter::AddMacs(5);  // No counter: dropped.
  MacCounter outer;
  MacCounter::AddMacs(1);
  {
    MacCounter inner;
    MacCounter::AddMacs(10);
    MacCounter::AddElementwise(3);
    EXPECT_EQ(inner.count().macs, 10);
    EXPECT_EQ(outer.count().macs, 1);
  }
  EXPECT_EQ(outer.count().macs, 11);
  EXPECT_EQ(outer.count().elementwise, 3);
}

}  // namespace
}  // namespace compress::pipeline
