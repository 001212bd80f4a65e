// Building blocks of the Swin dependency graphs (swin_graph.h, shared_swin_graph.h): the unit
// maps of the couplings (one channel, a patch merging's four interleaved channels, the rows of
// a head in a [Q|K|V] head-major qkv, the columns of a head in proj, and the same per head dim)
// and GroupBuilder, which couples every node it adds to the group's first. Torch-free.
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_GRAPH_UNITS_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_GRAPH_UNITS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/pipeline/prune/dependency_graph.h"

namespace compress::pipeline {

// units[u]: the indices of unit u along one dimension.
using Units = std::vector<std::vector<int64_t>>;

// Unit c -> {c}.
Units ChannelUnits(int64_t count);
// Unit c -> {c, C+c, 2C+c, 3C+c}: channel c of each of the four merged neighbours.
Units Interleaved4Units(int64_t count);
// qkv rows of whole heads: unit h -> {t*A + h*d + i : t in Q,K,V, i < d}, A = heads * d.
Units QkvHeadUnits(int64_t heads, int64_t head_dim);
// proj columns of whole heads: unit h -> {h*d + i : i < d}.
Units ProjHeadUnits(int64_t heads, int64_t head_dim);
// qkv rows of one position in every head: unit p -> {t*A + h*d + p : t, h}.
Units QkvHeadDimUnits(int64_t heads, int64_t head_dim);
// proj columns of one position in every head: unit p -> {h*d + p : h}.
Units ProjHeadDimUnits(int64_t heads, int64_t head_dim);

// Adds nodes to one group: the first added becomes the anchor the others couple to and names
// the group.
class GroupBuilder {
 public:
  GroupBuilder(DependencyGraph& graph, Site site, std::string name);

  // Adds (tensor, dim) at the builder's site.
  absl::Status Add(const std::string& tensor, int dim, Units units);
  // Adds (tensor, dim) at `site`: a shared tensor used by several blocks is added once per
  // block, so that its node lists every block whose width it sets.
  absl::Status AddAt(const Site& site, const std::string& tensor, int dim, Units units,
                     Baseline baseline = Baseline::kZero);

 private:
  DependencyGraph& graph_;
  const Site site_;
  const std::string name_;
  int anchor_ = -1;
};

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_GRAPH_UNITS_H_
