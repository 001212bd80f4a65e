// The dependency graph of a (plain) Swin Transformer and the config a pruning of it gives.
//
// Groups, for a SwinConfig with stages s and blocks b (names are timm's, see model/swin.h):
//   embedding (stage s), unit = channel c of the residual stream:
//     patch_embed.proj.{weight,bias} rows and patch_embed.norm (s = 0) or
//     layers.s.downsample.reduction.weight rows (s > 0); in every block norm1, norm2,
//     attn.qkv.weight columns, attn.proj.{weight rows, bias}, mlp.fc1.weight columns,
//     mlp.fc2.{weight rows, bias}; then layers.s+1.downsample.norm channels and
//     reduction.weight columns {c, C+c, 2C+c, 3C+c} (the merged input is [x0|x1|x2|x3]), or, for
//     the last stage, norm and head.fc.weight columns.
//   mlp_hidden (block s.b), unit = hidden unit j: mlp.fc1.{weight rows, bias}, mlp.fc2.weight
//     columns.
//   heads (block s.b), unit = head h: attn.qkv.{weight rows, bias} {t*A + h*d + i : t in Q,K,V,
//     i < d} (A = heads * d), attn.proj.weight columns {h*d + i}, and
//     attn.relative_position_bias_table column h.
//   head_dims (block s.b), unit = position p in every head: qkv rows {t*A + h*d + p : t, h},
//     proj columns {h*d + p : h}.
// Torch-free.
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_SWIN_GRAPH_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_SWIN_GRAPH_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipeline/model/swin_config.h"
#include "worker/pipeline/prune/dependency_graph.h"

namespace compress::pipeline {

// How attention is pruned.
enum class AttentionGranularity {
  kHeads,     // Whole heads; head_dim stays.
  kHeadDims,  // The same positions in every head; the head count stays.
};

// Builds the graph of the model described by `config` (which must validate: INVALID_ARGUMENT
// otherwise). Group order is the same for every width of one architecture: per stage the
// embedding group, then per block the MLP group and the attention group.
absl::StatusOr<DependencyGraph> BuildSwinGraph(const SwinConfig& config,
                                               AttentionGranularity granularity);

// The config after keeping `kept[g]` units of group g (groups as returned by
// graph.Groups()). INVALID_ARGUMENT if a count is out of [1, size] or the sizes disagree.
absl::StatusOr<SwinConfig> PrunedSwinConfig(const SwinConfig& config,
                                            const std::vector<Group>& groups,
                                            const std::vector<int64_t>& kept);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_SWIN_GRAPH_H_
