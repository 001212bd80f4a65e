#include "worker/pipeline/train/optimization.h"

#include <cmath>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace compress::pipeline {

LrSchedule::LrSchedule(double peak_lr, double min_lr, int64_t warmup_steps, int64_t total_steps)
    : peak_lr_(peak_lr),
      min_lr_(min_lr),
      warmup_steps_(std::max<int64_t>(0, warmup_steps)),
      total_steps_(std::max<int64_t>(0, total_steps)) {}

double LrSchedule::At(int64_t step) const {
  if (step < warmup_steps_) {
    return peak_lr_ * static_cast<double>(step + 1) / static_cast<double>(warmup_steps_);
  }
  if (step >= total_steps_) return min_lr_;
  const double progress =
      static_cast<double>(step - warmup_steps_) / static_cast<double>(total_steps_ - warmup_steps_);
  return min_lr_ + (peak_lr_ - min_lr_) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

bool UsesWeightDecay(const std::string& name, const torch::Tensor& parameter,
                     const std::vector<std::string>& no_decay_name_patterns) {
  if (parameter.dim() <= 1) return false;
  for (const std::string& pattern : no_decay_name_patterns) {
    if (!pattern.empty() && absl::StrContains(name, pattern)) return false;
  }
  const std::vector<absl::string_view> parts = absl::StrSplit(name, '.');
  if (!parts.empty() && parts.back() == "bias") return false;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (absl::StrContains(parts[i], "norm")) return false;
  }
  return true;
}

ParameterGrouping GroupParameters(const torch::nn::Module& module,
                                  const std::vector<std::string>& no_decay_name_patterns) {
  ParameterGrouping grouping;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    if (UsesWeightDecay(item.key(), item.value(), no_decay_name_patterns)) {
      grouping.decay.push_back(item.key());
    } else {
      grouping.no_decay.push_back(item.key());
    }
  }
  return grouping;
}

absl::StatusOr<std::unique_ptr<torch::optim::AdamW>> MakeAdamW(const torch::nn::Module& module,
                                                               const TrainerOptions& options) {
  if (!(options.lr > 0.0) || !std::isfinite(options.lr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("TrainerOptions.lr must be positive and finite, got ", options.lr));
  }
  if (options.min_lr < 0.0 || options.min_lr > options.lr) {
    return absl::InvalidArgumentError(
        absl::StrCat("TrainerOptions.min_lr must lie in [0, lr]; got ", options.min_lr, " with lr ",
                     options.lr));
  }
  if (options.weight_decay < 0.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TrainerOptions.weight_decay must not be negative, got ", options.weight_decay));
  }
  if (options.beta1 < 0.0 || options.beta1 >= 1.0 || options.beta2 < 0.0 || options.beta2 >= 1.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("TrainerOptions.beta1/beta2 must lie in [0, 1); got ", options.beta1, " and ",
                     options.beta2));
  }
  if (!(options.eps > 0.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("TrainerOptions.eps must be positive, got ", options.eps));
  }

  std::vector<torch::Tensor> decay;
  std::vector<torch::Tensor> no_decay;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    if (UsesWeightDecay(item.key(), item.value(), options.no_decay_name_patterns)) {
      decay.push_back(item.value());
    } else {
      no_decay.push_back(item.value());
    }
  }
  if (decay.empty() && no_decay.empty()) {
    return absl::InvalidArgumentError("MakeAdamW: the model has no trainable parameters");
  }
  auto group_options = [&](double weight_decay) {
    auto adamw = std::make_unique<torch::optim::AdamWOptions>(options.lr);
    adamw->betas(std::make_tuple(options.beta1, options.beta2))
        .eps(options.eps)
        .weight_decay(weight_decay);
    return adamw;
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty()) groups.emplace_back(std::move(decay), group_options(options.weight_decay));
  if (!no_decay.empty()) groups.emplace_back(std::move(no_decay), group_options(0.0));
  torch::optim::AdamWOptions defaults(options.lr);
  defaults.betas(std::make_tuple(options.beta1, options.beta2)).eps(options.eps).weight_decay(0.0);
  return std::make_unique<torch::optim::AdamW>(std::move(groups), defaults);
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (torch::optim::OptimizerParamGroup& group : optimizer.param_groups()) {
    group.options().set_lr(lr);
  }
}

double ClipGradientNorm(const std::vector<torch::Tensor>& parameters, double max_norm) {
  std::vector<torch::Tensor> grads;
  grads.reserve(parameters.size());
  for (const torch::Tensor& parameter : parameters) {
    const torch::Tensor& grad = parameter.grad();
    if (grad.defined()) grads.push_back(grad);
  }
  if (grads.empty()) return 0.0;
  std::vector<torch::Tensor> norms;
  norms.reserve(grads.size());
  for (const torch::Tensor& grad : grads) norms.push_back(grad.detach().norm(2).to(torch::kFloat));
  const double total = torch::stack(norms).norm(2).item<double>();
  if (max_norm > 0.0 && std::isfinite(total) && total > max_norm) {
    // Same coefficient as torch.nn.utils.clip_grad_norm_.
    const double scale = max_norm / (total + 1e-6);
    torch::NoGradGuard no_grad;
    for (torch::Tensor& grad : grads) grad.mul_(scale);
  }
  return total;
}

torch::Tensor ClipGradientNormOnDevice(const std::vector<torch::Tensor>& parameters,
                                       double max_norm) {
  std::vector<torch::Tensor> grads;
  grads.reserve(parameters.size());
  for (const torch::Tensor& parameter : parameters) {
    const torch::Tensor& grad = parameter.grad();
    if (grad.defined()) grads.push_back(grad);
  }
  if (grads.empty()) return torch::Tensor();
  std::vector<torch::Tensor> norms;
  norms.reserve(grads.size());
  for (const torch::Tensor& grad : grads) norms.push_back(grad.detach().norm(2).to(torch::kFloat));
  torch::Tensor total = torch::stack(norms).norm(2);
  if (max_norm > 0.0) {
    torch::NoGradGuard no_grad;
    torch::Tensor scale = (max_norm / (total + 1e-6)).clamp_max(1.0);
    scale = torch::where(torch::isfinite(total), scale, torch::ones_like(scale));
    for (torch::Tensor& grad : grads) grad.mul_(scale.to(grad.scalar_type()));
  }
  return total;
}

}  // namespace compress::pipeline
