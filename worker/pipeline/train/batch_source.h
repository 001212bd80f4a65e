// BatchSource: the trainer's view of a data split, an epoch-ordered stream of batches that can be
// restarted at any (epoch, batch) position so that a resumed phase sees the same batches as an
// uninterrupted one. TensorBatchSource: a BatchSource over tensors held in memory.
#ifndef COMPRESS_WORKER_PIPELINE_TRAIN_BATCH_SOURCE_H_
#define COMPRESS_WORKER_PIPELINE_TRAIN_BATCH_SOURCE_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/pipeline/train/training_types.h"

namespace compress::pipeline {

// An epoch-ordered stream of batches. Not thread-safe: one trainer drives it.
//
// Contract: the batches of epoch e, in order, depend only on the source's configuration (seed)
// and e, so StartEpoch(e, k) followed by Next() yields what the (k+1)-th Next() after
// StartEpoch(e, 0) would have yielded.
class BatchSource {
 public:
  virtual ~BatchSource() = default;

  // Batches in one epoch (> 0).
  virtual int64_t BatchesPerEpoch() const = 0;

  // Positions the stream at batch `first_batch` of epoch `epoch`.
  virtual absl::Status StartEpoch(int64_t epoch, int64_t first_batch) = 0;

  // The next batch of the current epoch, or std::nullopt at its end.
  virtual absl::StatusOr<std::optional<TrainBatch>> Next() = 0;
};

// Options of TensorBatchSource.
struct TensorBatchSourceOptions {
  // Samples per batch (> 0).
  int64_t batch_size = 64;
  // Reshuffle each epoch with a permutation drawn from (seed, epoch).
  bool shuffle = true;
  // Drop the last incomplete batch of an epoch.
  bool drop_last = false;
  // Seed of the per-epoch permutation.
  uint64_t seed = 0;
  // Applied to each batch before it is returned (e.g. augmentation); may be empty. It receives a
  // generator seeded from (seed, epoch, batch index) so that its randomness is reproducible.
  std::function<TrainBatch(TrainBatch batch, torch::Generator& generator)> transform;
};

// A BatchSource over an inputs tensor (N×...) and a targets tensor (N). Batches are gathered
// with index_select; the tensors are not copied up front.
class TensorBatchSource : public BatchSource {
 public:
  // Fails with INVALID_ARGUMENT when the tensors are undefined, empty, or disagree in length,
  // or the batch size is not positive.
  static absl::StatusOr<std::unique_ptr<TensorBatchSource>> Create(
      torch::Tensor inputs, torch::Tensor targets, const TensorBatchSourceOptions& options);

  int64_t BatchesPerEpoch() const override;
  absl::Status StartEpoch(int64_t epoch, int64_t first_batch) override;
  absl::StatusOr<std::optional<TrainBatch>> Next() override;

  int64_t size() const { return inputs_.size(0); }

 private:
  TensorBatchSource(torch::Tensor inputs, torch::Tensor targets,
                    const TensorBatchSourceOptions& options);

  // Constant after construction.
  const torch::Tensor inputs_;
  const torch::Tensor targets_;
  const TensorBatchSourceOptions options_;

  // Position in the current epoch.
  int64_t epoch_ = 0;
  int64_t next_batch_ = 0;
  torch::Tensor order_;  // int64 permutation of the current epoch
};

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_TRAIN_BATCH_SOURCE_H_
