// SwinConfig: the exact architecture of a Swin Transformer, down to the width of every block, so
// that a pruned model is described (and rebuilt) by the same type as an unpruned one. It is what
// config.json beside every checkpoint holds. This header is free of LibTorch on purpose: the
// service side and the job spec read configs too.
#ifndef COMPRESS_WORKER_PIPELINE_MODEL_SWIN_CONFIG_H_
#define COMPRESS_WORKER_PIPELINE_MODEL_SWIN_CONFIG_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace compress::pipeline {

// The widths of one Swin block. The attention's qkv maps the stage width C to
// 3 * num_heads * head_dim and its proj maps num_heads * head_dim back to C; the MLP maps
// C -> mlp_hidden -> C. In the unpruned model num_heads * head_dim == C.
struct BlockWidths {
  int num_heads = 0;
  int head_dim = 0;
  int mlp_hidden = 0;

  int attn_dim() const { return num_heads * head_dim; }
  bool operator==(const BlockWidths& other) const {
    return num_heads == other.num_heads && head_dim == other.head_dim &&
           mlp_hidden == other.mlp_hidden;
  }
};

// One stage: its embedding (residual stream) width and its blocks. Stages after the first
// start with a patch merging layer that maps 4 * previous dim to dim and halves the resolution.
struct StageConfig {
  int dim = 0;
  std::vector<BlockWidths> blocks;

  bool operator==(const StageConfig& other) const {
    return dim == other.dim && blocks == other.blocks;
  }
};

// The whole architecture. Invariants (checked by Validate): every width positive; the image
// divisible by the patch size; each stage's feature map divisible by its effective window (the
// window clamped to the feature map, as timm does; torchvision instead pads a smaller map to one
// whole window, so torchvision weights fit only configs whose feature maps are all at least a
// window wide, as Swin-T's at 224 are). An odd map is padded with a zero row and column before
// patch merging, as torchvision does (timm requires even maps).
struct SwinConfig {
  int image_size = 0;           // Input height and width in pixels (square).
  int in_channels = 0;          // Input channels (3 for RGB, 1 for Fashion-MNIST).
  int num_classes = 0;          // Classifier outputs.
  int patch_size = 0;           // Patch embedding kernel and stride.
  int window_size = 0;          // Attention window side before clamping to the feature map.
  double drop_path_rate = 0.0;  // Stochastic depth rate of the last block; linear from 0.
  bool qkv_bias = true;         // Whether attn.qkv has a bias.
  std::vector<StageConfig> stages;

  // Derived views.
  int embed_dim() const { return stages.empty() ? 0 : stages.front().dim; }
  int num_features() const { return stages.empty() ? 0 : stages.back().dim; }
  std::vector<int> depths() const;
  int total_blocks() const;
  // Feature map side of stage s (the patch grid side halved s times, rounding up).
  int stage_resolution(int stage) const;
  // Window side actually used in stage s: window_size clamped to the feature map side.
  int stage_window(int stage) const;
  // Shift of block b of stage s: window/2 on odd blocks, 0 on even blocks and whenever the
  // feature map is not larger than the window (one window covers it, nothing to shift).
  int block_shift(int stage, int block) const;
  // Stochastic depth probability of block b of stage s.
  double block_drop_path(int stage, int block) const;

  // Checks the invariants above; INVALID_ARGUMENT naming the offending field otherwise.
  absl::Status Validate() const;

  // config.json: see docs/checkpoints.md for the schema. FromJson rejects unknown and missing
  // fields with INVALID_ARGUMENT naming the field, and validates the result.
  nlohmann::json ToJson() const;
  std::string ToJsonString() const;
  static absl::StatusOr<SwinConfig> FromJson(const nlohmann::json& json);
  static absl::StatusOr<SwinConfig> FromJsonString(std::string_view text);

  bool operator==(const SwinConfig& other) const;
};

// The arguments of the original, uniform Swin definition.
struct UniformSwinOptions {
  int image_size = 224;
  int in_channels = 3;
  int num_classes = 1000;
  int patch_size = 4;
  int window_size = 7;
  int embed_dim = 96;                           // Width of stage 0; doubles at every stage.
  std::vector<int> depths = {2, 2, 6, 2};       // Blocks per stage.
  std::vector<int> num_heads = {3, 6, 12, 24};  // Heads per stage; head_dim = dim / heads.
  double mlp_ratio = 4.0;                       // mlp_hidden = int(dim * mlp_ratio).
  double drop_path_rate = 0.1;
  bool qkv_bias = true;
};

// Expands the uniform definition into per-block widths and validates it.
absl::StatusOr<SwinConfig> MakeUniformSwinConfig(const UniformSwinOptions& options);

// Named presets:
//   swin_t      224x224x3, 1000 classes, patch 4, window 7, embed 96, depths [2,2,6,2],
//               heads [3,6,12,24] (Liu et al., 2021; timm swin_tiny_patch4_window7_224).
//   swin_micro  28x28x1, 10 classes (Fashion-MNIST), patch 2, window 7, embed 48, depths [2,2],
//               heads [2,4]: stages at 14x14 (shifted) and 7x7 (one window, no shift).
// NOT_FOUND for any other name.
absl::StatusOr<SwinConfig> SwinPreset(std::string_view name);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_MODEL_SWIN_CONFIG_H_
