// The teacher phase: trains a classifier on a decoded data set, from scratch or fine-tuning the
// weights it already holds, when a job brings no trained teacher. Also the adapter that lets the
// Trainer read the data module's BatchLoader.
#ifndef COMPRESS_WORKER_PIPELINE_TRAIN_TEACHER_H_
#define COMPRESS_WORKER_PIPELINE_TRAIN_TEACHER_H_

#include <torch/torch.h>

#include <atomic>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/pipeline/data/batch_loader.h"
#include "worker/pipeline/data/dataset.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/train/batch_source.h"
#include "worker/pipeline/train/trainer.h"
#include "worker/pipeline/train/training_types.h"

namespace compress::pipeline {

// A BatchSource over a BatchLoader. StartEpoch(e, k) starts epoch e of the loader and discards
// its first k batches (the loader's batches depend only on (seed, e, index), so the (k+1)-th
// batch is the one an uninterrupted epoch would have produced). With a `cancel` flag, Next() and
// StartEpoch() answer CANCELLED once it is set (from any thread), so that every loop over the
// source (evaluation, the teacher-logit pass, pruning's calibration) stops within a batch. Not
// thread-safe otherwise.
class LoaderBatchSource : public BatchSource {
 public:
  explicit LoaderBatchSource(std::unique_ptr<BatchLoader> loader,
                             const std::atomic<bool>* cancel = nullptr);

  int64_t BatchesPerEpoch() const override;
  absl::Status StartEpoch(int64_t epoch, int64_t first_batch) override;
  absl::StatusOr<std::optional<TrainBatch>> Next() override;

 private:
  absl::Status CheckCancelled() const;

  const std::unique_ptr<BatchLoader> loader_;
  const std::atomic<bool>* const cancel_;
};

// Options of the teacher phase.
struct TeacherOptions {
  // The training loop: schedule, optimizer, evaluation, checkpoints, device, threads.
  TrainerOptions trainer;
  // Training batches: size, shuffling, augmentation, normalisation, prefetch threads. The
  // validation split is read with loader.ForEval().
  BatchLoaderOptions loader;
};

// Trains `model` (already on options.trainer.device, freshly initialised or holding weights to
// fine-tune) on splits.train_* with cross-entropy and options.trainer.label_smoothing, and
// evaluates on splits.val_* (skipped when the validation split is empty). INVALID_ARGUMENT when
// the splits do not fit the model (channels, size, classes); otherwise the Trainer's statuses.
absl::StatusOr<TrainResult> TrainClassifier(SwinTransformer& model, const DatasetSplits& splits,
                                            const TeacherOptions& options,
                                            const TrainerCallbacks& callbacks = {});

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_TRAIN_TEACHER_H_
