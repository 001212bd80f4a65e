#include "worker/pipeline/data/synthetic_dataset.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/pipeline/data/rng.h"

namespace compress::pipeline {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Class patterns in [-1, 1], laid out [class][channel][y][x].
std::vector<float> MakePrototypes(const SyntheticSpec& spec) {
  const int s = spec.image_size;
  const int64_t plane = int64_t{s} * s;
  std::vector<float> protos(static_cast<size_t>(spec.num_classes * spec.channels * plane));
  SplitMix64 rng(SplitMix64::Mix({spec.seed, 0x70726f746fULL}));
  for (int64_t c = 0; c < spec.num_classes; ++c) {
    // Orientation spread evenly over the classes (plus jitter) keeps classes apart.
    const double angle = kPi * (c + rng.Uniform(0.0, 0.5)) / spec.num_classes;
    const double freq = rng.Uniform(1.5, 4.0) * 2.0 * kPi / s;
    const double blob_y = rng.Uniform(0.25, 0.75) * s;
    const double blob_x = rng.Uniform(0.25, 0.75) * s;
    const double blob_r = rng.Uniform(0.12, 0.25) * s;
    for (int ch = 0; ch < spec.channels; ++ch) {
      const double phase = rng.Uniform(0.0, 2.0 * kPi);
      const double grating_gain = rng.Uniform(0.4, 0.8);
      const double blob_gain = rng.Uniform(-0.6, 0.6);
      float* out = protos.data() + (c * spec.channels + ch) * plane;
      for (int y = 0; y < s; ++y) {
        for (int x = 0; x < s; ++x) {
          const double t = (x * std::cos(angle) + y * std::sin(angle)) * freq + phase;
          const double dy = y - blob_y;
          const double dx = x - blob_x;
          const double blob = std::exp(-(dx * dx + dy * dy) / (2.0 * blob_r * blob_r));
          out[y * s + x] = static_cast<float>(
              std::clamp(grating_gain * std::sin(t) + blob_gain * blob, -1.0, 1.0));
        }
      }
    }
  }
  return protos;
}

RawImages MakeSplit(const SyntheticSpec& spec, const std::vector<float>& protos, int64_t count,
                    uint64_t stream) {
  const int s = spec.image_size;
  const int64_t plane = int64_t{s} * s;
  RawImages out;
  out.count = count;
  out.channels = spec.channels;
  out.height = s;
  out.width = s;
  out.pixels.resize(static_cast<size_t>(count * spec.channels * plane));
  out.labels.resize(count);
  SplitMix64 rng(SplitMix64::Mix({spec.seed, stream}));
  const int max_shift = std::max(1, s / 10);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t label = i % spec.num_classes;
    out.labels[i] = label;
    const int shift_y = static_cast<int>(rng.Below(2 * max_shift + 1)) - max_shift;
    const int shift_x = static_cast<int>(rng.Below(2 * max_shift + 1)) - max_shift;
    const double contrast = rng.Uniform(0.7, 1.3);
    const double brightness = rng.Uniform(-20.0, 20.0);
    for (int ch = 0; ch < spec.channels; ++ch) {
      const float* proto = protos.data() + (label * spec.channels + ch) * plane;
      uint8_t* dst = out.pixels.data() + (i * spec.channels + ch) * plane;
      for (int y = 0; y < s; ++y) {
        const int sy = ((y + shift_y) % s + s) % s;
        for (int x = 0; x < s; ++x) {
          const int sx = ((x + shift_x) % s + s) % s;
          const double v = 128.0 + brightness + 90.0 * contrast * proto[sy * s + sx] +
                           spec.noise_stddev * rng.Normal();
          dst[y * s + x] = static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
        }
      }
    }
  }
  return out;
}

}  // namespace

RawDataset MakeSyntheticDataset(const SyntheticSpec& spec) {
  RawDataset data;
  data.num_classes = spec.num_classes;
  for (int64_t c = 0; c < spec.num_classes; ++c) {
    data.class_names.push_back(absl::StrCat("class_", c));
  }
  const std::vector<float> protos = MakePrototypes(spec);
  data.train = MakeSplit(spec, protos, spec.train_size, /*stream=*/1);
  data.val = MakeSplit(spec, protos, spec.val_size, /*stream=*/2);
  return data;
}

}  // namespace compress::pipeline
