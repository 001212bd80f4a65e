// The Swin Transformer block (Liu et al., "Swin Transformer: Hierarchical Vision Transformer
// using Shifted Windows", ICCV 2021) and its parts: window attention with a relative position
// bias, the MLP, and the shifted-window attention mask. Parameter names follow timm >= 0.9
// (norm1, attn.qkv, attn.proj, attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2), so
// that every block of every stage is addressable by the share and prune stages.
//
// Layout: blocks take and return channels-last feature maps [B, H, W, C], as timm >= 0.9 and
// torchvision do. Thread-safety: as any torch::nn::Module (a forward pass may run concurrently
// with another forward pass, not with changes to the module).
#ifndef COMPRESS_WORKER_PIPELINE_MODEL_SWIN_BLOCK_H_
#define COMPRESS_WORKER_PIPELINE_MODEL_SWIN_BLOCK_H_

#include <torch/torch.h>

#include "worker/pipeline/model/swin_config.h"

namespace compress::pipeline {

// Names of the buffers that are rebuilt from the config and never stored in a checkpoint.
inline constexpr const char* kRelativePositionIndexName = "relative_position_index";
inline constexpr const char* kAttentionMaskName = "attn_mask";

// Layers initialised as timm initialises Swin: Linear weights normal(0, 0.02), biases zero;
// LayerNorm eps 1e-5, weight one, bias zero.
torch::nn::Linear MakeSwinLinear(int in, int out, bool bias);
torch::nn::LayerNorm MakeSwinLayerNorm(int dim);

// softmax(q kᵀ / sqrt(d) + bias [+ mask]) v for the windows' heads: q, k, v [B_, h, N, d] with
// B_ = images * num_windows (window-major within an image, as PartitionWindows lays them out),
// bias [h, N, N], mask undefined or [num_windows, N, N] additive. Returns [B_, h, N, d].
// With LibTorch >= 2.0 this is one fused scaled_dot_product_attention call taking bias + mask as
// its additive attn_mask (the kernels that need no [B_, h, N, N] probabilities kept for the
// backward pass); with older LibTorch the explicit matmul, add, softmax, matmul. Both count the
// same MACs and elementwise operations (counted_ops.h).
torch::Tensor WindowSoftmaxAttention(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v, const torch::Tensor& bias,
                                     const torch::Tensor& mask);

// Whether WindowSoftmaxAttention runs the fused kernel call (LibTorch >= 2.0).
bool FusedWindowAttentionAvailable();

// Multi-head self-attention inside square windows of `window * window` tokens, with a learned
// bias per head and relative offset (Swin, section 3.2). qkv rows are [Q | K | V], each
// head-major; attention runs at width num_heads * head_dim, which may differ from `dim`.
class WindowAttentionImpl : public torch::nn::Module {
 public:
  WindowAttentionImpl(int dim, const BlockWidths& widths, int window, bool qkv_bias);

  // windows: [num_windows * B, N, dim] with N = window^2. mask: undefined, or
  // [num_windows, N, N] additive (0 or -100), laid out as the windows of one image.
  torch::Tensor forward(const torch::Tensor& windows, const torch::Tensor& mask);

  // The bias added to the attention logits: [num_heads, N, N].
  torch::Tensor RelativePositionBias() const;

  int num_heads() const { return widths_.num_heads; }
  int head_dim() const { return widths_.head_dim; }
  int window() const { return window_; }

  torch::nn::Linear qkv{nullptr};
  torch::nn::Linear proj{nullptr};
  torch::Tensor relative_position_bias_table;  // [(2w-1)^2, num_heads], a parameter.
  torch::Tensor relative_position_index;       // [N*N] int64 buffer, rebuilt, not saved.

 private:
  BlockWidths widths_;
  int window_;
};
TORCH_MODULE(WindowAttention);

// fc1 -> GELU -> fc2.
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int dim, int hidden);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear fc1{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(Mlp);

// Where a block sits and how it attends: everything but its widths.
struct BlockGeometry {
  int dim = 0;             // Stage width C.
  int resolution = 0;      // Feature map side H == W.
  int window = 0;          // Window side, already clamped to the resolution.
  int shift = 0;           // Cyclic shift, 0 for regular windows.
  double drop_path = 0.0;  // Stochastic depth probability while training.
};

// x = x + DropPath(Attention(norm1(x))); x = x + DropPath(Mlp(norm2(x))), the attention on
// regular or (cyclically) shifted windows.
class SwinBlockImpl : public torch::nn::Module {
 public:
  SwinBlockImpl(const BlockGeometry& geometry, const BlockWidths& widths, bool qkv_bias);

  // x: [B, H, W, C] -> [B, H, W, C].
  torch::Tensor forward(const torch::Tensor& x);

  const BlockGeometry& geometry() const { return geometry_; }
  const BlockWidths& widths() const { return widths_; }

  torch::nn::LayerNorm norm1{nullptr};
  WindowAttention attn{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
  Mlp mlp{nullptr};
  // [num_windows, N, N] additive mask of a shifted block (undefined when shift == 0): 0 where
  // two tokens of a window came from the same region of the unshifted map, -100 otherwise.
  torch::Tensor attn_mask;

 private:
  BlockGeometry geometry_;
  BlockWidths widths_;
};
TORCH_MODULE(SwinBlock);

// The shift mask described at SwinBlockImpl::attn_mask, built as timm and torchvision build
// it; exposed for tests.
torch::Tensor ShiftedWindowMask(int resolution, int window, int shift);

// [B, H, W, C] -> [B * (H/w) * (W/w), w*w, C] and back.
torch::Tensor PartitionWindows(const torch::Tensor& x, int window);
torch::Tensor MergeWindows(const torch::Tensor& windows, int window, int batch, int height,
                           int width);

// Stochastic depth per sample (Huang et al., 2016; timm's drop_path): zeroes whole residual
// branches with probability p while training and rescales the kept ones by 1/(1-p).
torch::Tensor DropPath(const torch::Tensor& x, double p, bool training);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_MODEL_SWIN_BLOCK_H_
