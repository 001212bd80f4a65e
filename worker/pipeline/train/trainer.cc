#include "worker/pipeline/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/pipeline/train/autocast.h"
#include "worker/pipeline/train/evaluation.h"

#ifdef COMPRESS_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace compress::pipeline {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Current and peak bytes allocated by LibTorch on a CUDA device; nothing on CPU builds.
void FillDeviceMemory(torch::Device device, MetricPoint& point) {
#ifdef COMPRESS_TORCH_CUDA
  if (!device.is_cuda()) return;
  const auto stats =
      c10::cuda::CUDACachingAllocator::getDeviceStats(device.has_index() ? device.index() : 0);
  // Index 0 is StatType::AGGREGATE in every LibTorch version.
  point.device_memory_bytes = stats.allocated_bytes[0].current;
  point.device_peak_memory_bytes = stats.allocated_bytes[0].peak;
#else
  (void)device;
  (void)point;
#endif
}

absl::Status StatusFromTrainingError(const c10::Error& error, const std::string& where) {
  const std::string message = error.what_without_backtrace();
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error) != nullptr ||
      absl::StrContains(message, "out of memory") ||
      absl::StrContains(message, "not enough memory")) {
    return absl::ResourceExhaustedError(absl::StrCat(where, ": out of memory: ", message));
  }
  return absl::InternalError(absl::StrCat(where, ": LibTorch error: ", message));
}

bool CancelRequested(const TrainerCallbacks& callbacks) {
  if (callbacks.cancel_flag != nullptr && callbacks.cancel_flag->load()) return true;
  return callbacks.should_cancel && callbacks.should_cancel();
}

// Running sums of the training metrics between two metric points.
struct Interval {
  Clock::time_point start = Clock::now();
  int64_t steps = 0;
  int64_t images = 0;
  double loss_sum = 0.0;
  // Losses not yet read from the device (steps unchecked_from ... on), summed there.
  torch::Tensor device_loss_sum;
  int64_t unchecked_from = 0;
  std::vector<std::pair<std::string, torch::Tensor>> term_sums;

  // `loss` is the step's loss when it was read on the host; otherwise output.loss is added on
  // the device.
  void Add(std::optional<double> loss, int64_t batch_images, const LossOutput& output) {
    ++steps;
    images += batch_images;
    if (loss.has_value()) {
      loss_sum += *loss;
    } else {
      const torch::Tensor value = output.loss.detach().to(torch::kDouble);
      device_loss_sum = device_loss_sum.defined() ? device_loss_sum + value : value;
    }
    for (size_t i = 0; i < output.terms.size(); ++i) {
      const torch::Tensor value = output.terms[i].second.detach().to(torch::kFloat).sum();
      if (i < term_sums.size() && term_sums[i].first == output.terms[i].first) {
        term_sums[i].second.add_(value);
      } else if (i == term_sums.size()) {
        term_sums.emplace_back(output.terms[i].first, value.clone());
      }
    }
  }

  // Reads the losses kept on the device (waiting for their steps) into loss_sum; a NaN or
  // infinity among them stops training. `next_step` is the step after the last one added.
  absl::Status SettleDeviceLoss(int64_t next_step, int64_t epoch, double lr) {
    if (!device_loss_sum.defined()) return absl::OkStatus();
    const double sum = device_loss_sum.item<double>();
    device_loss_sum = torch::Tensor();
    const int64_t first = unchecked_from;
    unchecked_from = next_step;
    if (!std::isfinite(sum)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "training stopped: the loss is ", sum, " in one of steps ", first, " to ", next_step - 1,
          " (epoch ", epoch, ", lr ", lr, "); lower the learning rate or check the data"));
    }
    loss_sum += sum;
    return absl::OkStatus();
  }
};

absl::Status NonFiniteGradient(double norm, int64_t step, int64_t epoch, int64_t batch, double lr) {
  return absl::FailedPreconditionError(
      absl::StrCat("training stopped: the gradient norm is ", norm, " at step ", step, " (epoch ",
                   epoch, ", batch ", batch, ", lr ", lr,
                   ") although the loss is finite; lower the learning rate or check the data"));
}

}  // namespace

