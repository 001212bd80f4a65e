#include "worker/pipeline/share/shared_swin.h"

#include <cmath>

#include "worker/pipeline/model/counted_ops.h"
#include "worker/pipeline/model/torch_error.h"

namespace compress::pipeline {
namespace {

// Linear(heads -> heads) over the head axis (1) of [B_, heads, N, N].
torch::Tensor MixHeads(const torch::Tensor& x, torch::nn::Linear& linear) {
  return ops::Linear(x.permute({0, 2, 3, 1}), linear).permute({0, 3, 1, 2});
}

void SetIdentity(torch::nn::Linear& linear) {
  torch::NoGradGuard no_grad;
  linear->weight.copy_(torch::eye(linear->weight.size(0)));
  linear->bias.zero_();
}

}  // namespace

QkvTensors ComputeQkv(const torch::Tensor& windows, torch::nn::Linear& qkv, int num_heads,
                      int head_dim) {
  const int64_t batch_windows = windows.size(0);
  const int64_t tokens = windows.size(1);
  torch::Tensor out = ops::Linear(windows, qkv)
                          .view({batch_windows, tokens, 3, num_heads, head_dim})
                          .permute({2, 0, 3, 1, 4});
  return QkvTensors{out[0], out[1], out[2]};
}

SharedBlockWeightsImpl::SharedBlockWeightsImpl(int dim, const BlockWidths& widths, int window,
                                               bool qkv_bias) {
  attn = register_module("attn", WindowAttention(dim, widths, window, qkv_bias));
  mlp = register_module("mlp", Mlp(dim, widths.mlp_hidden));
}

MlpTransformImpl::MlpTransformImpl(int dim, int kernel) {
  norm = register_module("norm", MakeSwinLayerNorm(dim));
  conv = register_module(
      "conv", torch::nn::Conv2d(
                  torch::nn::Conv2dOptions(dim, dim, kernel).padding(kernel / 2).groups(dim)));
  ResetToIdentity();
}

void MlpTransformImpl::ResetToIdentity() {
  torch::NoGradGuard no_grad;
  conv->weight.zero_();
  conv->bias.zero_();
}

torch::Tensor MlpTransformImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = ops::LayerNorm(x, norm).permute({0, 3, 1, 2});  // [B, C, H, W]
  h = ops::Conv2d(h, conv).permute({0, 2, 3, 1});
  return ops::Elementwise(x + h);
}

SharedPassImpl::SharedPassImpl(const BlockGeometry& geometry, int num_heads,
                               bool attention_transform, bool mlp_transform)
    : geometry_(geometry) {
  norm1 = register_module("norm1", MakeSwinLayerNorm(geometry.dim));
  if (attention_transform) {
    proj_l = register_module("proj_l", torch::nn::Linear(num_heads, num_heads));
    proj_w = register_module("proj_w", torch::nn::Linear(num_heads, num_heads));
  }
  if (mlp_transform) {
    this->mlp_transform =
        register_module("mlp_transform", MlpTransform(geometry.dim, kMlpTransformKernel));
  }
  norm2 = register_module("norm2", MakeSwinLayerNorm(geometry.dim));
  if (geometry.shift > 0) {
    attn_mask =
        register_buffer(kAttentionMaskName,
                        ShiftedWindowMask(geometry.resolution, geometry.window, geometry.shift));
  }
  ResetTransformsToIdentity();
}

void SharedPassImpl::ResetTransformsToIdentity() {
  if (proj_l) SetIdentity(proj_l);
  if (proj_w) SetIdentity(proj_w);
  if (mlp_transform) mlp_transform->ResetToIdentity();
}

torch::Tensor SharedPassImpl::Attention(const torch::Tensor& windows, SharedBlockWeights& shared,
                                        QkvTensors* qkv) {
  WindowAttentionImpl& attn = *shared->attn;
  const int64_t batch_windows = windows.size(0);
  const int64_t tokens = windows.size(1);
  const int heads = attn.num_heads();
  const int head_dim = attn.head_dim();

  QkvTensors qkv_out = ComputeQkv(windows, attn.qkv, heads, head_dim);
  if (qkv != nullptr) *qkv = qkv_out;
  if (!proj_l && !proj_w) {
    // Without head mixing nothing stands between the logits and the softmax: the plain block's
    // attention, fused where the LibTorch version has it.
    torch::Tensor out = WindowSoftmaxAttention(qkv_out.q, qkv_out.k, qkv_out.v,
                                               attn.RelativePositionBias(), attn_mask)
                            .transpose(1, 2)
                            .reshape({batch_windows, tokens, heads * head_dim});
    return ops::Linear(out, attn.proj);
  }
  torch::Tensor q = ops::Elementwise(qkv_out.q * (1.0 / std::sqrt(static_cast<double>(head_dim))));
  torch::Tensor logits = ops::Matmul(q, qkv_out.k.transpose(-2, -1));  // [B_, h, N, N]
  logits = ops::Elementwise(logits + attn.RelativePositionBias().unsqueeze(0));
  if (proj_l) logits = MixHeads(logits, proj_l);
  if (attn_mask.defined()) {
    const int64_t num_windows = attn_mask.size(0);
    logits = ops::Elementwise(
        logits.view({batch_windows / num_windows, num_windows, heads, tokens, tokens}) +
        attn_mask.unsqueeze(1).unsqueeze(0));
    logits = logits.view({batch_windows, heads, tokens, tokens});
  }
  torch::Tensor probs = ops::Elementwise(torch::softmax(logits, -1));
  if (proj_w) probs = MixHeads(probs, proj_w);
  torch::Tensor out = ops::Matmul(probs, qkv_out.v)
                          .transpose(1, 2)
                          .reshape({batch_windows, tokens, heads * head_dim});
  return ops::Linear(out, attn.proj);
}

