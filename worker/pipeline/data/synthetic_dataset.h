// Synthetic, learnable image classification data for tests and smoke runs: every class has its
// own pattern (oriented sinusoidal gratings and a bright blob, per channel), and each example is
// its class pattern randomly shifted, rescaled in contrast and brightness, plus Gaussian noise.
// Fully determined by the seed.
#ifndef COMPRESS_WORKER_PIPELINE_DATA_SYNTHETIC_DATASET_H_
#define COMPRESS_WORKER_PIPELINE_DATA_SYNTHETIC_DATASET_H_

#include <cstdint>

#include "worker/pipeline/data/raw_dataset.h"

namespace compress::pipeline {

struct SyntheticSpec {
  int64_t num_classes = 10;  // > 0
  int channels = 3;          // 1 or 3
  int image_size = 32;       // height = width, > 0
  int64_t train_size = 2000;
  int64_t val_size = 500;
  uint64_t seed = 0;
  double noise_stddev = 24.0;  // Gaussian noise, in pixel levels (0..255)
};

// Labels are balanced: example i has label i % num_classes.
RawDataset MakeSyntheticDataset(const SyntheticSpec& spec);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_SYNTHETIC_DATASET_H_
