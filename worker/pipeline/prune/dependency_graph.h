// DependencyGraph: the prunable dimensions of a model and how they are coupled, after DepGraph
// (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023; VainF/Torch-Pruning).
//
// A node is one dimension of one parameter tensor (e.g. dim 0 of "mlp.fc1.weight", its output
// rows), cut into prunable *units*: unit u of the node is a list of indices along that
// dimension (one row for a channel, the 3*head_dim rows of a head in a [Q|K|V] qkv weight, the
// four interleaved columns of a channel in a patch-merging reduction). An edge couples two
// nodes unit for unit: removing unit u from one forces removing unit u from the other, so the
// index maps of a coupling are the two nodes' unit-to-index maps. The connected components of
// the graph are the groups (the rows of the grouping matrix F): a group is pruned as a whole,
// one unit at a time.
//
// A node is identified by (tensor, dim). Adding the same (tensor, dim) twice returns the first
// node: a weight shared by several passes is one node, and the couplings of all its uses merge
// their groups, so that its importance is counted once and sums over every use.
//
// Torch-free. Not thread-safe; build it on one thread, then read it from any.
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_DEPENDENCY_GRAPH_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_DEPENDENCY_GRAPH_H_

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace compress::pipeline {

// What a group prunes; decides how its width is rounded and which config field it changes.
enum class GroupKind {
  kEmbedding,  // A stage's residual-stream width (SwinConfig::stages[s].dim).
  kMlpHidden,  // A block's MLP hidden width (BlockWidths::mlp_hidden).
  kHeads,      // A block's whole attention heads (BlockWidths::num_heads).
  kHeadDims,   // A block's per-head width, the same positions in every head (head_dim).
};

// "embedding", "mlp_hidden", "heads", "head_dims".
const char* GroupKindName(GroupKind kind);

// Where a node's dimension lives in the architecture: the config entry its group's width sets.
// `block` is -1 for stage-wide (embedding) nodes.
struct Site {
  GroupKind kind = GroupKind::kEmbedding;
  int stage = 0;
  int block = -1;

  bool operator<(const Site& other) const {
    return std::tie(kind, stage, block) < std::tie(other.kind, other.stage, other.block);
  }
  bool operator==(const Site& other) const {
    return kind == other.kind && stage == other.stage && block == other.block;
  }
};

// What a tensor's magnitude (L2 importance) is measured from: the value at which the tensor
// contributes nothing beyond what the model computes without it.
enum class Baseline {
  kZero,      // Ordinary weights: |W|.
  kIdentity,  // A square matrix initialised at the identity (a shared model's proj_l / proj_w,
              // which mix the heads and start as the identity map): |W - I|.
};

// One dimension of one tensor, cut into units.
struct SliceNode {
  std::string tensor;                       // Native parameter name.
  int dim = 0;                              // Dimension of the tensor.
  std::vector<std::vector<int64_t>> units;  // units[u]: indices along `dim`, ascending.
  std::vector<Site> sites;                  // Config entries this node belongs to.
  Baseline baseline = Baseline::kZero;      // The tensor's; equal on all its nodes.
};

// A connected component: nodes pruned together, unit for unit.
struct Group {
  int id = 0;  // Position in DependencyGraph::Groups().
  GroupKind kind = GroupKind::kEmbedding;
  std::string name;         // Readable name, e.g. "layers.1.blocks.0.attn.heads".
  std::vector<Site> sites;  // Config entries its width sets (several for shared weights).
  int64_t size = 0;         // Units.
  std::vector<int> nodes;   // Node ids, ascending.
};

class DependencyGraph {
 public:
  // Adds a node, or returns the existing node of (tensor, dim) after checking that `units`
  // match it (FAILED_PRECONDITION otherwise) and recording `site` on it. `baseline` belongs to
  // the tensor: FAILED_PRECONDITION if another node of the same tensor has a different one.
  absl::StatusOr<int> AddNode(const std::string& tensor, int dim,
                              std::vector<std::vector<int64_t>> units, const Site& site,
                              Baseline baseline = Baseline::kZero);
  // Couples two nodes unit for unit; INVALID_ARGUMENT if their unit counts differ or an id is
  // out of range.
  absl::Status Couple(int a, int b);

  const std::vector<SliceNode>& nodes() const { return nodes_; }
  const SliceNode& node(int id) const { return nodes_.at(id); }

  // The connected components, ordered by their smallest node id. A group takes the name given
  // to its first node by SetGroupName (or the node's tensor and dim), and the kind of its first
  // node's first site; FAILED_PRECONDITION if its nodes mix kinds.
  absl::StatusOr<std::vector<Group>> Groups() const;

  // Names the group that will contain node `id`.
  void SetGroupName(int id, std::string name) { group_names_[id] = std::move(name); }

  // The grouping matrix F as data: {"groups": [{"id", "name", "kind", "size", "sites":
  // [{"stage","block"}], "members": [{"tensor", "dim", "indices": [[...] per unit]}]}]}.
  nlohmann::json GroupsToJson(const std::vector<Group>& groups) const;

 private:
  int Find(int id) const;

  std::vector<SliceNode> nodes_;
  std::map<std::pair<std::string, int>, int> index_;  // (tensor, dim) -> node id
  std::vector<std::pair<int, int>> edges_;
  std::map<int, std::string> group_names_;
  mutable std::vector<int> parent_;  // Union-find over nodes, rebuilt by Groups().
};

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_DEPENDENCY_GRAPH_H_
