// The share stage: turns a trained Swin into a weight-shared one (ShareFromTeacher) and trains
// it with weight distillation from the original (WeightDistillationLoss) through the Trainer.
// The executor calls RunShareStage; see docs/share.md.
#ifndef COMPRESS_WORKER_PIPELINE_SHARE_SHARE_STAGE_H_
#define COMPRESS_WORKER_PIPELINE_SHARE_SHARE_STAGE_H_

#include "absl/status/statusor.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/share/distill_losses.h"
#include "worker/pipeline/share/share_from_teacher.h"
#include "worker/pipeline/share/shared_cost.h"
#include "worker/pipeline/share/shared_swin.h"
#include "worker/pipeline/train/batch_source.h"
#include "worker/pipeline/train/training_types.h"

namespace compress::pipeline {

struct ShareStageOptions {
  // Grouping, transforms and initialisation of the shared model.
  SharingOptions sharing;
  // Loss weights of the weight distillation.
  WeightDistillOptions distill;
  // The training phase (schedule, optimizer, device, checkpoints); the teacher and the shared
  // model are moved to trainer.device.
  TrainerOptions trainer;
};

struct ShareStageResult {
  SharedSwin model{nullptr};  // Trained, on trainer.device, in eval mode.
  SharedCost cost;            // Parameters and operations, shared and unshared.
  TrainResult train;          // What the Trainer reports (final_eval when validation given).
};

// Builds the shared model from `teacher`, trains it on `train` with the weight-distillation loss
// and evaluates it on `validation` (may be null). The teacher is put in eval mode on the
// trainer's device and is not changed otherwise. INVALID_ARGUMENT for options that do not fit
// the teacher; otherwise the Trainer's statuses (CANCELLED, RESOURCE_EXHAUSTED, ...).
absl::StatusOr<ShareStageResult> RunShareStage(SwinTransformer teacher, BatchSource& train,
                                               BatchSource* validation,
                                               const ShareStageOptions& options,
                                               const TrainerCallbacks& callbacks = {});

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_SHARE_SHARE_STAGE_H_
