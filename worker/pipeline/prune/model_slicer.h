// Cuts a Swin Transformer down to the kept units of its dependency graph's groups: the result
// is a new model of the same class, built from the pruned SwinConfig, with the kept slices of
// every tensor copied in. It saves with SaveModel and loads back with LoadModel as it is.
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_MODEL_SLICER_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_MODEL_SLICER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/model/swin_config.h"
#include "worker/pipeline/prune/dependency_graph.h"
#include "worker/pipeline/prune/tensor_slicing.h"

namespace compress::pipeline {

struct SlicedModel {
  SwinConfig config;
  SwinTransformer model{nullptr};  // On the CPU, in the source model's training mode.
};

// `graph` and `groups` describe `model` (BuildSwinGraph of its config, then Groups());
// kept_units[g] lists the units of group g to keep, ascending, at least one. Every tensor
// keeps, along each pruned dimension, the indices of its kept units in ascending order (so
// [Q|K|V] stays head-major and a merging's [x0|x1|x2|x3] stays interleaved); tensors outside
// the graph are copied whole. INVALID_ARGUMENT for a bad unit list; INTERNAL when the graph
// does not describe the model or LibTorch fails.
absl::StatusOr<SlicedModel> SliceSwinModel(const SwinTransformer& model,
                                           const DependencyGraph& graph,
                                           const std::vector<Group>& groups,
                                           const std::vector<std::vector<int64_t>>& kept_units);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_MODEL_SLICER_H_
