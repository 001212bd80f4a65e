// The dependency graph of a weight-shared Swin (share/shared_swin.h) and the config a pruning
// of it gives. Node names are SharedSwin's StateDict names; a shared weight is one node, added
// once per pass that uses it, so that its group lists every block whose width it sets and its
// importance sums over all its uses (the gradient of a shared tensor accumulates over passes).
//
// Groups, for stages s, sharing groups g and their passes p (block b = first block of g + p):
//   embedding (stage s), unit = channel c of the residual stream:
//     patch_embed.proj rows and patch_embed.norm (s = 0) or layers.s.downsample.reduction
//     rows (s > 0); every pass's norm1, norm2, mlp_transform.norm and mlp_transform.conv
//     (depthwise: weight [C, 1, k, k] dim 0, bias); every sharing group's shared.attn.qkv
//     columns, shared.attn.proj rows and bias, shared.mlp.fc1 columns, shared.mlp.fc2 rows and
//     bias; then the next merging's norm and reduction columns {c, C+c, 2C+c, 3C+c}, or norm
//     and head.fc columns.
//   mlp_hidden (sharing group s.g, sites: each of its blocks), unit = hidden unit j:
//     shared.mlp.fc1 rows and bias, shared.mlp.fc2 columns.
//   heads (sharing group s.g), unit = head h: shared.attn.qkv rows (and bias) of head h in Q, K
//     and V, shared.attn.proj columns of head h, shared.attn.relative_position_bias_table column
//     h, and in every pass proj_l and proj_w (Linear heads -> heads): weight row h, weight
//     column h, bias h.
//   head_dims (sharing group s.g), unit = position p in every head: the qkv rows and proj
//     columns of p; proj_l / proj_w do not depend on the head width and stay whole.
// Group order: per stage the embedding group, then per sharing group its MLP and attention
// groups. Torch-free.
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_SHARED_SWIN_GRAPH_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_SHARED_SWIN_GRAPH_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipeline/prune/dependency_graph.h"
#include "worker/pipeline/prune/swin_graph.h"
#include "worker/pipeline/share/sharing_config.h"

namespace compress::pipeline {

// Builds the graph of the shared model described by `config` (which must validate:
// INVALID_ARGUMENT otherwise).
absl::StatusOr<DependencyGraph> BuildSharedSwinGraph(const SharingConfig& config,
                                                     AttentionGranularity granularity);

// The config after keeping `kept[g]` units of group g (groups of BuildSharedSwinGraph(config,
// ...).Groups()): every block of a sharing group gets the group's new widths; the grouping and
// the transforms stay. INVALID_ARGUMENT if a count is out of [1, size] or the sizes disagree.
absl::StatusOr<SharingConfig> PrunedSharingConfig(const SharingConfig& config,
                                                  const std::vector<Group>& groups,
                                                  const std::vector<int64_t>& kept);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_SHARED_SWIN_GRAPH_H_
