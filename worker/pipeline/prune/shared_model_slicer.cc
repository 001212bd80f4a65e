#include "worker/pipeline/prune/shared_model_slicer.h"

#include <utility>

#include "worker/pipeline/prune/shared_swin_graph.h"

namespace compress::pipeline {

absl::StatusOr<SlicedSharedModel> SliceSharedSwinModel(
    const SharedSwin& model, const DependencyGraph& graph, const std::vector<Group>& groups,
    const std::vector<std::vector<int64_t>>& kept_units) {
  absl::StatusOr<KeptIndices> kept = KeptIndicesOf(graph, groups, kept_units);
  if (!kept.ok()) return kept.status();
  absl::StatusOr<SharingConfig> config =
      PrunedSharingConfig(model->config(), groups, KeptCounts(kept_units));
  if (!config.ok()) return config.status();
  absl::StatusOr<SharedSwin> pruned = CreateSharedSwin(*config);
  if (!pruned.ok()) return pruned.status();
  absl::Status copied =
      CopyKeptSlices(model->StateDict(), (*pruned)->StateDict(), *kept, "shared model");
  if (!copied.ok()) return copied;
  absl::Status scaled =
      KeepAttentionScale(graph, groups, KeptCounts(kept_units), (*pruned)->StateDict());
  if (!scaled.ok()) return scaled;
  (*pruned)->train(model->is_training());
  SlicedSharedModel result;
  result.config = std::move(*config);
  result.model = std::move(*pruned);
  return result;
}

}  // namespace compress::pipeline