torch::Tensor SharedPassImpl::Run(const torch::Tensor& x, SharedBlockWeights& shared,
                                  QkvTensors* qkv) {
  const int batch = static_cast<int>(x.size(0));
  const int height = static_cast<int>(x.size(1));
  const int width = static_cast<int>(x.size(2));
  const int shift = geometry_.shift;
  const int window = geometry_.window;

  torch::Tensor h = ops::LayerNorm(x, norm1);
  if (shift > 0) h = torch::roll(h, {-shift, -shift}, {1, 2});
  h = Attention(PartitionWindows(h, window), shared, qkv);
  h = MergeWindows(h, window, batch, height, width);
  if (shift > 0) h = torch::roll(h, {shift, shift}, {1, 2});
  torch::Tensor y = ops::Elementwise(x + DropPath(h, geometry_.drop_path, is_training()));
  if (mlp_transform) y = mlp_transform(y);
  h = shared->mlp(ops::LayerNorm(y, norm2));
  return ops::Elementwise(y + DropPath(h, geometry_.drop_path, is_training()));
}

SharedGroupImpl::SharedGroupImpl(const SharingConfig& config, int stage, int group) {
  const SwinConfig& base = config.base;
  const int first = config.group_first_block(stage, group);
  const int dim = base.stages[stage].dim;
  const BlockWidths& widths = base.stages[stage].blocks[first];
  shared = register_module(
      "shared", SharedBlockWeights(dim, widths, base.stage_window(stage), base.qkv_bias));
  passes = register_module("passes", torch::nn::ModuleList());
  for (int p = 0; p < config.group_sizes[stage][group]; ++p) {
    BlockGeometry geometry;
    geometry.dim = dim;
    geometry.resolution = base.stage_resolution(stage);
    geometry.window = base.stage_window(stage);
    geometry.shift = base.block_shift(stage, first + p);
    geometry.drop_path = base.block_drop_path(stage, first + p);
    SharedPass pass(geometry, widths.num_heads, config.attention_transform, config.mlp_transform);
    passes->push_back(pass);
    pass_list.push_back(pass);
  }
}

SharedStageImpl::SharedStageImpl(const SharingConfig& config, int stage) {
  if (stage > 0) {
    downsample = register_module("downsample", PatchMerging(config.base.stages[stage - 1].dim,
                                                            config.base.stages[stage].dim));
  }
  groups = register_module("groups", torch::nn::ModuleList());
  for (int g = 0; g < config.num_groups(stage); ++g) {
    SharedGroup group(config, stage, g);
    groups->push_back(group);
    group_list.push_back(group);
  }
}

SharedSwinImpl::SharedSwinImpl(const SharingConfig& config) : config_(config) {
  const SwinConfig& base = config.base;
  patch_embed = register_module("patch_embed",
                                PatchEmbed(base.in_channels, base.embed_dim(), base.patch_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int s = 0; s < static_cast<int>(base.stages.size()); ++s) {
    SharedStage stage(config, s);
    layers->push_back(stage);
    stage_list_.push_back(stage);
  }
  norm = register_module("norm", MakeSwinLayerNorm(base.num_features()));
  head = register_module("head", ClassifierHead(base.num_features(), base.num_classes));
}

SharedPass SharedSwinImpl::pass(int s, int b) const {
  const int group = config_.group_of_block(s, b);
  return stage_list_.at(s)->group_list.at(group)->pass_list.at(config_.pass_of_block(s, b));
}

SharedSwinOutput SharedSwinImpl::Forward(const torch::Tensor& images,
                                         const SharedForwardRequest& request) {
  SharedSwinOutput output;
  output.qkv.resize(request.qkv_blocks.size());
  torch::Tensor x = patch_embed(images);
  for (int s = 0; s < static_cast<int>(stage_list_.size()); ++s) {
    SharedStageImpl& stage = *stage_list_[s];
    if (stage.downsample) x = stage.downsample(x);
    int block = 0;
    for (SharedGroup& group : stage.group_list) {
      for (SharedPass& pass : group->pass_list) {
        QkvTensors* qkv = nullptr;
        for (size_t i = 0; i < request.qkv_blocks.size(); ++i) {
          if (request.qkv_blocks[i] == std::make_pair(s, block)) qkv = &output.qkv[i];
        }
        x = pass->Run(x, group->shared, qkv);
        ++block;
      }
    }
    if (request.stage_hidden) output.stage_hidden.push_back(x);
  }
  x = ops::LayerNorm(x, norm);
  if (MacCounter::Active()) MacCounter::AddElementwise(x.numel());  // the average pool
  output.logits = head(x.mean({1, 2}));
  return output;
}

torch::Tensor SharedSwinImpl::forward(const torch::Tensor& images) {
  return Forward(images, SharedForwardRequest()).logits;
}

std::vector<std::pair<std::string, torch::Tensor>> SharedSwinImpl::StateDict() const {
  std::vector<std::pair<std::string, torch::Tensor>> state;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    state.emplace_back(item.key(), item.value());
  }
  for (const auto& item : named_buffers(/*recurse=*/true)) {
    if (!IsRebuiltBufferName(item.key())) state.emplace_back(item.key(), item.value());
  }
  return state;
}

absl::StatusOr<SharedSwin> CreateSharedSwin(const SharingConfig& config) {
  if (absl::Status status = config.Validate(); !status.ok()) return status;
  try {
    return SharedSwin(config);
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, "building the shared Swin Transformer");
  }
}

}  // namespace compress::pipeline
