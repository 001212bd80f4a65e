#include "worker/pipeline/train/teacher.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace compress::pipeline {

LoaderBatchSource::LoaderBatchSource(std::unique_ptr<BatchLoader> loader,
                                     const std::atomic<bool>* cancel)
    : loader_(std::move(loader)), cancel_(cancel) {}

absl::Status LoaderBatchSource::CheckCancelled() const {
  if (cancel_ != nullptr && cancel_->load()) {
    return absl::CancelledError("cancelled while reading the data set's batches");
  }
  return absl::OkStatus();
}

int64_t LoaderBatchSource::BatchesPerEpoch() const { return loader_->BatchesPerEpoch(); }

absl::Status LoaderBatchSource::StartEpoch(int64_t epoch, int64_t first_batch) {
  if (epoch < 0 || first_batch < 0 || first_batch > BatchesPerEpoch()) {
    return absl::OutOfRangeError(absl::StrCat("LoaderBatchSource: position (epoch ", epoch,
                                              ", batch ", first_batch, ") is out of range; ",
                                              BatchesPerEpoch(), " batches per epoch"));
  }
  if (absl::Status cancelled = CheckCancelled(); !cancelled.ok()) return cancelled;
  loader_->StartEpoch(epoch);
  for (int64_t i = 0; i < first_batch; ++i) {
    if (absl::Status cancelled = CheckCancelled(); !cancelled.ok()) return cancelled;
    absl::StatusOr<ImageBatch> skipped = loader_->Next();
    if (!skipped.ok()) return skipped.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<TrainBatch>> LoaderBatchSource::Next() {
  if (absl::Status cancelled = CheckCancelled(); !cancelled.ok()) return cancelled;
  absl::StatusOr<ImageBatch> batch = loader_->Next();
  if (absl::IsOutOfRange(batch.status())) return std::optional<TrainBatch>();
  if (!batch.ok()) return batch.status();
  return std::optional<TrainBatch>(TrainBatch{std::move(batch->images), std::move(batch->labels),
                                                std::move(batch->sample_ids)});
}

absl::StatusOr<TrainResult> TrainClassifier(SwinTransformer& model, const DatasetSplits& splits,
                                            const TeacherOptions& options,
                                            const TrainerCallbacks& callbacks) {
  const SwinConfig& config = model->config();
  if (splits.channels != config.in_channels || splits.height != config.image_size ||
      splits.width != config.image_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("TrainClassifier: the data set has ", splits.channels, "x", splits.height, "x",
                     splits.width, " images but the model expects ", config.in_channels, "x",
                     config.image_size, "x", config.image_size));
  }
  if (splits.num_classes > config.num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("TrainClassifier: the data set has ", splits.num_classes,
                     " classes but the model's head has ", config.num_classes, " outputs"));
  }
  absl::StatusOr<std::unique_ptr<BatchLoader>> train_loader =
      BatchLoader::Create(splits.train_images, splits.train_labels, options.loader);
  if (!train_loader.ok()) return train_loader.status();
  LoaderBatchSource train(*std::move(train_loader), callbacks.cancel_flag);

  std::unique_ptr<LoaderBatchSource> validation;
  if (splits.val_images.defined() && splits.val_images.size(0) > 0) {
    absl::StatusOr<std::unique_ptr<BatchLoader>> val_loader =
        BatchLoader::Create(splits.val_images, splits.val_labels, options.loader.ForEval());
    if (!val_loader.ok()) return val_loader.status();
    validation = std::make_unique<LoaderBatchSource>(*std::move(val_loader), callbacks.cancel_flag);
  }

  LogitsFn logits = [model](const torch::Tensor& images) mutable { return model->forward(images); };
  absl::StatusOr<std::unique_ptr<Trainer>> trainer = Trainer::Create(
      *model, ClassificationLoss(logits, options.trainer.label_smoothing), logits, options.trainer);
  if (!trainer.ok()) return trainer.status();
  return (*trainer)->Train(train, validation.get(), callbacks);
}

}  // namespace compress::pipeline
