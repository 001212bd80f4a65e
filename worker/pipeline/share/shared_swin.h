// SharedSwin: a Swin Transformer whose blocks share weights (MiniViT weight multiplexing, Zhang
// et al., CVPR 2022; microsoft/Cream MiniViT/Mini-Swin). Within each stage, consecutive blocks
// form groups (SharingConfig::group_sizes); a group holds ONE set of attn.qkv, attn.proj,
// attn.relative_position_bias_table, mlp.fc1 and mlp.fc2, run once per pass; each pass (one per
// block it replaces) keeps its own norm1, norm2 and transformation layers:
//   - proj_l, proj_w: Linear(heads -> heads) mixing the heads of the attention logits (after
//     the position bias, before the shift mask and softmax) and of the probabilities (after the
//     softmax, before the product with V);
//   - mlp_transform: x = x + DepthwiseConv7x7(LayerNorm(x)) on the token grid, before norm2 and
//     the MLP.
// Passes keep the regular / shifted window alternation and the drop-path rates of the blocks
// they replace. A fresh model has identity transforms (proj_l = proj_w = I with zero bias, the
// depthwise convolution zero), so that it computes what the unshared model with every block
// set to the group's weights computes.
//
// Parameter names (also in docs/share.md):
//   patch_embed.{proj,norm}, layers.{s}.downsample.{norm,reduction}, norm, head.fc   (as Swin)
//   layers.{s}.groups.{g}.shared.attn.{qkv,proj,relative_position_bias_table}
//   layers.{s}.groups.{g}.shared.mlp.{fc1,fc2}
//   layers.{s}.groups.{g}.passes.{p}.{norm1,proj_l,proj_w,mlp_transform.norm,
//                                     mlp_transform.conv,norm2}
// The rebuilt buffers (relative_position_index, attn_mask) are left out of StateDict().
#ifndef COMPRESS_WORKER_PIPELINE_SHARE_SHARED_SWIN_H_
#define COMPRESS_WORKER_PIPELINE_SHARE_SHARED_SWIN_H_

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/model/swin_block.h"
#include "worker/pipeline/share/sharing_config.h"

namespace compress::pipeline {

// Queries, keys and values of one block's attention, per window: [B * windows, heads, N, d],
// before the query scaling.
struct QkvTensors {
  torch::Tensor q;
  torch::Tensor k;
  torch::Tensor v;
};

// The weights a group shares: `attn` (a WindowAttention used for its qkv, proj and bias table
// only) and `mlp`.
class SharedBlockWeightsImpl : public torch::nn::Module {
 public:
  SharedBlockWeightsImpl(int dim, const BlockWidths& widths, int window, bool qkv_bias);

  WindowAttention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(SharedBlockWeights);

// LayerNorm then a depthwise k x k convolution (padding k/2) on [B, H, W, C], added to the input.
class MlpTransformImpl : public torch::nn::Module {
 public:
  MlpTransformImpl(int dim, int kernel);
  torch::Tensor forward(const torch::Tensor& x);
  // Zero convolution: the transform becomes the identity.
  void ResetToIdentity();

  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(MlpTransform);

// What belongs to one pass: its norms, transforms and shift mask.
class SharedPassImpl : public torch::nn::Module {
 public:
  SharedPassImpl(const BlockGeometry& geometry, int num_heads, bool attention_transform,
                 bool mlp_transform);

  // x [B, H, W, C] -> [B, H, W, C] through `shared`; fills *qkv when not null.
  torch::Tensor Run(const torch::Tensor& x, SharedBlockWeights& shared, QkvTensors* qkv);
  // proj_l = proj_w = I, zero biases, zero depthwise convolution.
  void ResetTransformsToIdentity();

  const BlockGeometry& geometry() const { return geometry_; }

  torch::nn::LayerNorm norm1{nullptr};
  torch::nn::Linear proj_l{nullptr};    // Null without the attention transform.
  torch::nn::Linear proj_w{nullptr};    // Null without the attention transform.
  MlpTransform mlp_transform{nullptr};  // Null without the FFN transform.
  torch::nn::LayerNorm norm2{nullptr};
  torch::Tensor attn_mask;  // Shifted passes only; rebuilt, not saved.

 private:
  torch::Tensor Attention(const torch::Tensor& windows, SharedBlockWeights& shared,
                          QkvTensors* qkv);

  BlockGeometry geometry_;
};
TORCH_MODULE(SharedPass);

class SharedGroupImpl : public torch::nn::Module {
 public:
  SharedGroupImpl(const SharingConfig& config, int stage, int group);

  SharedBlockWeights shared{nullptr};
  torch::nn::ModuleList passes{nullptr};
  std::vector<SharedPass> pass_list;  // The same modules as `passes`, typed.
};
TORCH_MODULE(SharedGroup);

class SharedStageImpl : public torch::nn::Module {
 public:
  SharedStageImpl(const SharingConfig& config, int stage);

  PatchMerging downsample{nullptr};  // Null in stage 0.
  torch::nn::ModuleList groups{nullptr};
  std::vector<SharedGroup> group_list;  // The same modules as `groups`, typed.
};
TORCH_MODULE(SharedStage);

// What to capture during a forward pass, for the relation losses.
struct SharedForwardRequest {
  bool stage_hidden = false;
  // (stage, block) of the passes whose q/k/v to return; a block index counts every pass of the
  // stage, as in the unshared model.
  std::vector<std::pair<int, int>> qkv_blocks;
};

struct SharedSwinOutput {
  torch::Tensor logits;  // [B, num_classes]
  // Output of each stage, [B, H_s, W_s, C_s], when requested.
  std::vector<torch::Tensor> stage_hidden;
  // One entry per requested qkv block, in request order.
  std::vector<QkvTensors> qkv;
};

class SharedSwinImpl : public torch::nn::Module {
 public:
  // Assumes a valid config (CreateSharedSwin validates it).
  explicit SharedSwinImpl(const SharingConfig& config);

  torch::Tensor forward(const torch::Tensor& images);
  SharedSwinOutput Forward(const torch::Tensor& images, const SharedForwardRequest& request);

  const SharingConfig& config() const { return config_; }
  SharedStage stage(int s) const { return stage_list_.at(s); }
  SharedGroup group(int s, int g) const { return stage_list_.at(s)->group_list.at(g); }
  // The pass that replaces block b of stage s.
  SharedPass pass(int s, int b) const;

  // Parameters and stored buffers by name, without the rebuilt buffers: what a checkpoint holds.
  std::vector<std::pair<std::string, torch::Tensor>> StateDict() const;

  PatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  ClassifierHead head{nullptr};

 private:
  SharingConfig config_;
  std::vector<SharedStage> stage_list_;
};
TORCH_MODULE(SharedSwin);

// Validates the config and builds a fresh model on the CPU (identity transforms).
// INVALID_ARGUMENT for an invalid config; INTERNAL if LibTorch fails.
absl::StatusOr<SharedSwin> CreateSharedSwin(const SharingConfig& config);

// The attention's q, k, v of a window batch [B_, N, C] (already normalised) through `qkv`.
QkvTensors ComputeQkv(const torch::Tensor& windows, torch::nn::Linear& qkv, int num_heads,
                      int head_dim);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_SHARE_SHARED_SWIN_H_
