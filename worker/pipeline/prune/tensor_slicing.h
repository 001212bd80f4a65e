// The tensor-level half of slicing a model to the kept units of its dependency graph, shared by
// the plain (model_slicer.h) and the weight-shared (shared_model_slicer.h) slicers: which
// indices every pruned dimension keeps, and the copy of the kept slices of a source state into
// a freshly built, smaller model's state.
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_TENSOR_SLICING_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_TENSOR_SLICING_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/pipeline/checkpoint/safetensors.h"  // NamedTensors
#include "worker/pipeline/prune/dependency_graph.h"

namespace compress::pipeline {

// tensor name -> dim -> indices kept along it, ascending.
using KeptIndices = std::map<std::string, std::map<int, std::vector<int64_t>>>;

// The indices every node of `graph` keeps when group g keeps kept_units[g] (ascending,
// distinct, in range, at least one: INVALID_ARGUMENT otherwise).
absl::StatusOr<KeptIndices> KeptIndicesOf(const DependencyGraph& graph,
                                          const std::vector<Group>& groups,
                                          const std::vector<std::vector<int64_t>>& kept_units);

// kept_units[g].size() for every group.
std::vector<int64_t> KeptCounts(const std::vector<std::vector<int64_t>>& kept_units);

// Every unit of every group: slicing with it copies the model unchanged.
std::vector<std::vector<int64_t>> AllUnits(const std::vector<Group>& groups);

// Copies into every tensor of `target` the tensor of the same name in `source`, cut along each
// dimension `kept` names to the kept indices (in ascending order, so [Q|K|V] stays head-major
// and a merging's [x0|x1|x2|x3] stays interleaved); tensors `kept` does not name are copied
// whole. INTERNAL when `kept` names a tensor `source` lacks, `target` has a tensor `source`
// lacks, a sliced shape differs from the target's, or LibTorch fails (`what` names the model
// in the message).
absl::Status CopyKeptSlices(const NamedTensors& source, const NamedTensors& target,
                            const KeptIndices& kept, const std::string& what);

// A block's attention scales its logits by 1/sqrt(head_dim), so cutting head dims from d to d'
// would turn softmax(q·k/sqrt(d)) into softmax(q'·k'/sqrt(d')) and sharpen every head of the
// block by sqrt(d/d'), even where the removed positions carried nothing. This multiplies the
// query rows (the first third of every [Q|K|V] `qkv` weight and bias that a head-dims group
// slices along dim 0) of the sliced `target` state by sqrt(d'/d), with d the group's size and
// d' its kept count: removing positions then computes exactly what zeroing them did. Groups
// that keep every unit, and other kinds, are left alone. INTERNAL if LibTorch fails.
absl::Status KeepAttentionScale(const DependencyGraph& graph, const std::vector<Group>& groups,
                                const std::vector<int64_t>& kept_counts,
                                const NamedTensors& target);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_TENSOR_SLICING_H_
