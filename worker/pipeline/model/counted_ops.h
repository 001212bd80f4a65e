// The operations whose cost cost.h accounts for, each adding its MACs or elementwise count,
// computed from the runtime tensor shapes, to the active MacCounter of the calling thread (if
// any). Modules of the pipeline call these instead of the plain torch functions so that the
// counted cost is the cost of what actually ran, functional calls included.
#ifndef COMPRESS_WORKER_PIPELINE_MODEL_COUNTED_OPS_H_
#define COMPRESS_WORKER_PIPELINE_MODEL_COUNTED_OPS_H_

#include <torch/torch.h>

#include "worker/pipeline/model/cost.h"

namespace compress::pipeline::ops {

// y = x W^T + b over the last dimension; `bias` may be undefined. MACs: tokens * in * out.
inline torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& bias) {
  if (MacCounter::Active()) {
    MacCounter::AddMacs(x.numel() / x.size(-1) * weight.size(0) * weight.size(1));
  }
  return torch::nn::functional::linear(x, weight, bias);
}

inline torch::Tensor Linear(const torch::Tensor& x, torch::nn::Linear& linear) {
  return Linear(x, linear->weight, linear->bias);
}

// Batched a @ b with a [..., m, k] and b [..., k, n]. MACs: batch * m * k * n.
inline torch::Tensor Matmul(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor result = torch::matmul(a, b);
  if (MacCounter::Active()) MacCounter::AddMacs(result.numel() * a.size(-1));
  return result;
}

// The patch embedding convolution (kernel == stride, no padding, no groups).
// MACs: output elements * in_channels * kernel area.
inline torch::Tensor Conv2d(const torch::Tensor& x, torch::nn::Conv2d& conv) {
  torch::Tensor result = conv(x);
  if (MacCounter::Active()) {
    const torch::Tensor& w = conv->weight;
    MacCounter::AddMacs(result.numel() * w.size(1) * w.size(2) * w.size(3));
  }
  return result;
}

// Counts one elementwise operation per element of `result` and returns it, for elementwise
// operations written inline (adds, scaling, softmax, GELU, LayerNorm).
inline torch::Tensor Elementwise(torch::Tensor result) {
  if (MacCounter::Active()) MacCounter::AddElementwise(result.numel());
  return result;
}

inline torch::Tensor LayerNorm(const torch::Tensor& x, torch::nn::LayerNorm& norm) {
  return Elementwise(norm(x));
}

}  // namespace compress::pipeline::ops

#endif  // COMPRESS_WORKER_PIPELINE_MODEL_COUNTED_OPS_H_
