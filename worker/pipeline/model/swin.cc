#include "worker/pipeline/model/swin.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/pipeline/model/counted_ops.h"
#include "worker/pipeline/model/torch_error.h"

namespace compress::pipeline {
PatchEmbedImpl::PatchEmbedImpl(int in_channels, int dim, int patch_size) {
  proj = register_module(
      "proj",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, dim, patch_size).stride(patch_size)));
  norm = register_module("norm", MakeSwinLayerNorm(dim));
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& images) {
  return ops::LayerNorm(ops::Conv2d(images, proj).permute({0, 2, 3, 1}), norm);
}

PatchMergingImpl::PatchMergingImpl(int in_dim, int out_dim) {
  norm = register_module("norm", MakeSwinLayerNorm(4 * in_dim));
  reduction = register_module("reduction", MakeSwinLinear(4 * in_dim, out_dim, /*bias=*/false));
}

torch::Tensor PatchMergingImpl::forward(const torch::Tensor& x) {
  // (row, column) offsets (0,0), (1,0), (0,1), (1,1): timm's reshape/permute order, the
  // original Microsoft code's x0..x3 and torchvision's _patch_merging_pad.
  torch::Tensor padded = x;
  if (x.size(1) % 2 != 0 || x.size(2) % 2 != 0) {
    // Odd map: one zero row / column at the bottom / right, as torchvision's
    // _patch_merging_pad.
    padded = torch::constant_pad_nd(x, {0, 0, 0, x.size(2) % 2, 0, x.size(1) % 2});
  }
  auto part = [&padded](int row, int column) {
    return padded.slice(1, row, c10::nullopt, 2).slice(2, column, c10::nullopt, 2);
  };
  torch::Tensor merged = torch::cat({part(0, 0), part(1, 0), part(0, 1), part(1, 1)}, -1);
  return ops::Linear(ops::LayerNorm(merged, norm), reduction);
}

SwinStageImpl::SwinStageImpl(const SwinConfig& config, int stage) {
  const StageConfig& stage_config = config.stages[stage];
  if (stage > 0) {
    downsample =
        register_module("downsample", PatchMerging(config.stages[stage - 1].dim, stage_config.dim));
  }
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int b = 0; b < static_cast<int>(stage_config.blocks.size()); ++b) {
    BlockGeometry geometry;
    geometry.dim = stage_config.dim;
    geometry.resolution = config.stage_resolution(stage);
    geometry.window = config.stage_window(stage);
    geometry.shift = config.block_shift(stage, b);
    geometry.drop_path = config.block_drop_path(stage, b);
    SwinBlock block(geometry, stage_config.blocks[b], config.qkv_bias);
    blocks->push_back(block);
    block_list.push_back(block);
  }
}

torch::Tensor SwinStageImpl::forward(torch::Tensor x) {
  if (downsample) x = downsample(x);
  for (SwinBlock& block : block_list) x = block(x);
  return x;
}

ClassifierHeadImpl::ClassifierHeadImpl(int in_features, int num_classes) {
  fc = register_module("fc", MakeSwinLinear(in_features, num_classes, /*bias=*/true));
}

torch::Tensor ClassifierHeadImpl::forward(const torch::Tensor& pooled) {
  return ops::Linear(pooled, fc);
}

SwinTransformerImpl::SwinTransformerImpl(const SwinConfig& config) : config_(config) {
  patch_embed = register_module(
      "patch_embed", PatchEmbed(config.in_channels, config.embed_dim(), config.patch_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int s = 0; s < static_cast<int>(config.stages.size()); ++s) {
    SwinStage stage(config, s);
    layers->push_back(stage);
    stage_list_.push_back(stage);
  }
  norm = register_module("norm", MakeSwinLayerNorm(config.num_features()));
  head = register_module("head", ClassifierHead(config.num_features(), config.num_classes));
}

torch::Tensor SwinTransformerImpl::Run(const torch::Tensor& images,
                                       std::vector<torch::Tensor>* stage_hidden) {
  torch::Tensor x = patch_embed(images);
  for (SwinStage& stage : stage_list_) {
    x = stage(x);
    if (stage_hidden != nullptr) stage_hidden->push_back(x);
  }
  x = ops::LayerNorm(x, norm);
  if (MacCounter::Active()) MacCounter::AddElementwise(x.numel());  // the average pool
  return head(x.mean({1, 2}));
}

torch::Tensor SwinTransformerImpl::forward(const torch::Tensor& images) {
  return Run(images, nullptr);
}

SwinOutput SwinTransformerImpl::ForwardWithHidden(const torch::Tensor& images) {
  SwinOutput output;
  output.logits = Run(images, &output.stage_hidden);
  return output;
}

std::vector<std::pair<std::string, torch::Tensor>> SwinTransformerImpl::StateDict() const {
  std::vector<std::pair<std::string, torch::Tensor>> state;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    state.emplace_back(item.key(), item.value());
  }
  for (const auto& item : named_buffers(/*recurse=*/true)) {
    if (!IsRebuiltBufferName(item.key())) state.emplace_back(item.key(), item.value());
  }
  return state;
}

bool IsRebuiltBufferName(const std::string& name) {
  const size_t dot = name.rfind('.');
  const std::string_view last =
      dot == std::string::npos ? std::string_view(name) : std::string_view(name).substr(dot + 1);
  return last == kRelativePositionIndexName || last == kAttentionMaskName;
}

absl::StatusOr<SwinTransformer> CreateSwinTransformer(const SwinConfig& config) {
  if (absl::Status status = config.Validate(); !status.ok()) return status;
  try {
    return SwinTransformer(config);
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, "building the Swin Transformer");
  }
}

}  // namespace compress::pipeline
