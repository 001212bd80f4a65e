// Tiny Swin configs and helpers shared by the share-stage tests.
#ifndef COMPRESS_TESTS_PIPELINE_SHARE_SHARE_TEST_UTIL_H_
#define COMPRESS_TESTS_PIPELINE_SHARE_SHARE_TEST_UTIL_H_

#include <torch/torch.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/model/swin_config.h"
#include "worker/pipeline/share/sharing_config.h"

namespace compress::pipeline::testing {

// 16x16x3 images, patch 2, window 4: stage 0 at 8x8 (two windows per side, odd blocks shifted),
// stage 1 at 4x4 (one window, no shift). Depths {2, 3}, heads {2, 4}.
inline SwinConfig TinyConfig() {
  UniformSwinOptions options;
  options.image_size = 16;
  options.in_channels = 3;
  options.num_classes = 5;
  options.patch_size = 2;
  options.window_size = 4;
  options.embed_dim = 8;
  options.depths = {2, 3};
  options.num_heads = {2, 4};
  options.mlp_ratio = 2.0;
  options.drop_path_rate = 0.1;
  absl::StatusOr<SwinConfig> config = MakeUniformSwinConfig(options);
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

inline SwinTransformer TinyTeacher(uint64_t seed = 1) {
  torch::manual_seed(seed);
  absl::StatusOr<SwinTransformer> model = CreateSwinTransformer(TinyConfig());
  EXPECT_TRUE(model.ok()) << model.status();
  // Non-trivial norms and biases, so that copying them is checked too.
  torch::NoGradGuard no_grad;
  for (auto& parameter : (*model)->parameters()) {
    parameter.add_(torch::randn_like(parameter) * 0.05);
  }
  return *model;
}

// Sets the shared tensors (qkv, proj, bias table, fc1, fc2) of every block of each group to
// those of the group's first block, so that the unshared model computes what a shared one does.
inline void EqualiseGroups(SwinTransformer& model, const SharingConfig& config) {
  torch::NoGradGuard no_grad;
  for (int s = 0; s < model->num_stages(); ++s) {
    for (int g = 0; g < config.num_groups(s); ++g) {
      const int first = config.group_first_block(s, g);
      SwinBlock source = model->block(s, first);
      for (int b = first + 1; b < first + config.group_sizes[s][g]; ++b) {
        SwinBlock target = model->block(s, b);
        target->attn->qkv->weight.copy_(source->attn->qkv->weight);
        target->attn->qkv->bias.copy_(source->attn->qkv->bias);
        target->attn->proj->weight.copy_(source->attn->proj->weight);
        target->attn->proj->bias.copy_(source->attn->proj->bias);
        target->attn->relative_position_bias_table.copy_(
            source->attn->relative_position_bias_table);
        target->mlp->fc1->weight.copy_(source->mlp->fc1->weight);
        target->mlp->fc1->bias.copy_(source->mlp->fc1->bias);
        target->mlp->fc2->weight.copy_(source->mlp->fc2->weight);
        target->mlp->fc2->bias.copy_(source->mlp->fc2->bias);
      }
    }
  }
}

inline double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

}  // namespace compress::pipeline::testing

#endif  // COMPRESS_TESTS_PIPELINE_SHARE_SHARE_TEST_UTIL_H_
