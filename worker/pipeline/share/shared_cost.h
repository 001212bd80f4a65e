// Cost of a weight-shared Swin: a shared weight is counted once for the parameters and once per
// pass for the operations; the transformation layers of every pass add their own. Conventions
// as model/cost.h (MACs of conv, linear and attention matmuls, biases not counted; elementwise
// operations apart). Free of LibTorch.
#ifndef COMPRESS_WORKER_PIPELINE_SHARE_SHARED_COST_H_
#define COMPRESS_WORKER_PIPELINE_SHARE_SHARED_COST_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/share/sharing_config.h"

namespace compress::pipeline {

struct SharedCost {
  int64_t params = 0;            // Trainable parameters of the shared model.
  OpCount total;                 // One image through the shared model.
  int64_t base_params = 0;       // Trainable parameters of the unshared model (config.base).
  OpCount base_total;            // One image through the unshared model.
  int64_t transform_params = 0;  // Of every pass's proj_l, proj_w and FFN transform.
  OpCount transforms;            // Operations of the transforms (included in `total`).
};

// Per pass:
//   attention transform: params 2 * (h*h + h); MACs 2 * tokens * N * h*h (proj_l on the logits,
//     proj_w on the probabilities; N = window^2 tokens per window);
//   FFN transform: params 2*C (LayerNorm) + C*k*k + C (depthwise conv); MACs tokens * C * k*k;
//     elementwise 2 * tokens * C (the LayerNorm and the residual add).
// Shared: the parameters of attn.qkv, attn.proj, the bias table, mlp.fc1 and mlp.fc2 of every
// pass after the first of its group are not counted again. INVALID_ARGUMENT for an invalid
// config.
absl::StatusOr<SharedCost> AnalyzeSharedCost(const SharingConfig& config);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_SHARE_SHARED_COST_H_
