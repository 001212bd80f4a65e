#include "worker/pipeline/share/share_stage.h"

#include <memory>
#include <utility>

#include "worker/pipeline/model/torch_error.h"
#include "worker/pipeline/train/trainer.h"

namespace compress::pipeline {

absl::StatusOr<ShareStageResult> RunShareStage(SwinTransformer teacher, BatchSource& train,
                                               BatchSource* validation,
                                               const ShareStageOptions& options,
                                               const TrainerCallbacks& callbacks) {
  absl::StatusOr<SharedSwin> model = ShareFromTeacher(teacher, options.sharing);
  if (!model.ok()) return model.status();
  const SharingConfig& config = (*model)->config();
  if (absl::Status status =
          ValidateWeightDistillOptions(options.distill, config.base, teacher->config());
      !status.ok()) {
    return status;
  }
  absl::StatusOr<SharedCost> cost = AnalyzeSharedCost(config);
  if (!cost.ok()) return cost.status();
  try {
    teacher->to(options.trainer.device);
    teacher->eval();
    (*model)->to(options.trainer.device);
    (*model)->train();
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, "moving the share stage's models to the device");
  }
  SharedSwin student = *model;
  LogitsFn logits_fn = [student](const torch::Tensor& inputs) mutable {
    return student->forward(inputs);
  };
  absl::StatusOr<std::unique_ptr<Trainer>> trainer =
      Trainer::Create(*student, WeightDistillationLoss(student, teacher, options.distill),
                      logits_fn, options.trainer);
  if (!trainer.ok()) return trainer.status();
  absl::StatusOr<TrainResult> trained = (*trainer)->Train(train, validation, callbacks);
  if (!trained.ok()) return trained.status();
  student->eval();
  ShareStageResult result;
  result.model = student;
  result.cost = *cost;
  result.train = *std::move(trained);
  return result;
}

}  // namespace compress::pipeline
