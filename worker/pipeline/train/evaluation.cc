#include "worker/pipeline/train/evaluation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace compress::pipeline {

int64_t TopKCorrect(const torch::Tensor& logits, const torch::Tensor& targets, int64_t k) {
  const int64_t classes = logits.size(1);
  k = std::max<int64_t>(1, std::min(k, classes));
  const torch::Tensor top = std::get<1>(logits.topk(k, /*dim=*/1));
  const torch::Tensor hit = top.eq(targets.to(top.device()).view({-1, 1})).any(/*dim=*/1);
  return hit.sum().item<int64_t>();
}

absl::StatusOr<EvalMetrics> Evaluate(torch::nn::Module& module, const LogitsFn& logits_fn,
                                     BatchSource& source, torch::Device device) {
  const bool was_training = module.is_training();
  module.eval();
  torch::NoGradGuard no_grad;
  absl::Status status = source.StartEpoch(/*epoch=*/0, /*first_batch=*/0);
  EvalMetrics metrics;
  double loss_sum = 0.0;
  int64_t top1 = 0;
  int64_t top5 = 0;
  while (status.ok()) {
    absl::StatusOr<std::optional<TrainBatch>> next = source.Next();
    if (!next.ok()) {
      status = next.status();
      break;
    }
    if (!next->has_value()) break;
    TrainBatch& batch = **next;
    const torch::Tensor inputs = batch.inputs.to(device, /*non_blocking=*/true);
    const torch::Tensor targets = batch.targets.to(device, torch::kLong, /*non_blocking=*/true);
    const torch::Tensor logits = logits_fn(inputs).to(torch::kFloat);
    if (logits.dim() != 2 || logits.size(0) != targets.size(0)) {
      status = absl::FailedPreconditionError(
          absl::StrCat("Evaluate: logits of shape ", c10::str(logits.sizes()), " do not match ",
                       targets.size(0), " targets"));
      break;
    }
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, targets,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    top1 += TopKCorrect(logits, targets, 1);
    top5 += TopKCorrect(logits, targets, 5);
    metrics.samples += targets.size(0);
  }
  module.train(was_training);
  if (!status.ok()) return status;
  if (metrics.samples == 0) {
    return absl::FailedPreconditionError("Evaluate: the validation split yielded no samples");
  }
  const double n = static_cast<double>(metrics.samples);
  metrics.top1 = static_cast<double>(top1) / n;
  metrics.top5 = static_cast<double>(top5) / n;
  metrics.loss = loss_sum / n;
  return metrics;
}

}  // namespace compress::pipeline
