#include "worker/pipeline/model/swin_block.h"

#include <torch/version.h>

#include <cmath>

#include "worker/pipeline/model/counted_ops.h"

namespace compress::pipeline {
namespace {

// timm initialises Linear weights and the bias table with trunc_normal_(std=0.02), truncated
// at +-2 (absolute), i.e. 100 standard deviations: in effect a plain normal.
void TruncNormal(torch::Tensor& t, double std) {
  torch::NoGradGuard no_grad;
  t.normal_(0.0, std).clamp_(-2.0, 2.0);
}

// Index into the bias table for every (query, key) pair of a window: [N*N], row-major over
// (query, key), the (dy, dx) offset mapped to (dy + w - 1) * (2w - 1) + (dx + w - 1).
torch::Tensor BuildRelativePositionIndex(int window) {
  torch::Tensor coords = torch::stack(torch::meshgrid(
      {torch::arange(window), torch::arange(window)}, /*indexing=*/"ij"));              // [2, w, w]
  torch::Tensor flat = coords.flatten(1);                                               // [2, N]
  torch::Tensor relative = (flat.unsqueeze(2) - flat.unsqueeze(1)).permute({1, 2, 0});  // [N, N, 2]
  relative = relative + (window - 1);
  torch::Tensor index = relative.select(2, 0) * (2 * window - 1) + relative.select(2, 1);
  return index.flatten().to(torch::kLong);
}

}  // namespace

torch::nn::Linear MakeSwinLinear(int in, int out, bool bias) {
  torch::nn::Linear linear(torch::nn::LinearOptions(in, out).bias(bias));
  TruncNormal(linear->weight, 0.02);
  if (bias) {
    torch::NoGradGuard no_grad;
    linear->bias.zero_();
  }
  return linear;
}

torch::nn::LayerNorm MakeSwinLayerNorm(int dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5));
}

torch::Tensor PartitionWindows(const torch::Tensor& x, int window) {
  const int64_t batch = x.size(0), height = x.size(1), width = x.size(2), channels = x.size(3);
  return x.view({batch, height / window, window, width / window, window, channels})
      .permute({0, 1, 3, 2, 4, 5})
      .reshape({-1, window * window, channels});
}

torch::Tensor MergeWindows(const torch::Tensor& windows, int window, int batch, int height,
                           int width) {
  const int64_t channels = windows.size(-1);
  return windows.view({batch, height / window, width / window, window, window, channels})
      .permute({0, 1, 3, 2, 4, 5})
      .reshape({batch, height, width, channels});
}

torch::Tensor ShiftedWindowMask(int resolution, int window, int shift) {
  // Label the regions that the cyclic shift brings together: three bands per axis,
  // [0, -window), [-window, -shift), [-shift, end).
  torch::Tensor regions = torch::zeros({1, resolution, resolution, 1});
  const int64_t bounds[4] = {0, resolution - window, resolution - shift, resolution};
  int label = 0;
  for (int h = 0; h < 3; ++h) {
    for (int w = 0; w < 3; ++w) {
      regions.slice(1, bounds[h], bounds[h + 1]).slice(2, bounds[w], bounds[w + 1]).fill_(label);
      ++label;
    }
  }
  torch::Tensor labels = PartitionWindows(regions, window).squeeze(-1);  // [nW, N]
  torch::Tensor differ = labels.unsqueeze(1) != labels.unsqueeze(2);     // [nW, N, N]
  return torch::zeros(differ.sizes()).masked_fill(differ, -100.0);
}

torch::Tensor DropPath(const torch::Tensor& x, double p, bool training) {
  if (!training || p <= 0.0) return x;
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  // Scale the small per-sample mask, not the activations: one full-size multiply.
  torch::Tensor mask = torch::empty(shape, x.options()).bernoulli_(keep).div_(keep);
  return x * mask;
}

WindowAttentionImpl::WindowAttentionImpl(int dim, const BlockWidths& widths, int window,
                                         bool qkv_bias)
    : widths_(widths), window_(window) {
  const int attn_dim = widths.attn_dim();
  qkv = register_module("qkv", MakeSwinLinear(dim, 3 * attn_dim, qkv_bias));
  proj = register_module("proj", MakeSwinLinear(attn_dim, dim, /*bias=*/true));
  const int table_side = 2 * window - 1;
  relative_position_bias_table = register_parameter(
      "relative_position_bias_table", torch::empty({table_side * table_side, widths.num_heads}));
  TruncNormal(relative_position_bias_table, 0.02);
  relative_position_index =
      register_buffer(kRelativePositionIndexName, BuildRelativePositionIndex(window));
}

torch::Tensor WindowAttentionImpl::RelativePositionBias() const {
  const int64_t tokens = int64_t{window_} * window_;
  return relative_position_bias_table.index_select(0, relative_position_index)
      .view({tokens, tokens, widths_.num_heads})
      .permute({2, 0, 1})
      .contiguous();  // a contiguous addend keeps the broadcast add over all windows fast
}

