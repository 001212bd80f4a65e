// Classification metrics: top-k counts on logits and a whole-split evaluation loop.
#ifndef COMPRESS_WORKER_PIPELINE_TRAIN_EVALUATION_H_
#define COMPRESS_WORKER_PIPELINE_TRAIN_EVALUATION_H_

#include <torch/torch.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/pipeline/train/batch_source.h"
#include "worker/pipeline/train/training_types.h"

namespace compress::pipeline {

// Number of rows of `logits` (N×C) whose target (N, int64) is among the k highest logits;
// k is clamped to C. Ties are broken by torch::topk.
int64_t TopKCorrect(const torch::Tensor& logits, const torch::Tensor& targets, int64_t k);

// Runs `logits_fn` over every batch of epoch 0 of `source` with gradients off and `module` in
// eval mode (restoring its previous mode afterwards), and returns top-1, top-5 and mean
// cross-entropy. Batches are moved to `device`. Fails with FAILED_PRECONDITION on an empty split
// or logits whose shape does not match the targets; LibTorch errors propagate as c10::Error.
absl::StatusOr<EvalMetrics> Evaluate(torch::nn::Module& module, const LogitsFn& logits_fn,
                                     BatchSource& source, torch::Device device);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_TRAIN_EVALUATION_H_