std::string Trainer::CheckpointPath(const std::string& checkpoint_dir) {
  return (std::filesystem::path(checkpoint_dir) / "trainer_state.pt").string();
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(torch::nn::Module& module, LossFn loss_fn,
                                                         LogitsFn logits_fn,
                                                         const TrainerOptions& options) {
  if (!loss_fn) return absl::InvalidArgumentError("Trainer: the loss function is empty");
  if (options.epochs < 0 || options.max_steps < 0 ||
      (options.epochs == 0 && options.max_steps == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TrainerOptions: epochs (", options.epochs, ") and max_steps (", options.max_steps,
        ") must not be negative and at least one must be positive"));
  }
  if (options.warmup_steps < 0 || options.warmup_epochs < 0.0) {
    return absl::InvalidArgumentError(
        "TrainerOptions: warmup_steps and warmup_epochs must not be negative");
  }
  if (options.eval_every_epochs < 0 || options.log_every_steps < 0 ||
      options.checkpoint_every_steps < 0 || options.num_threads < 0) {
    return absl::InvalidArgumentError(
        "TrainerOptions: eval_every_epochs, log_every_steps, checkpoint_every_steps and "
        "num_threads must not be negative");
  }
  if (options.label_smoothing < 0.0 || options.label_smoothing >= 1.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TrainerOptions.label_smoothing must lie in [0, 1), got ", options.label_smoothing));
  }
  if (options.checkpoint_every_steps > 0 && options.checkpoint_dir.empty()) {
    return absl::InvalidArgumentError(
        "TrainerOptions: checkpoint_every_steps is set but checkpoint_dir is empty");
  }
  absl::StatusOr<std::unique_ptr<torch::optim::AdamW>> optimizer = MakeAdamW(module, options);
  if (!optimizer.ok()) return optimizer.status();
  return std::unique_ptr<Trainer>(new Trainer(module, std::move(loss_fn), std::move(logits_fn),
                                              options, *std::move(optimizer)));
}

Trainer::Trainer(torch::nn::Module& module, LossFn loss_fn, LogitsFn logits_fn,
                 const TrainerOptions& options, std::unique_ptr<torch::optim::AdamW> optimizer)
    : module_(module),
      loss_fn_(std::move(loss_fn)),
      logits_fn_(std::move(logits_fn)),
      options_(options),
      optimizer_(std::move(optimizer)),
      parameters_([this] {
        std::vector<torch::Tensor> parameters;
        for (const auto& group : optimizer_->param_groups()) {
          for (const torch::Tensor& p : group.params()) parameters.push_back(p);
        }
        return parameters;
      }()) {}

absl::StatusOr<TrainResult> Trainer::Train(BatchSource& train, BatchSource* validation,
                                           const TrainerCallbacks& callbacks) {
  if (used_) return absl::FailedPreconditionError("Trainer::Train may be called only once");
  used_ = true;
  if (validation != nullptr && !logits_fn_) {
    return absl::InvalidArgumentError(
        "Trainer: a validation split was given but no logits function");
  }
  try {
    return TrainUnchecked(train, validation, callbacks);
  } catch (const c10::Error& error) {
    return StatusFromTrainingError(error, absl::StrCat("training step ", current_step_));
  } catch (const std::exception& error) {
    return absl::InternalError(absl::StrCat("training step ", current_step_, ": ", error.what()));
  }
}

absl::StatusOr<TrainResult> Trainer::TrainUnchecked(BatchSource& train, BatchSource* validation,
                                                    const TrainerCallbacks& callbacks) {
  const Clock::time_point phase_start = Clock::now();
  if (options_.num_threads > 0) torch::set_num_threads(options_.num_threads);
  const torch::Device device = options_.device;
  if (device.is_cuda() && options_.allow_tf32) {
    at::globalContext().setAllowTF32CuBLAS(true);
    at::globalContext().setAllowTF32CuDNN(true);
  }
  const bool autocast = device.is_cuda() && options_.bf16_autocast;

  const int64_t batches_per_epoch = train.BatchesPerEpoch();
  if (batches_per_epoch <= 0) {
    return absl::FailedPreconditionError("Trainer: the training split yields no batches");
  }
  int64_t total_steps = options_.epochs * batches_per_epoch;
  if (options_.max_steps > 0) {
    total_steps = total_steps > 0 ? std::min(total_steps, options_.max_steps) : options_.max_steps;
  }
  const int64_t warmup = std::min<int64_t>(
      total_steps, options_.warmup_steps + std::llround(options_.warmup_epochs *
                                                        static_cast<double>(batches_per_epoch)));
  const LrSchedule schedule(options_.lr, options_.min_lr, warmup, total_steps);

  absl::StatusOr<Position> resumed = MaybeLoadCheckpoint(batches_per_epoch);
  if (!resumed.ok()) return resumed.status();
  Position position = *resumed;
  if (position.step == 0 && options_.seed >= 0) {
    torch::manual_seed(static_cast<uint64_t>(options_.seed));
  }

  TrainResult result;
  result.resumed_from_step = position.step;
  const auto epochs_done = [&] {
    return static_cast<double>(position.step) / static_cast<double>(batches_per_epoch);
  };
  const auto emit = [&](const MetricPoint& point) {
    if (callbacks.on_metric) callbacks.on_metric(point);
  };
  const auto evaluate = [&]() -> absl::Status {
    absl::StatusOr<EvalMetrics> metrics = Evaluate(module_, logits_fn_, *validation, device);
    if (!metrics.ok()) return metrics.status();
    MetricPoint point;
    point.kind = MetricPoint::Kind::kEval;
    point.step = position.step;
    point.epoch = epochs_done();
    point.loss = metrics->loss;
    point.eval = *metrics;
    emit(point);
    result.final_eval = *metrics;
    return absl::OkStatus();
  };
  const auto finish_checkpoint = [&]() -> absl::Status {
    if (!options_.checkpoint_at_end || options_.checkpoint_dir.empty()) return absl::OkStatus();
    return SaveCheckpoint(position, batches_per_epoch);
  };

  module_.train();
  Interval interval;
  // Totals of the phase, carried across resumes by the checkpoint.
  double& train_seconds = position.train_seconds;
  int64_t& images = position.images;
  double last_lr = 0.0;
  double last_grad_norm = 0.0;
  torch::Tensor device_grad_norm;
  const bool check_every_step = options_.check_loss_every_step.value_or(!device.is_cuda());
  interval.unchecked_from = position.step;
  bool epoch_open = false;
  // A cancel seen between steps, or as a source's CANCELLED (a source that watches the same
  // flag stops a batch read or an evaluation): the checkpoint is written either way.
  const auto cancel = [&]() -> absl::Status {
    // Nothing is saved from a diverged model: the losses still on the device are checked.
    if (absl::Status status = interval.SettleDeviceLoss(position.step, position.epoch, last_lr);
        !status.ok()) {
      return status;
    }
    if (absl::Status status = finish_checkpoint(); !status.ok()) return status;
    return absl::CancelledError(
        absl::StrCat("training cancelled after step ", position.step, " of ", total_steps));
  };
  const auto cancelled = [&](const absl::Status& status) {
    return absl::IsCancelled(status) && CancelRequested(callbacks);
  };
  while (position.step < total_steps) {
    if (!epoch_open) {
      if (absl::Status status = train.StartEpoch(position.epoch, position.batch); !status.ok()) {
        return cancelled(status) ? cancel() : status;
      }
      epoch_open = true;
    }
    if (CancelRequested(callbacks)) return cancel();
    const Clock::time_point step_start = Clock::now();
    absl::StatusOr<std::optional<TrainBatch>> next = train.Next();
    if (cancelled(next.status())) return cancel();
    if (!next.ok()) return next.status();
    if (!next->has_value()) {
      // End of an epoch.
      epoch_open = false;
      ++position.epoch;
      position.batch = 0;
      if (validation != nullptr && options_.eval_every_epochs > 0 &&
          position.epoch % options_.eval_every_epochs == 0 && position.step < total_steps) {
        train_seconds += SecondsSince(step_start);
        if (absl::Status status = evaluate(); !status.ok()) {
          return cancelled(status) ? cancel() : status;
        }
        interval.start = Clock::now();
      }
      continue;
    }
    current_step_ = position.step;
    TrainBatch batch{(**next).inputs.to(device, /*non_blocking=*/true),
                     (**next).targets.to(device, /*non_blocking=*/true), (**next).sample_ids};
    const int64_t batch_images = batch.inputs.size(0);

    last_lr = schedule.At(position.step);
    SetLearningRate(*optimizer_, last_lr);
    for (const torch::Tensor& p : parameters_) {
      p.mutable_grad().reset();  // set_to_none, as zero_grad does in PyTorch 2.x
    }
    LossOutput output;
    {
      CudaAutocastScope autocast_scope(autocast);
      output = loss_fn_(batch);
    }
    if (!output.loss.defined() || output.loss.numel() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "training step ", position.step, ": the loss function must return a scalar loss"));
    }
    std::optional<double> loss;
    if (check_every_step) {
      loss = output.loss.item<double>();
      if (!std::isfinite(*loss)) {
        return absl::FailedPreconditionError(
            absl::StrCat("training stopped: the loss is ", *loss, " at step ", position.step,
                         " (epoch ", position.epoch, ", batch ", position.batch, ", lr ", last_lr,
                         "); lower the learning rate or check the data"));
      }
    }
    output.loss.backward();
    if (check_every_step) {
      last_grad_norm = ClipGradientNorm(parameters_, options_.clip_grad_norm);
      // A finite loss can still give a non-finite gradient (an overflow in the backward pass):
      // the step would write NaN into every weight it updates.
      if (!std::isfinite(last_grad_norm)) {
        return NonFiniteGradient(last_grad_norm, position.step, position.epoch, position.batch,
                                 last_lr);
      }
    } else {
      device_grad_norm = ClipGradientNormOnDevice(parameters_, options_.clip_grad_norm);
    }
    optimizer_->step();
    ++position.step;
    ++position.batch;
    images += batch_images;
    interval.Add(loss, batch_images, output);

    const bool last_step = position.step == total_steps;
    const bool log_now = options_.log_every_steps > 0 &&
                         (position.step % options_.log_every_steps == 0 || last_step);
    const bool checkpoint_now = options_.checkpoint_every_steps > 0 &&
                                position.step % options_.checkpoint_every_steps == 0 && !last_step;
    if (log_now || checkpoint_now || last_step) {
      // Without per-step checks, the one wait for the device in this interval: its losses are
      // checked before anything is reported or saved.
      if (absl::Status status = interval.SettleDeviceLoss(position.step, position.epoch, last_lr);
          !status.ok()) {
        return status;
      }
      if (device_grad_norm.defined()) {
        last_grad_norm = device_grad_norm.item<double>();
        // This step's gradient: a checkpoint or the end of the phase may follow, before any loss
        // computed from the weights it updated (an earlier non-finite gradient shows in the
        // losses after it, which the check above reads).
        if (!std::isfinite(last_grad_norm)) {
          return NonFiniteGradient(last_grad_norm, position.step - 1, position.epoch,
                                   position.batch - 1, last_lr);
        }
      }
    }
    train_seconds += SecondsSince(step_start);

    if (log_now) {
      MetricPoint point;
      point.kind = MetricPoint::Kind::kTrain;
      point.step = position.step;
      point.epoch = epochs_done();
      point.loss = interval.loss_sum / static_cast<double>(interval.steps);
      for (const auto& [name, sum] : interval.term_sums) {
        point.terms.emplace_back(name, sum.item<double>() / static_cast<double>(interval.steps));
      }
      point.lr = last_lr;
      point.grad_norm = last_grad_norm;
      const double seconds = SecondsSince(interval.start);
      point.images_per_second =
          seconds > 0.0 ? static_cast<double>(interval.images) / seconds : 0.0;
      FillDeviceMemory(device, point);
      emit(point);
      interval = Interval();
      interval.unchecked_from = position.step;
    }
    if (checkpoint_now) {
      if (absl::Status status = SaveCheckpoint(position, batches_per_epoch); !status.ok()) {
        return status;
      }
      interval.start = Clock::now();
    }
  }

  if (validation != nullptr) {
    if (absl::Status status = evaluate(); !status.ok()) {
      return cancelled(status) ? cancel() : status;
    }
  }
  if (absl::Status status = finish_checkpoint(); !status.ok()) return status;
  if (!options_.checkpoint_dir.empty() && options_.checkpoint_at_end) {
    result.checkpoint_path = CheckpointPath(options_.checkpoint_dir);
  }
  result.steps = position.step;
  result.epochs = epochs_done();
  result.wall_seconds = SecondsSince(phase_start);
  result.train_seconds = train_seconds;
  result.images_per_second =
      train_seconds > 0.0 ? static_cast<double>(images) / train_seconds : 0.0;
  return result;
}

LossFn ClassificationLoss(LogitsFn logits_fn, double label_smoothing) {
  return [logits_fn = std::move(logits_fn), label_smoothing](const TrainBatch& batch) {
    const torch::Tensor logits = logits_fn(batch.inputs);
    torch::Tensor loss = torch::nn::functional::cross_entropy(
        logits.to(torch::kFloat), batch.targets.to(torch::kLong),
        torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing));
    LossOutput output;
    output.terms.emplace_back("ce", loss.detach());
    output.loss = std::move(loss);
    return output;
  };
}

}  // namespace compress::pipeline
