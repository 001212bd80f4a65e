// SwinTransformer: the whole Swin classifier built from a SwinConfig, with timm >= 0.9's
// parameter names:
//   patch_embed.proj, patch_embed.norm
//   layers.{s}.downsample.{norm,reduction}        (stages 1.., at the start of the stage)
//   layers.{s}.blocks.{b}.{norm1,attn.qkv,attn.proj,attn.relative_position_bias_table,
//                          norm2,mlp.fc1,mlp.fc2}
//   norm, head.fc
// The buffers relative_position_index and attn_mask are rebuilt from the config and left out
// of StateDict(). Device-agnostic: build on the CPU, then ->to(device).
#ifndef COMPRESS_WORKER_PIPELINE_MODEL_SWIN_H_
#define COMPRESS_WORKER_PIPELINE_MODEL_SWIN_H_

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipeline/model/swin_block.h"
#include "worker/pipeline/model/swin_config.h"

namespace compress::pipeline {

// Conv(kernel = stride = patch) to the stage-0 width, then LayerNorm; [B, C_in, H, W] ->
// [B, H/p, W/p, C].
class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int in_channels, int dim, int patch_size);
  torch::Tensor forward(const torch::Tensor& images);

  torch::nn::Conv2d proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(PatchEmbed);

// Patch merging: concatenates each 2x2 neighbourhood as [x(0,0) | x(1,0) | x(0,1) | x(1,1)]
// ((row, column) offsets), then LayerNorm(4*in) and a bias-free Linear(4*in -> out);
// [B, H, W, in] -> [B, ceil(H/2), ceil(W/2), out], an odd map padded with zeros first.
class PatchMergingImpl : public torch::nn::Module {
 public:
  PatchMergingImpl(int in_dim, int out_dim);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear reduction{nullptr};
};
TORCH_MODULE(PatchMerging);

// One stage: an optional patch merging, then its blocks.
class SwinStageImpl : public torch::nn::Module {
 public:
  SwinStageImpl(const SwinConfig& config, int stage);
  torch::Tensor forward(torch::Tensor x);

  PatchMerging downsample{nullptr};  // Null in stage 0.
  torch::nn::ModuleList blocks{nullptr};
  std::vector<SwinBlock> block_list;  // The same modules as `blocks`, typed.
};
TORCH_MODULE(SwinStage);

// The classifier head (timm's ClassifierHead holds the Linear as `fc`).
class ClassifierHeadImpl : public torch::nn::Module {
 public:
  ClassifierHeadImpl(int in_features, int num_classes);
  torch::Tensor forward(const torch::Tensor& pooled);

  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ClassifierHead);

// What ForwardWithHidden returns.
struct SwinOutput {
  torch::Tensor logits;  // [B, num_classes]
  // Output of each stage's last block, [B, H_s, W_s, C_s], before the final norm.
  std::vector<torch::Tensor> stage_hidden;
};

// The model. Build it through CreateSwinTransformer, which validates the config first; the
// constructor assumes a valid config.
class SwinTransformerImpl : public torch::nn::Module {
 public:
  explicit SwinTransformerImpl(const SwinConfig& config);

  // images [B, in_channels, image_size, image_size] -> logits [B, num_classes].
  torch::Tensor forward(const torch::Tensor& images);
  SwinOutput ForwardWithHidden(const torch::Tensor& images);

  const SwinConfig& config() const { return config_; }
  int num_stages() const { return static_cast<int>(stage_list_.size()); }
  SwinStage stage(int s) const { return stage_list_.at(s); }
  SwinBlock block(int s, int b) const { return stage_list_.at(s)->block_list.at(b); }

  // Parameters and persistent buffers by name, in registration order, without the rebuilt
  // buffers (relative_position_index, attn_mask). What a checkpoint stores.
  std::vector<std::pair<std::string, torch::Tensor>> StateDict() const;

  PatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  ClassifierHead head{nullptr};

 private:
  torch::Tensor Run(const torch::Tensor& images, std::vector<torch::Tensor>* stage_hidden);

  SwinConfig config_;
  std::vector<SwinStage> stage_list_;
};
TORCH_MODULE(SwinTransformer);

// True for the buffer names that are rebuilt from the config and never stored.
bool IsRebuiltBufferName(const std::string& name);

// Validates the config and builds a freshly initialised model on the CPU.
// INVALID_ARGUMENT for an invalid config; INTERNAL if LibTorch fails.
absl::StatusOr<SwinTransformer> CreateSwinTransformer(const SwinConfig& config);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_MODEL_SWIN_H_
