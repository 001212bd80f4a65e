// Command-line description of a uniform Swin shared by the training benchmarks: a preset and
// optional overrides of its sizes. Flags are defined in the programs' .cc files.
#ifndef COMPRESS_BENCH_TRAIN_SWIN_ARCH_FLAGS_H_
#define COMPRESS_BENCH_TRAIN_SWIN_ARCH_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "worker/pipeline/model/swin_config.h"

namespace compress::bench {

// Sizes of a uniform Swin; 0 or empty keeps the value of the 28x28 grey Fashion-MNIST base.
struct ArchOverrides {
  int patch_size = 0;
  int window_size = 0;
  int embed_dim = 0;
  std::string depths;     // "2,2"
  std::string num_heads;  // "2,4"
  double mlp_ratio = 0.0;
  double drop_path_rate = -1.0;
};

inline absl::StatusOr<std::vector<int>> ParseInts(const std::string& text) {
  std::vector<int> values;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int value = 0;
    if (!absl::SimpleAtoi(part, &value)) {
      return absl::InvalidArgumentError("not a comma-separated integer list: " + text);
    }
    values.push_back(value);
  }
  return values;
}

// swin_micro's sizes (28x28x1, 10 classes) with the given overrides.
inline absl::StatusOr<pipeline::SwinConfig> MakeArch(const ArchOverrides& o) {
  pipeline::UniformSwinOptions options;
  options.image_size = 28;
  options.in_channels = 1;
  options.num_classes = 10;
  options.patch_size = 2;
  options.window_size = 7;
  options.embed_dim = 48;
  options.depths = {2, 2};
  options.num_heads = {2, 4};
  options.drop_path_rate = 0.05;
  if (o.patch_size > 0) options.patch_size = o.patch_size;
  if (o.window_size > 0) options.window_size = o.window_size;
  if (o.embed_dim > 0) options.embed_dim = o.embed_dim;
  if (o.mlp_ratio > 0.0) options.mlp_ratio = o.mlp_ratio;
  if (o.drop_path_rate >= 0.0) options.drop_path_rate = o.drop_path_rate;
  if (!o.depths.empty()) {
    absl::StatusOr<std::vector<int>> depths = ParseInts(o.depths);
    if (!depths.ok()) return depths.status();
    options.depths = *depths;
  }
  if (!o.num_heads.empty()) {
    absl::StatusOr<std::vector<int>> heads = ParseInts(o.num_heads);
    if (!heads.ok()) return heads.status();
    options.num_heads = *heads;
  }
  return pipeline::MakeUniformSwinConfig(options);
}

}  // namespace compress::bench

#endif  // COMPRESS_BENCH_TRAIN_SWIN_ARCH_FLAGS_H_
