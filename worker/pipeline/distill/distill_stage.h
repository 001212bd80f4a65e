// The distill stage: knowledge distillation from the original teacher to the compressed
// student (shared and/or pruned), on the Trainer of the foundation:
//   loss = alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher || student)
//          + attention_weight * attention relations + hidden_weight * hidden-state relations,
// the relation terms as in the share stage (share/distill_losses.h), on matched stage-end
// blocks. When nothing but the logits needs the teacher (no relation term) and the training
// batches are not augmented, the teacher's logits can be computed once for the whole training
// split (ComputeTeacherLogits) and looked up by sample id, so the teacher does not run (or sit
// in device memory) during training. See docs/distill.md.
#ifndef COMPRESS_WORKER_PIPELINE_DISTILL_DISTILL_STAGE_H_
#define COMPRESS_WORKER_PIPELINE_DISTILL_DISTILL_STAGE_H_

#include <torch/torch.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/share/distill_losses.h"
#include "worker/pipeline/train/batch_source.h"
#include "worker/pipeline/train/training_types.h"

namespace compress::pipeline {

struct DistillStageOptions {
  // Weight of the hard-label cross-entropy; the KL term gets 1 - alpha. In [0, 1].
  double alpha = 0.5;
  // Softmax temperature of the KL term (> 0).
  double temperature = 4.0;
  // Label smoothing of the hard-label cross-entropy.
  double label_smoothing = 0.0;
  // Attention-relation loss on the last block of every stage (0 = off).
  double attention_weight = 0.0;
  // Hidden-state relation loss on every stage output (0 = off).
  double hidden_weight = 0.0;
  // Relation heads (see WeightDistillOptions::relation_heads); -1 picks 0 when every matched
  // block has the teacher's head count and 1 (all heads as one relation) otherwise.
  int relation_heads = -1;
  // Schedule, optimizer, device, checkpoints and resume.
  TrainerOptions trainer;
};

// What the stage trains: the module holding the student's parameters, its forward pass for the
// losses, its logits for evaluation, and its (unshared) architecture.
struct DistillStudent {
  torch::nn::Module* module = nullptr;  // Not owned.
  StudentForwardFn forward;
  LogitsFn logits;
  SwinConfig config;
};
DistillStudent MakeDistillStudent(SwinTransformer student);
DistillStudent MakeDistillStudent(SharedSwin student);

// The loss options the stage uses for `student` and `teacher` (relation heads resolved), or
// INVALID_ARGUMENT naming the distill.* option that does not fit.
absl::StatusOr<WeightDistillOptions> ResolveDistillLoss(const DistillStageOptions& options,
                                                        const SwinConfig& student,
                                                        const SwinConfig& teacher);

// Whether the stage can use precomputed teacher logits: no relation term needs the teacher.
bool CanCacheTeacherLogits(const DistillStageOptions& options);

// The teacher's logits for every example of a split, [num_examples, classes] float on the CPU,
// from one pass (epoch 0) over `source`, whose batches must carry sample_ids in
// [0, num_examples) and must not be augmented. The teacher runs in eval mode on `device`.
// INVALID_ARGUMENT for batches without ids or an example never seen; RESOURCE_EXHAUSTED when the
// device runs out of memory; the source's status when a batch cannot be produced.
absl::StatusOr<torch::Tensor> ComputeTeacherLogits(SwinTransformer teacher, BatchSource& source,
                                                   int64_t num_examples, torch::Device device);

// Trains `student` (already on options.trainer.device) by distillation from `teacher` (moved to
// the device, put in eval mode, not changed). `teacher_logits`, when defined, is the table of
// ComputeTeacherLogits for the training split and is used instead of running the teacher
// (requires CanCacheTeacherLogits and training batches with sample_ids). Returns the Trainer's
// result (final_eval when `validation` is given); the student is left in eval mode.
absl::StatusOr<TrainResult> RunDistillStage(const DistillStudent& student, SwinTransformer teacher,
                                            BatchSource& train, BatchSource* validation,
                                            const torch::Tensor& teacher_logits,
                                            const DistillStageOptions& options,
                                            const TrainerCallbacks& callbacks = {});

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DISTILL_DISTILL_STAGE_H_
