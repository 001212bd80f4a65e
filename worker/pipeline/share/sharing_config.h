// SharingConfig: the architecture of a weight-shared Swin (MiniViT weight multiplexing, Zhang et
// al., "MiniViT: Compressing Vision Transformers with Weight Multiplexing", CVPR 2022): the
// SwinConfig of the model it was made from, the grouping of each stage's consecutive blocks into
// groups that share one set of weights, and which transformation layers every pass has. It is
// what config.json beside a shared checkpoint holds: the base config's fields plus a "sharing"
// section (docs/share.md). Free of LibTorch, like SwinConfig.
#ifndef COMPRESS_WORKER_PIPELINE_SHARE_SHARING_CONFIG_H_
#define COMPRESS_WORKER_PIPELINE_SHARE_SHARING_CONFIG_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"
#include "worker/pipeline/model/swin_config.h"

namespace compress::pipeline {

// Side of the depthwise convolution of the FFN transform (MiniViT's Mini-Swin uses 7x7).
inline constexpr int kMlpTransformKernel = 7;

struct SharingConfig {
  // The unshared architecture: one pass of the shared model per block of `base`, with that
  // block's widths, window and shift.
  SwinConfig base;
  // group_sizes[s]: the sizes of the groups of stage s, in block order; they sum to the stage's
  // depth, and the blocks of one group must have equal widths (they share one set of weights).
  std::vector<std::vector<int>> group_sizes;
  // Whether every pass has proj_l / proj_w (Linear heads -> heads on the attention logits and
  // probabilities).
  bool attention_transform = true;
  // Whether every pass has the FFN transform (LayerNorm, residual depthwise 7x7 convolution).
  bool mlp_transform = true;

  int num_groups(int stage) const { return static_cast<int>(group_sizes.at(stage).size()); }
  // Index in the stage of the first block of group g.
  int group_first_block(int stage, int group) const;
  // The group holding block b of stage s and the pass index within it.
  int group_of_block(int stage, int block) const;
  int pass_of_block(int stage, int block) const;

  // INVALID_ARGUMENT naming the field: base invalid, group sizes not positive or not summing to
  // the depth, widths differing inside a group.
  absl::Status Validate() const;

  // base.ToJson() with a "sharing" object {"group_sizes": [[..], ..], "attention_transform":
  // bool, "mlp_transform": bool}. FromJson rejects unknown or missing fields and validates.
  nlohmann::json ToJson() const;
  std::string ToJsonString() const;
  static absl::StatusOr<SharingConfig> FromJson(const nlohmann::json& json);
  static absl::StatusOr<SharingConfig> FromJsonString(std::string_view text);

  bool operator==(const SharingConfig& other) const;
};

// One group per stage (Mini-Swin-T's sharing), both transforms on.
SharingConfig DefaultSharing(const SwinConfig& base);

// Groups of `group_size` consecutive blocks in every stage, the last group of a stage taking
// the remainder (group_size <= 0: one group per stage).
std::vector<std::vector<int>> UniformGroupSizes(const SwinConfig& base, int group_size);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_SHARE_SHARING_CONFIG_H_
