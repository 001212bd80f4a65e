// Trainer: the training loop shared by the teacher, share/distill and fine-tuning phases. It
// trains any torch::nn::Module through caller-supplied loss and logits functions, so it knows
// nothing of the model class, the teacher, or the loss terms.
#ifndef COMPRESS_WORKER_PIPELINE_TRAIN_TRAINER_H_
#define COMPRESS_WORKER_PIPELINE_TRAIN_TRAINER_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/pipeline/train/batch_source.h"
#include "worker/pipeline/train/optimization.h"
#include "worker/pipeline/train/training_types.h"

namespace compress::pipeline {

// Trains one module for one phase: AdamW (no weight decay on norms, biases and position
// tables), linear warm-up then cosine decay, gradient clipping, bf16 autocast and TF32 on CUDA,
// periodic evaluation, resumable checkpoints, cancellation between steps.
//
// Each step: set the scheduled lr, clear gradients, call the loss function (under autocast when
// enabled), stop with FAILED_PRECONDITION if the loss is not finite, back-propagate, clip, step.
//
// Resume: the checkpoint `<checkpoint_dir>/trainer_state.pt` holds the module's parameters and
// buffers, the optimizer state, the step, the (epoch, batch) position of the training source and
// the default generators' states. A phase resumed from it runs the same steps on the same
// batches with the same optimizer state as an uninterrupted one.
//
// Not thread-safe; the module must not be used elsewhere while Train runs. The cancel flag and
// should_cancel callback are the only things other threads may touch.
class Trainer {
 public:
  // `module` is trained in place; it is not owned and must outlive the Trainer. `loss_fn`
  // computes the training loss of a batch (it typically captures the module holder; the
  // distillation stage also captures its teacher there); `logits_fn` gives logits for
  // evaluation and may be empty when no validation split will be passed. Fails with
  // INVALID_ARGUMENT on inconsistent options or an empty loss function.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(torch::nn::Module& module, LossFn loss_fn,
                                                         LogitsFn logits_fn,
                                                         const TrainerOptions& options);

  // Runs the phase over `train` (and evaluates on `validation` when not null). Returns the
  // result, or: CANCELLED when cancelled between steps (after writing the checkpoint when
  // checkpoint_at_end), FAILED_PRECONDITION naming the step on a non-finite loss,
  // RESOURCE_EXHAUSTED when the device runs out of memory, INTERNAL for other LibTorch errors,
  // the source's status when a batch cannot be produced, and DATA_LOSS / FAILED_PRECONDITION
  // when a checkpoint to resume from is unreadable or does not fit the phase. May be called
  // once per Trainer.
  absl::StatusOr<TrainResult> Train(BatchSource& train, BatchSource* validation,
                                    const TrainerCallbacks& callbacks = {});

  // Path of the resumable checkpoint in `checkpoint_dir`.
  static std::string CheckpointPath(const std::string& checkpoint_dir);

  // The optimizer (parameter group 0: weight decay, group 1: none).
  torch::optim::AdamW& optimizer() { return *optimizer_; }

 private:
  struct Position {
    int64_t step = 0;
    int64_t epoch = 0;
    int64_t batch = 0;  // next batch index within `epoch`
    // The phase's training so far, over every run that reached this position: seconds in
    // training steps and images trained on (a resumed phase's throughput covers all its runs).
    double train_seconds = 0.0;
    int64_t images = 0;
  };

  Trainer(torch::nn::Module& module, LossFn loss_fn, LogitsFn logits_fn,
          const TrainerOptions& options, std::unique_ptr<torch::optim::AdamW> optimizer);

  absl::StatusOr<TrainResult> TrainUnchecked(BatchSource& train, BatchSource* validation,
                                             const TrainerCallbacks& callbacks);
  absl::Status SaveCheckpoint(const Position& position, int64_t batches_per_epoch);
  // Loads the checkpoint when there is one; returns the position to continue from (step 0 when
  // there is none).
  absl::StatusOr<Position> MaybeLoadCheckpoint(int64_t batches_per_epoch);

  // Constant after construction.
  torch::nn::Module& module_;
  const LossFn loss_fn_;
  const LogitsFn logits_fn_;
  const TrainerOptions options_;
  const std::unique_ptr<torch::optim::AdamW> optimizer_;
  const std::vector<torch::Tensor> parameters_;  // trainable parameters, in optimizer order

  bool used_ = false;
  // Step being run, for error messages.
  int64_t current_step_ = 0;
};

// Cross-entropy of `logits_fn(batch.inputs)` against `batch.targets` with label smoothing; the
// loss output has one term, "ce".
LossFn ClassificationLoss(LogitsFn logits_fn, double label_smoothing);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_TRAIN_TRAINER_H_
