// Value types shared by the training engine: the trainer's options, one batch, what a loss
// function returns, the metric points sent to the caller, and the result of a phase.
#ifndef COMPRESS_WORKER_PIPELINE_TRAIN_TRAINING_TYPES_H_
#define COMPRESS_WORKER_PIPELINE_TRAIN_TRAINING_TYPES_H_

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace compress::pipeline {

// How one training phase runs. The phase length is `epochs` full passes over the training data,
// cut short at `max_steps` optimizer steps when that is positive; at least one of them must be
// positive.
struct TrainerOptions {
  // Passes over the training data; 0 means "bounded by max_steps only".
  int64_t epochs = 1;
  // Upper bound on optimizer steps for the phase; 0 means "epochs * batches per epoch".
  int64_t max_steps = 0;

  // Peak learning rate, reached at the end of the warm-up.
  double lr = 1e-3;
  // Learning rate at the end of the cosine decay.
  double min_lr = 1e-5;
  // Linear warm-up length in optimizer steps; added to warmup_epochs * batches per epoch.
  int64_t warmup_steps = 0;
  // Linear warm-up length in epochs (fractional allowed).
  double warmup_epochs = 0.0;

  // AdamW decoupled weight decay, applied only to parameters that are not norms, biases or
  // position tables (see no_decay_name_patterns).
  double weight_decay = 0.05;
  // AdamW first and second moment decay rates.
  double beta1 = 0.9;
  double beta2 = 0.999;
  // AdamW epsilon.
  double eps = 1e-8;
  // Parameter name fragments that exclude a parameter from weight decay, in addition to every
  // bias, every parameter of a module whose name contains "norm", and every 0-d or 1-d tensor.
  std::vector<std::string> no_decay_name_patterns = {"relative_position_bias_table",
                                                     "absolute_pos_embed", "pos_embed"};

  // Global L2 norm the gradients are clipped to before each step; <= 0 disables clipping.
  double clip_grad_norm = 1.0;
  // Label smoothing for the classification loss built by ClassificationLoss (Szegedy et al.,
  // "Rethinking the Inception Architecture", 2016).
  double label_smoothing = 0.0;

  // Evaluate on the validation split every N epochs (and always at the end of the phase when a
  // validation split is given); 0 means only at the end.
  int64_t eval_every_epochs = 1;
  // Send a training metric point every N optimizer steps (and on the last step).
  int64_t log_every_steps = 50;

  // Write a resumable checkpoint every N optimizer steps; 0 disables periodic checkpoints.
  int64_t checkpoint_every_steps = 0;
  // Write a resumable checkpoint when the phase ends (normally or by cancellation).
  bool checkpoint_at_end = true;
  // Directory of the resumable checkpoint; empty disables checkpoints and resume.
  std::string checkpoint_dir;
  // Continue from the checkpoint in checkpoint_dir when one is there.
  bool resume = true;

  // Device the model and batches live on; the model must already be there.
  torch::Device device = torch::kCPU;
  // Check the loss for NaN or infinity after every step, which waits for the step to finish on
  // the device. Unset: yes on the CPU (where it costs nothing), no on CUDA, where the step loop
  // then runs without waiting on the device and the interval's losses are checked (one wait) at
  // every metric point, before every checkpoint and at the end of the phase, so nothing is
  // reported or saved from a diverged model.
  std::optional<bool> check_loss_every_step;
  // Run the loss function under bf16 autocast (CUDA only; ignored on CPU).
  bool bf16_autocast = true;
  // Allow TF32 matmuls and convolutions (CUDA only; ignored on CPU).
  bool allow_tf32 = true;
  // Intra-op CPU threads, set with torch::set_num_threads; 0 leaves the current setting.
  int num_threads = 0;
  // Seed of the default CPU generator (drop path, dropout) when the phase starts fresh; < 0
  // leaves the generator as it is.
  int64_t seed = 0;
};

// One batch: inputs (float, N×C×H×W for images) and integer class targets (N).
struct TrainBatch {
  torch::Tensor inputs;
  torch::Tensor targets;
  // Indices of the examples in their split, int64 [N] on the CPU, when the source knows them
  // (undefined otherwise); they key precomputed per-example values such as teacher logits.
  torch::Tensor sample_ids;
};

// What a loss function returns for one batch.
struct LossOutput {
  // Scalar loss that is back-propagated.
  torch::Tensor loss;
  // Named parts of the loss for reporting (scalars; detached by the trainer).
  std::vector<std::pair<std::string, torch::Tensor>> terms;
};

// Loss of one batch: runs the model's forward pass and returns the loss. Called in training mode
// with gradients on, under autocast when enabled.
using LossFn = std::function<LossOutput(const TrainBatch& batch)>;

// Logits (N×classes) of a batch of inputs; used for evaluation.
using LogitsFn = std::function<torch::Tensor(const torch::Tensor& inputs)>;

// Evaluation metrics over a whole split.
struct EvalMetrics {
  // Fraction of samples whose target is the arg-max class.
  double top1 = 0.0;
  // Fraction of samples whose target is among the 5 highest logits (all classes when fewer).
  double top5 = 0.0;
  // Mean cross-entropy (no label smoothing).
  double loss = 0.0;
  // Samples evaluated.
  int64_t samples = 0;
};

// One metric event sent to the caller.
struct MetricPoint {
  enum class Kind { kTrain, kEval };
  Kind kind = Kind::kTrain;
  // Optimizer steps completed in the phase.
  int64_t step = 0;
  // Fractional epochs completed (step / batches per epoch).
  double epoch = 0.0;
  // kTrain: mean loss over the steps since the last point; kEval: validation loss.
  double loss = 0.0;
  // kTrain: mean of each named loss term since the last point.
  std::vector<std::pair<std::string, double>> terms;
  // kTrain: learning rate of the last step.
  double lr = 0.0;
  // kTrain: gradient norm before clipping at the last step.
  double grad_norm = 0.0;
  // kTrain: training images per second since the last point.
  double images_per_second = 0.0;
  // Bytes allocated on the CUDA device (kTrain, CUDA only).
  std::optional<int64_t> device_memory_bytes;
  // Peak bytes allocated on the CUDA device during the phase (kTrain, CUDA only).
  std::optional<int64_t> device_peak_memory_bytes;
  // kEval: validation metrics.
  std::optional<EvalMetrics> eval;
};

// Hooks into a running phase. All are optional.
struct TrainerCallbacks {
  // Receives every metric point, on the training thread.
  std::function<void(const MetricPoint&)> on_metric;
  // Set to true (from any thread) to stop the phase between steps with CANCELLED.
  const std::atomic<bool>* cancel_flag = nullptr;
  // Polled between steps; returning true stops the phase with CANCELLED.
  std::function<bool()> should_cancel;
};

// The outcome of a finished phase.
struct TrainResult {
  // Optimizer steps completed, counting those before a resume.
  int64_t steps = 0;
  // Step the phase resumed from (0 when it started fresh).
  int64_t resumed_from_step = 0;
  // Fractional epochs completed.
  double epochs = 0.0;
  // Metrics of the final evaluation, when a validation split was given.
  std::optional<EvalMetrics> final_eval;
  // Wall time of this run of the phase, evaluation included, in seconds.
  double wall_seconds = 0.0;
  // Seconds spent in training steps only, over every run of the phase (a resumed phase adds
  // those its checkpoint recorded).
  double train_seconds = 0.0;
  // Training images per second over train_seconds: the phase's whole training, also when this
  // run resumed after the last step and trained nothing.
  double images_per_second = 0.0;
  // Path of the last resumable checkpoint written, if any.
  std::string checkpoint_path;
};

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_TRAIN_TRAINING_TYPES_H_
