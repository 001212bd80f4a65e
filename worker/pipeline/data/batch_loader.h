// BatchLoader: epoch-based mini-batches over decoded uint8 images, with augmentation (random
// resized crop, horizontal flip) and per-channel normalisation as batched tensor ops, prepared
// ahead of the consumer by background threads.
#ifndef COMPRESS_WORKER_PIPELINE_DATA_BATCH_LOADER_H_
#define COMPRESS_WORKER_PIPELINE_DATA_BATCH_LOADER_H_

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace compress::pipeline {

struct BatchLoaderOptions {
  // Examples per batch (> 0).
  int64_t batch_size = 128;
  // Visit the examples in a new random order every epoch (derived from seed and epoch).
  bool shuffle = true;
  // Seed of the order and of the augmentation; equal seeds give equal batches.
  uint64_t seed = 0;
  // Drop the last batch when it is smaller than batch_size.
  bool drop_last = false;
  // Random resized crop (Szegedy et al., "Going deeper with convolutions", 2015; torchvision's
  // RandomResizedCrop): a crop of a random area fraction in [crop_scale_min, crop_scale_max] and
  // aspect ratio in [crop_ratio_min, crop_ratio_max] (log-uniform), resized back to the input
  // size bilinearly.
  bool random_resized_crop = false;
  double crop_scale_min = 0.35;
  double crop_scale_max = 1.0;
  double crop_ratio_min = 3.0 / 4.0;
  double crop_ratio_max = 4.0 / 3.0;
  // Mirror each example left-right with probability 1/2. Off by default: it suits natural
  // images, less so digits or clothing with a canonical orientation.
  bool horizontal_flip = false;
  // Per-channel normalisation of pixels scaled to [0, 1]: (x / 255 - mean) / std. Empty = only
  // the scaling to [0, 1]. One value applies to every channel; otherwise one per channel.
  std::vector<double> mean;
  std::vector<double> std;
  // Background threads preparing batches; 0 = prepare each batch in Next() on the caller's
  // thread. Each worker runs LibTorch ops single-threaded so as not to compete with the trainer.
  int num_workers = 2;
  // How many batches may be prepared ahead of the consumer (>= 1).
  int prefetch_depth = 4;

  // The same options for evaluation: fixed order, no augmentation, same normalisation.
  BatchLoaderOptions ForEval() const;
};

// One mini-batch: float images [B, C, H, W] (normalised) and int64 labels [B].
struct ImageBatch {
  torch::Tensor images;
  torch::Tensor labels;
  // Indices of the batch's examples in the loader's split, int64 [N].
  torch::Tensor sample_ids;
  int64_t epoch = 0;
  int64_t index = 0;  // position of the batch within its epoch
};

// Thread-safety: the public methods are meant for one consumer thread; internally, workers and
// the consumer share the epoch state under mu_. Invariants: next_consume_ <= next_claim_ <=
// num_batches_; ready_ holds only batches of the current generation with index >=
// next_consume_. Batch `i` of epoch `e` depends only on (seed, e, i), never on which thread
// prepared it or when, so results are identical for any num_workers.
class BatchLoader {
 public:
  // `images` uint8 [N, C, H, W], `labels` int64 [N], both on the CPU; held (not copied).
  // INVALID_ARGUMENT for bad shapes, dtypes or options.
  static absl::StatusOr<std::unique_ptr<BatchLoader>> Create(torch::Tensor images,
                                                             torch::Tensor labels,
                                                             const BatchLoaderOptions& options);
  // Stops and joins the workers; safe at any point, including while batches are in flight.
  ~BatchLoader();

  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t num_examples() const { return num_examples_; }
  int64_t BatchesPerEpoch() const { return num_batches_; }

  // Begins epoch `epoch` (any number; it seeds the order and augmentation). Batches of an
  // epoch that was not fully consumed are discarded.
  void StartEpoch(int64_t epoch);

  // The next batch of the current epoch, waiting for a worker if needed. OUT_OF_RANGE after the
  // last batch of the epoch; FAILED_PRECONDITION before StartEpoch; INTERNAL when preparing the
  // batch failed in LibTorch.
  absl::StatusOr<ImageBatch> Next();

 private:
  BatchLoader(torch::Tensor images, torch::Tensor labels, const BatchLoaderOptions& options);

  // Prepares batch `index` of `epoch` given the epoch's example order. Thread-safe (reads only
  // constant members).
  absl::StatusOr<ImageBatch> MakeBatch(int64_t epoch, int64_t index, const torch::Tensor& order) const;
  torch::Tensor MakeOrder(int64_t epoch) const;
  void WorkerLoop();
  bool WorkAvailableOrStopLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool NextReadyLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const torch::Tensor images_;
  const torch::Tensor labels_;
  const BatchLoaderOptions options_;
  const int64_t num_examples_;
  const int64_t num_batches_;
  torch::Tensor scale_;  // [1, C, 1, 1] multiplier of the normalisation
  torch::Tensor shift_;  // [1, C, 1, 1] offset of the normalisation
  std::vector<std::thread> workers_;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  // Incremented by StartEpoch; a worker's result for an older generation is dropped.
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  torch::Tensor order_ ABSL_GUARDED_BY(mu_);
  int64_t next_claim_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_consume_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<int64_t, absl::StatusOr<ImageBatch>> ready_ ABSL_GUARDED_BY(mu_);
};

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_BATCH_LOADER_H_
