// Tests of the Swin Transformer modules: shapes, names, uneven widths, the shifted-window mask,
// and the counted cost against the analytic one.
#include "worker/pipeline/model/swin.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/model/swin_block.h"
#include "worker/pipeline/model/swin_config.h"

namespace compress::pipeline {
namespace {

SwinConfig Preset(const char* name) {
  absl::StatusOr<SwinConfig> config = SwinPreset(name);
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

// 32x32x3, patch 2, window 4, three stages at 16x16, 8x8 and 4x4 (one window, no shift).
SwinConfig TinyConfig() {
  UniformSwinOptions options;
  options.image_size = 32;
  options.in_channels = 3;
  options.num_classes = 7;
  options.patch_size = 2;
  options.window_size = 4;
  options.embed_dim = 16;
  options.depths = {1, 2, 2};
  options.num_heads = {1, 2, 4};
  absl::StatusOr<SwinConfig> config = MakeUniformSwinConfig(options);
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

// Every block with its own widths, attention width unequal to the stage width.
SwinConfig UnevenConfig() {
  SwinConfig config = Preset("swin_micro");
  config.stages[0].dim = 40;
  config.stages[0].blocks = {{2, 16, 96}, {3, 8, 72}};
  config.stages[1].dim = 72;
  config.stages[1].blocks = {{4, 24, 200}, {1, 40, 64}};
  return config;
}

// 28x28 with patch 4: a 7x7 map in one window, then a padded merge to 4x4.
SwinConfig OddMergeConfig() {
  SwinConfig config = Preset("swin_micro");
  config.patch_size = 4;
  config.stages[1].blocks[1] = {3, 20, 100};
  return config;
}

SwinTransformer Build(const SwinConfig& config) {
  absl::StatusOr<SwinTransformer> model = CreateSwinTransformer(config);
  EXPECT_TRUE(model.ok()) << model.status();
  return *model;
}

torch::Tensor Images(const SwinConfig& config, int batch) {
  return torch::randn({batch, config.in_channels, config.image_size, config.image_size});
}

TEST(SwinTest, ForwardShapesOfSwinMicro) {
  torch::manual_seed(0);
  const SwinConfig config = Preset("swin_micro");
  SwinTransformer model = Build(config);
  model->eval();
  const torch::Tensor images = Images(config, 3);
  SwinOutput output = model->ForwardWithHidden(images);
  EXPECT_EQ(output.logits.sizes(), (std::vector<int64_t>{3, 10}));
  ASSERT_EQ(output.stage_hidden.size(), 2u);
  EXPECT_EQ(output.stage_hidden[0].sizes(), (std::vector<int64_t>{3, 14, 14, 48}));
  EXPECT_EQ(output.stage_hidden[1].sizes(), (std::vector<int64_t>{3, 7, 7, 96}));
  EXPECT_TRUE(torch::equal(output.logits, model->forward(images)));
}

TEST(SwinTest, ForwardShapesOfATinyThreeStageModel) {
  torch::manual_seed(0);
  const SwinConfig config = TinyConfig();
  SwinTransformer model = Build(config);
  SwinOutput output = model->ForwardWithHidden(Images(config, 2));
  EXPECT_EQ(output.logits.sizes(), (std::vector<int64_t>{2, 7}));
  EXPECT_EQ(output.stage_hidden[2].sizes(), (std::vector<int64_t>{2, 4, 4, 64}));
  EXPECT_FALSE(model->block(2, 1)->attn_mask.defined());  // 4x4 map, window 4: no shift
  EXPECT_TRUE(model->block(1, 1)->attn_mask.defined());   // 8x8 map, window 4
  EXPECT_EQ(model->block(1, 1)->geometry().shift, 2);
  EXPECT_FALSE(model->block(1, 0)->attn_mask.defined());
}

TEST(SwinTest, WindowIsClampedToASmallerFeatureMap) {
  SwinConfig config = Preset("swin_micro");
  config.image_size = 16;
  config.patch_size = 4;  // 4x4 map, window 7
  config.stages.resize(1);
  SwinTransformer model = Build(config);
  EXPECT_EQ(model->block(0, 0)->attn->relative_position_bias_table.size(0), 7 * 7);
  EXPECT_FALSE(model->block(0, 1)->attn_mask.defined());
  EXPECT_EQ(model->forward(Images(config, 2)).sizes(), (std::vector<int64_t>{2, 10}));
}

TEST(SwinTest, ParameterNamesAreTimms) {
  SwinTransformer model = Build(TinyConfig());
  std::set<std::string> names;
  for (const auto& [name, tensor] : model->StateDict()) names.insert(name);
  for (const char* expected :
       {"patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight",
        "layers.0.blocks.0.norm1.weight", "layers.0.blocks.0.attn.qkv.weight",
        "layers.0.blocks.0.attn.qkv.bias", "layers.0.blocks.0.attn.proj.bias",
        "layers.0.blocks.0.attn.relative_position_bias_table", "layers.1.blocks.1.norm2.bias",
        "layers.1.blocks.1.mlp.fc1.weight", "layers.2.blocks.1.mlp.fc2.bias",
        "layers.1.downsample.norm.weight", "layers.1.downsample.reduction.weight",
        "layers.2.downsample.reduction.weight", "norm.weight", "head.fc.weight", "head.fc.bias"}) {
    EXPECT_EQ(names.count(expected), 1u) << expected;
  }
  for (const std::string& name : names) {
    EXPECT_EQ(name.find("relative_position_index"), std::string::npos) << name;
    EXPECT_EQ(name.find("attn_mask"), std::string::npos) << name;
    EXPECT_EQ(name.find("layers.0.downsample"), std::string::npos) << name;
    EXPECT_EQ(name.find("reduction.bias"), std::string::npos) << name;
  }
  // The rebuilt buffers are still registered, so that ->to(device) moves them.
  int index_buffers = 0;
  for (const auto& item : model->named_buffers()) {
    index_buffers += IsRebuiltBufferName(item.key()) ? 1 : 0;
  }
  EXPECT_EQ(index_buffers, 5 /*relative_position_index*/ + 1 /*attn_mask of block 1.1*/);
}

TEST(SwinTest, ParameterCountMatchesTheAnalyticCount) {
  for (const SwinConfig& config : {TinyConfig(), UnevenConfig(), Preset("swin_micro")}) {
    SwinTransformer model = Build(config);
    int64_t params = 0;
    for (const torch::Tensor& p : model->parameters()) params += p.numel();
    EXPECT_EQ(params, AnalyzeSwinCost(config)->params);
  }
}

TEST(SwinTest, UnevenWidthsRunForwardAndBackward) {
  torch::manual_seed(1);
  const SwinConfig config = UnevenConfig();
  SwinTransformer model = Build(config);
  EXPECT_EQ(model->block(0, 1)->attn->qkv->weight.sizes(), (std::vector<int64_t>{72, 40}));
  EXPECT_EQ(model->block(1, 0)->attn->proj->weight.sizes(), (std::vector<int64_t>{72, 96}));
  EXPECT_EQ(model->block(1, 1)->mlp->fc1->weight.sizes(), (std::vector<int64_t>{64, 72}));
  EXPECT_EQ(model->stage(1)->downsample->reduction->weight.sizes(),
            (std::vector<int64_t>{72, 160}));
  model->train();
  torch::Tensor logits = model->forward(Images(config, 4));
  torch::Tensor loss = torch::nn::functional::cross_entropy(logits, torch::tensor({0, 1, 2, 3}));
  loss.backward();
  for (const auto& item : model->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_TRUE(torch::isfinite(item.value().grad()).all().item<bool>()) << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << item.key();
  }
}

TEST(SwinTest, DropPathIsRandomOnlyWhileTraining) {
  torch::manual_seed(2);
  SwinConfig config = Preset("swin_micro");
  config.drop_path_rate = 0.5;
  SwinTransformer model = Build(config);
  const torch::Tensor images = Images(config, 8);
  model->train();
  EXPECT_FALSE(torch::equal(model->forward(images), model->forward(images)));
  model->eval();
  EXPECT_TRUE(torch::equal(model->forward(images), model->forward(images)));
}

// The mask built the way timm and torchvision build it agrees with the definition: after the
// cyclic shift by s, two tokens of a window may attend to each other exactly when both or
// neither of their rows wrapped around, and the same for columns.
TEST(ShiftedWindowMaskTest, MatchesTheWrapAroundDefinition) {
  const int resolution = 12, window = 4, shift = 2;
  const torch::Tensor mask = ShiftedWindowMask(resolution, window, shift);
  const int windows_per_side = resolution / window;
  ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{9, 16, 16}));
  auto accessor = mask.accessor<float, 3>();
  int blocked = 0;
  for (int w = 0; w < windows_per_side * windows_per_side; ++w) {
    for (int i = 0; i < window * window; ++i) {
      for (int j = 0; j < window * window; ++j) {
        const int row_i = (w / windows_per_side) * window + i / window;
        const int col_i = (w % windows_per_side) * window + i % window;
        const int row_j = (w / windows_per_side) * window + j / window;
        const int col_j = (w % windows_per_side) * window + j % window;
        auto wrapped = [&](int p) { return p + shift >= resolution; };
        const bool allowed = wrapped(row_i) == wrapped(row_j) && wrapped(col_i) == wrapped(col_j);
        EXPECT_EQ(accessor[w][i][j], allowed ? 0.0f : -100.0f) << w << " " << i << " " << j;
        blocked += allowed ? 0 : 1;
      }
    }
  }
  // Only the last window row and column mix regions.
  EXPECT_GT(blocked, 0);
  EXPECT_TRUE(torch::all(mask[0] == 0).item<bool>());
}

// Behaviour: in a shifted block, a token's output changes when a token it may attend to
// changes, and not when a token from across the wrap-around boundary changes, although the
// cyclic shift puts both in its window. With the mask zeroed, the latter leaks: the test can
// tell a missing mask.
TEST(ShiftedWindowMaskTest, TokensDoNotAttendAcrossTheShiftBoundary) {
  torch::manual_seed(3);
  BlockGeometry geometry{/*dim=*/8, /*resolution=*/8, /*window=*/4, /*shift=*/2,
                         /*drop_path=*/0.0};
  SwinBlock block(geometry, BlockWidths{2, 4, 16}, /*qkv_bias=*/true);
  block->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({1, 8, 8, 8});
  // Original (7, 7) lands at (5, 5) after the shift, in the last window together with
  // original rows/columns 6, 7, 0, 1. Perturb (0, 0), which wrapped around in both axes.
  torch::Tensor perturbed = x.clone();
  perturbed[0][0][0] += 3.0 * torch::randn({8});  // not a constant: LayerNorm would remove it
  const torch::Tensor base = block->forward(x);
  const torch::Tensor moved = block->forward(perturbed);
  auto changed = [&](int r, int c) {
    return !torch::allclose(base[0][r][c], moved[0][r][c], 1e-6, 1e-6);
  };
  EXPECT_TRUE(changed(0, 0));   // itself
  EXPECT_TRUE(changed(1, 1));   // same region (wrapped in both axes)
  EXPECT_FALSE(changed(7, 7));  // same shifted window, other region
  EXPECT_FALSE(changed(0, 7));  // same shifted window, wrapped row but not column
  EXPECT_FALSE(changed(3, 3));  // another window

  block->attn_mask.zero_();  // No mask: the cyclic shift now leaks across the boundary.
  const torch::Tensor leaky_base = block->forward(x);
  const torch::Tensor leaky_moved = block->forward(perturbed);
  EXPECT_FALSE(torch::allclose(leaky_base[0][7][7], leaky_moved[0][7][7], 1e-6, 1e-6));
}

// Window attention (fused with LibTorch >= 2.0, explicit before) against a per-window,
// per-head loop of the textbook formula, with and without the shifted-window mask; and its
// counted cost, which must not depend on the path.
TEST(WindowSoftmaxAttentionTest, MatchesThePerWindowFormulaAndCountsTheSameCost) {
  torch::manual_seed(3);
  const int64_t images = 2, windows = 4, heads = 3, tokens = 9, dim = 5;
  const int64_t batch_windows = images * windows;
  torch::Tensor q = torch::randn({batch_windows, heads, tokens, dim});
  torch::Tensor k = torch::randn({batch_windows, heads, tokens, dim});
  torch::Tensor v = torch::randn({batch_windows, heads, tokens, dim});
  torch::Tensor bias = torch::randn({heads, tokens, tokens});
  torch::Tensor mask = torch::zeros({windows, tokens, tokens});
  mask.index_put_({1, torch::indexing::Slice(0, 4), torch::indexing::Slice(4, tokens)}, -100.0);
  mask.index_put_({3, torch::indexing::Slice(5, tokens), torch::indexing::Slice(0, 5)}, -100.0);

  for (bool masked : {false, true}) {
    SCOPED_TRACE(masked ? "masked" : "unmasked");
    torch::Tensor expected = torch::empty_like(q);
    for (int64_t b = 0; b < batch_windows; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        torch::Tensor logits = torch::mm(q[b][h], k[b][h].t()) / std::sqrt(static_cast<double>(dim)) +
                                 bias[h];
        if (masked) logits = logits + mask[b % windows];
        expected[b][h] = torch::mm(torch::softmax(logits, 1), v[b][h]);
      }
    }
    MacCounter counter;
    torch::Tensor got = WindowSoftmaxAttention(q, k, v, bias, masked ? mask : torch::Tensor());
    EXPECT_TRUE(torch::allclose(got, expected, 1e-5, 1e-5))
        << "max abs error " << (got - expected).abs().max().item<float>()
        << (FusedWindowAttentionAvailable() ? " (fused)" : " (explicit)");
    const int64_t logits = batch_windows * heads * tokens * tokens;
    EXPECT_EQ(counter.count().macs, 2 * logits * dim);
    EXPECT_EQ(counter.count().elementwise, q.numel() + logits * (masked ? 3 : 2));
  }
}

TEST(PatchMergingTest, ConcatenatesTheNeighbourhoodInTimmOrder) {
  PatchMerging merging(1, 4);
  torch::NoGradGuard no_grad;
  merging->norm->weight.fill_(1.0);
  merging->norm->bias.zero_();
  merging->reduction->weight.copy_(torch::eye(4));
  // x[r][c] = 10 r + c on a 2x2 map: the merged token lists (0,0), (1,0), (0,1), (1,1).
  const torch::Tensor x = torch::tensor({0.0f, 1.0f, 10.0f, 11.0f}).view({1, 2, 2, 1});
  const torch::Tensor y = merging->forward(x).flatten();
  const torch::Tensor expected = torch::layer_norm(torch::tensor({0.0f, 10.0f, 1.0f, 11.0f}), {4});
  EXPECT_TRUE(torch::allclose(y, expected, 1e-5, 1e-5)) << y;
}

TEST(PatchMergingTest, PadsAnOddMapWithZeros) {
  PatchMerging merging(1, 4);
  torch::NoGradGuard no_grad;
  merging->norm->weight.fill_(1.0);
  merging->norm->bias.zero_();
  merging->reduction->weight.copy_(torch::eye(4));
  // 3x3 map, x[r][c] = 1 + 10 r + c: the bottom-right merged token holds x(2,2) and three zeros.
  const torch::Tensor x = (torch::arange(3).view({3, 1}) * 10 + torch::arange(3).view({1, 3}) + 1)
                              .to(torch::kFloat)
                              .view({1, 3, 3, 1});
  const torch::Tensor y = merging->forward(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, 2, 2, 4}));
  const torch::Tensor expected = torch::layer_norm(torch::tensor({23.0f, 0.0f, 0.0f, 0.0f}), {4});
  EXPECT_TRUE(torch::allclose(y[0][1][1], expected, 1e-5, 1e-5)) << y[0][1][1];
}

TEST(SwinCostTest, CountedOperationsMatchTheAnalyticCount) {
  torch::manual_seed(4);
  for (const SwinConfig& config :
       {Preset("swin_micro"), TinyConfig(), UnevenConfig(), OddMergeConfig(), Preset("swin_t")}) {
    const SwinCost analytic = *AnalyzeSwinCost(config);
    SwinTransformer model = Build(config);
    model->eval();
    torch::NoGradGuard no_grad;
    const int batch = 2;
    MacCounter counter;
    model->forward(Images(config, batch));
    EXPECT_EQ(counter.count().macs, batch * analytic.total.macs) << config.ToJsonString();
    EXPECT_EQ(counter.count().elementwise, batch * analytic.total.elementwise)
        << config.ToJsonString();
  }
}

TEST(SwinCostTest, NothingIsCountedWithoutACounter) {
  SwinTransformer model = Build(TinyConfig());
  model->forward(Images(TinyConfig(), 1));
  MacCounter counter;
  EXPECT_EQ(counter.count().macs, 0);
}

}  // namespace
}  // namespace compress::pipeline
