#include "worker/pipeline/share/shared_cost.h"

namespace compress::pipeline {

absl::StatusOr<SharedCost> AnalyzeSharedCost(const SharingConfig& config) {
  if (absl::Status status = config.Validate(); !status.ok()) return status;
  const SwinConfig& base = config.base;
  absl::StatusOr<SwinCost> base_cost = AnalyzeSwinCost(base);
  if (!base_cost.ok()) return base_cost.status();

  SharedCost cost;
  cost.base_params = base_cost->params;
  cost.base_total = base_cost->total;
  cost.params = base_cost->params;
  const int64_t kernel_area = int64_t{kMlpTransformKernel} * kMlpTransformKernel;
  for (int s = 0; s < static_cast<int>(base.stages.size()); ++s) {
    const int64_t dim = base.stages[s].dim;
    const int64_t side = base.stage_resolution(s);
    const int64_t tokens = side * side;
    const int64_t window = base.stage_window(s);
    const int64_t window_tokens = window * window;
    for (int g = 0; g < config.num_groups(s); ++g) {
      const int first = config.group_first_block(s, g);
      for (int p = 0; p < config.group_sizes[s][g]; ++p) {
        const int block = first + p;
        if (p > 0) cost.params -= BlockParams(base, s, block) - 4 * dim;  // all but the norms
        const int64_t heads = base.stages[s].blocks[block].num_heads;
        if (config.attention_transform) {
          cost.transform_params += 2 * (heads * heads + heads);
          cost.transforms.macs += 2 * tokens * window_tokens * heads * heads;
        }
        if (config.mlp_transform) {
          cost.transform_params += 2 * dim + dim * kernel_area + dim;
          cost.transforms.macs += tokens * dim * kernel_area;
          cost.transforms.elementwise += 2 * tokens * dim;
        }
      }
    }
  }
  cost.params += cost.transform_params;
  cost.total = base_cost->total;
  cost.total += cost.transforms;
  return cost;
}

}  // namespace compress::pipeline
