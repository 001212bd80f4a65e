// The optimisation recipe of the trainer, apart from its loop so that it can be tested alone:
// the learning-rate schedule (linear warm-up then cosine decay), the weight-decay grouping of
// parameters by name, and the AdamW optimizer built from them.
#ifndef COMPRESS_WORKER_PIPELINE_TRAIN_OPTIMIZATION_H_
#define COMPRESS_WORKER_PIPELINE_TRAIN_OPTIMIZATION_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipeline/train/training_types.h"

namespace compress::pipeline {

// Learning rate as a function of the optimizer step: linear warm-up from peak/warmup to peak over
// `warmup_steps` steps, then half a cosine from peak down to `min_lr` over the remaining steps
// (Loshchilov & Hutter, "SGDR", 2017; Goyal et al., "Accurate, Large Minibatch SGD", 2017).
// Step s is 0-based: At(s) is the rate used by the (s+1)-th optimizer step.
//   s < W:      peak * (s + 1) / W
//   W <= s < T: min + (peak - min) * (1 + cos(pi * (s - W) / (T - W))) / 2
//   s >= T:     min
class LrSchedule {
 public:
  LrSchedule(double peak_lr, double min_lr, int64_t warmup_steps, int64_t total_steps);

  double At(int64_t step) const;

  int64_t warmup_steps() const { return warmup_steps_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  double peak_lr_;
  double min_lr_;
  int64_t warmup_steps_;
  int64_t total_steps_;
};

// Whether a parameter gets weight decay: not biases, not parameters of norm layers (a name
// component containing "norm"), not 0-d/1-d tensors, not names containing one of
// `no_decay_name_patterns` (position tables). Following timm's and Swin's recipes.
bool UsesWeightDecay(const std::string& name, const torch::Tensor& parameter,
                     const std::vector<std::string>& no_decay_name_patterns);

// Names of the trainable parameters of `module` split by UsesWeightDecay.
struct ParameterGrouping {
  std::vector<std::string> decay;
  std::vector<std::string> no_decay;
};
ParameterGrouping GroupParameters(const torch::nn::Module& module,
                                  const std::vector<std::string>& no_decay_name_patterns);

// AdamW over the trainable parameters of `module`: group 0 with options.weight_decay, group 1
// with none (empty groups are left out, the order stays decay-then-no-decay). Fails with
// INVALID_ARGUMENT on out-of-range hyper-parameters or a module without trainable parameters.
absl::StatusOr<std::unique_ptr<torch::optim::AdamW>> MakeAdamW(const torch::nn::Module& module,
                                                               const TrainerOptions& options);

// Sets the learning rate of every parameter group.
void SetLearningRate(torch::optim::Optimizer& optimizer, double lr);

// Clips the global L2 norm of the gradients of `parameters` to `max_norm` (no-op when
// max_norm <= 0) and returns the norm before clipping (0 when no parameter has a gradient).
double ClipGradientNorm(const std::vector<torch::Tensor>& parameters, double max_norm);

// ClipGradientNorm without waiting for the device: returns the norm before clipping as a scalar
// tensor on the gradients' device (undefined when no parameter has a gradient) and scales the
// gradients by min(1, max_norm / (norm + 1e-6)) on the device, leaving them as they are when the
// norm is not finite (as ClipGradientNorm does).
torch::Tensor ClipGradientNormOnDevice(const std::vector<torch::Tensor>& parameters,
                                       double max_norm);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_TRAIN_OPTIMIZATION_H_
