// Cuts a weight-shared Swin down to the kept units of its dependency graph's groups
// (shared_swin_graph.h): the result is a new SharedSwin built from the pruned SharingConfig,
// with the kept slices of every tensor copied in (tensor_slicing.h). It saves with
// SaveSharedModel and loads back with LoadSharedModel as it is.
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_SHARED_MODEL_SLICER_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_SHARED_MODEL_SLICER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipeline/prune/dependency_graph.h"
#include "worker/pipeline/prune/tensor_slicing.h"
#include "worker/pipeline/share/shared_swin.h"
#include "worker/pipeline/share/sharing_config.h"

namespace compress::pipeline {

struct SlicedSharedModel {
  SharingConfig config;
  SharedSwin model{nullptr};  // On the CPU, in the source model's training mode.
};

// `graph` and `groups` describe `model` (BuildSharedSwinGraph of its config, then Groups());
// kept_units[g] lists the units of group g to keep, ascending, at least one. Tensors outside
// the graph are copied whole. INVALID_ARGUMENT for a bad unit list; INTERNAL when the graph
// does not describe the model or LibTorch fails.
absl::StatusOr<SlicedSharedModel> SliceSharedSwinModel(
    const SharedSwin& model, const DependencyGraph& graph, const std::vector<Group>& groups,
    const std::vector<std::vector<int64_t>>& kept_units);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_SHARED_MODEL_SLICER_H_
