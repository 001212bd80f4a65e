#include "worker/pipeline/prune/model_slicer.h"

#include <utility>

#include "worker/pipeline/prune/swin_graph.h"

namespace compress::pipeline {

absl::StatusOr<SlicedModel> SliceSwinModel(const SwinTransformer& model,
                                           const DependencyGraph& graph,
                                           const std::vector<Group>& groups,
                                           const std::vector<std::vector<int64_t>>& kept_units) {
  absl::StatusOr<KeptIndices> kept = KeptIndicesOf(graph, groups, kept_units);
  if (!kept.ok()) return kept.status();
  absl::StatusOr<SwinConfig> config =
      PrunedSwinConfig(model->config(), groups, KeptCounts(kept_units));
  if (!config.ok()) return config.status();
  absl::StatusOr<SwinTransformer> pruned = CreateSwinTransformer(*config);
  if (!pruned.ok()) return pruned.status();
  absl::Status copied = CopyKeptSlices(model->StateDict(), (*pruned)->StateDict(), *kept, "model");
  if (!copied.ok()) return copied;
  absl::Status scaled =
      KeepAttentionScale(graph, groups, KeptCounts(kept_units), (*pruned)->StateDict());
  if (!scaled.ok()) return scaled;
  (*pruned)->train(model->is_training());
  SlicedModel result;
  result.config = std::move(*config);
  result.model = std::move(*pruned);
  return result;
}

}  // namespace compress::pipeline