torch::Tensor WindowAttentionImpl::forward(const torch::Tensor& windows,
                                           const torch::Tensor& mask) {
  const int64_t batch_windows = windows.size(0);
  const int64_t tokens = windows.size(1);
  const int heads = widths_.num_heads;
  const int head_dim = widths_.head_dim;

  // [B_, N, 3*h*d] -> 3 x [B_, h, N, d]
  torch::Tensor qkv_out = ops::Linear(windows, qkv)
                              .view({batch_windows, tokens, 3, heads, head_dim})
                              .permute({2, 0, 3, 1, 4});
  // Nothing stands between the logits (with bias and mask) and the softmax: one fused call
  // where the LibTorch version has it.
  torch::Tensor out = WindowSoftmaxAttention(qkv_out[0], qkv_out[1], qkv_out[2],
                                             RelativePositionBias(), mask)  // [B_, h, N, d]
                          .transpose(1, 2)
                          .reshape({batch_windows, tokens, heads * head_dim});
  return ops::Linear(out, proj);
}

bool FusedWindowAttentionAvailable() {
#if TORCH_VERSION_MAJOR >= 2
  return true;
#else
  return false;
#endif
}

torch::Tensor WindowSoftmaxAttention(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v, const torch::Tensor& bias,
                                     const torch::Tensor& mask) {
  const int64_t batch_windows = q.size(0);
  const int64_t heads = q.size(1);
  const int64_t tokens = q.size(2);
  const int64_t head_dim = q.size(3);
#if TORCH_VERSION_MAJOR >= 2
  if (MacCounter::Active()) {
    // As the explicit path below counts: the scaling, two matmuls, bias, mask and softmax.
    const int64_t logits = batch_windows * heads * tokens * tokens;
    MacCounter::AddElementwise(q.numel() + logits * (mask.defined() ? 3 : 2));
    MacCounter::AddMacs(2 * logits * head_dim);
  }
  if (!mask.defined()) {
    // The bias [h, N, N] broadcasts over the windows.
    return at::scaled_dot_product_attention(q, k, v, bias.unsqueeze(0).to(q.scalar_type()));
  }
  // The mask differs per window and the bias per head: fold the windows into the heads,
  // [B, nW * h, N, d], so that bias + mask is one [1, nW * h, N, N] addend shared by the images.
  const int64_t num_windows = mask.size(0);
  const int64_t images = batch_windows / num_windows;
  auto fold = [&](const torch::Tensor& t) {
    return t.reshape({images, num_windows * heads, tokens, head_dim});
  };
  torch::Tensor addend = (mask.unsqueeze(1) + bias.unsqueeze(0))
                             .reshape({1, num_windows * heads, tokens, tokens})
                             .to(q.scalar_type());
  return at::scaled_dot_product_attention(fold(q), fold(k), fold(v), addend)
      .reshape({batch_windows, heads, tokens, head_dim});
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  torch::Tensor logits = ops::Matmul(ops::Elementwise(q * scale), k.transpose(-2, -1));
  logits = ops::Elementwise(logits + bias.unsqueeze(0));  // [B_, h, N, N]
  if (mask.defined()) {
    const int64_t num_windows = mask.size(0);
    logits = ops::Elementwise(
        logits.view({batch_windows / num_windows, num_windows, heads, tokens, tokens}) +
        mask.unsqueeze(1).unsqueeze(0));
    logits = logits.view({batch_windows, heads, tokens, tokens});
  }
  return ops::Matmul(ops::Elementwise(torch::softmax(logits, -1)), v);
#endif
}

MlpImpl::MlpImpl(int dim, int hidden) {
  fc1 = register_module("fc1", MakeSwinLinear(dim, hidden, /*bias=*/true));
  fc2 = register_module("fc2", MakeSwinLinear(hidden, dim, /*bias=*/true));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return ops::Linear(ops::Elementwise(torch::gelu(ops::Linear(x, fc1))), fc2);
}

SwinBlockImpl::SwinBlockImpl(const BlockGeometry& geometry, const BlockWidths& widths,
                             bool qkv_bias)
    : geometry_(geometry), widths_(widths) {
  norm1 = register_module("norm1", MakeSwinLayerNorm(geometry.dim));
  attn = register_module("attn", WindowAttention(geometry.dim, widths, geometry.window, qkv_bias));
  norm2 = register_module("norm2", MakeSwinLayerNorm(geometry.dim));
  mlp = register_module("mlp", Mlp(geometry.dim, widths.mlp_hidden));
  if (geometry.shift > 0) {
    attn_mask =
        register_buffer(kAttentionMaskName,
                        ShiftedWindowMask(geometry.resolution, geometry.window, geometry.shift));
  }
}

torch::Tensor SwinBlockImpl::forward(const torch::Tensor& x) {
  const int batch = static_cast<int>(x.size(0));
  const int height = static_cast<int>(x.size(1));
  const int width = static_cast<int>(x.size(2));
  const int shift = geometry_.shift;
  const int window = geometry_.window;

  torch::Tensor h = ops::LayerNorm(x, norm1);
  if (shift > 0) h = torch::roll(h, {-shift, -shift}, {1, 2});
  h = attn(PartitionWindows(h, window), attn_mask);
  h = MergeWindows(h, window, batch, height, width);
  if (shift > 0) h = torch::roll(h, {shift, shift}, {1, 2});
  torch::Tensor y = ops::Elementwise(x + DropPath(h, geometry_.drop_path, is_training()));
  h = mlp(ops::LayerNorm(y, norm2));
  return ops::Elementwise(y + DropPath(h, geometry_.drop_path, is_training()));
}

}  // namespace compress::pipeline
