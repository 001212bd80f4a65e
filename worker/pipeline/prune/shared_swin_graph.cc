#include "worker/pipeline/prune/shared_swin_graph.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/pipeline/prune/graph_units.h"

namespace compress::pipeline {
namespace {

#define COMPRESS_RETURN_IF_ERROR(expr)              \
  if (absl::Status status = (expr); !status.ok()) { \
    return status;                                  \
  }

// The stage-wide residual channels.
absl::Status AddEmbedding(const SharingConfig& config, int s, DependencyGraph& graph) {
  const SwinConfig& base = config.base;
  const std::string layer = absl::StrCat("layers.", s);
  const int64_t dim = base.stages[s].dim;
  GroupBuilder embed(graph, Site{GroupKind::kEmbedding, s, -1}, absl::StrCat(layer, ".embedding"));
  if (s == 0) {
    for (const char* tensor : {"patch_embed.proj.weight", "patch_embed.proj.bias",
                               "patch_embed.norm.weight", "patch_embed.norm.bias"}) {
      COMPRESS_RETURN_IF_ERROR(embed.Add(tensor, 0, ChannelUnits(dim)));
    }
  } else {
    COMPRESS_RETURN_IF_ERROR(
        embed.Add(absl::StrCat(layer, ".downsample.reduction.weight"), 0, ChannelUnits(dim)));
  }
  for (int g = 0; g < config.num_groups(s); ++g) {
    const std::string group = absl::StrCat(layer, ".groups.", g, ".");
    for (int p = 0; p < config.group_sizes[s][g]; ++p) {
      const std::string pass = absl::StrCat(group, "passes.", p, ".");
      for (const char* tensor : {"norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"}) {
        COMPRESS_RETURN_IF_ERROR(embed.Add(pass + tensor, 0, ChannelUnits(dim)));
      }
      if (config.mlp_transform) {
        // A residual branch that is the identity because its convolution starts at zero: its
        // tensors keep the zero baseline, as the model's other norms and weights do.
        for (const char* tensor : {"mlp_transform.norm.weight", "mlp_transform.norm.bias",
                                   "mlp_transform.conv.weight", "mlp_transform.conv.bias"}) {
          COMPRESS_RETURN_IF_ERROR(embed.Add(pass + tensor, 0, ChannelUnits(dim)));
        }
      }
    }
    const std::string shared = group + "shared.";
    for (const char* tensor : {"attn.proj.bias", "mlp.fc2.bias"}) {
      COMPRESS_RETURN_IF_ERROR(embed.Add(shared + tensor, 0, ChannelUnits(dim)));
    }
    COMPRESS_RETURN_IF_ERROR(embed.Add(shared + "attn.qkv.weight", 1, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(shared + "attn.proj.weight", 0, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(shared + "mlp.fc1.weight", 1, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(shared + "mlp.fc2.weight", 0, ChannelUnits(dim)));
  }
  if (s + 1 < static_cast<int>(base.stages.size())) {
    const std::string next = absl::StrCat("layers.", s + 1, ".downsample.");
    COMPRESS_RETURN_IF_ERROR(embed.Add(next + "norm.weight", 0, Interleaved4Units(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(next + "norm.bias", 0, Interleaved4Units(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(next + "reduction.weight", 1, Interleaved4Units(dim)));
  } else {
    COMPRESS_RETURN_IF_ERROR(embed.Add("norm.weight", 0, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("norm.bias", 0, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("head.fc.weight", 1, ChannelUnits(dim)));
  }
  return absl::OkStatus();
}

// The MLP hidden width and the attention heads (or head dims) of sharing group g of stage s.
// Shared tensors are added once per pass (at that pass's block), so the group's sites are
// every block of the sharing group.
absl::Status AddSharingGroup(const SharingConfig& config, int s, int g,
                             AttentionGranularity granularity, DependencyGraph& graph) {
  const int first = config.group_first_block(s, g);
  const BlockWidths& widths = config.base.stages[s].blocks[first];
  const std::string group = absl::StrCat("layers.", s, ".groups.", g, ".");
  const std::string shared = group + "shared.";
  const int passes = config.group_sizes[s][g];

  GroupBuilder mlp(graph, Site{GroupKind::kMlpHidden, s, first}, group + "mlp.hidden");
  for (int p = 0; p < passes; ++p) {
    const Site site{GroupKind::kMlpHidden, s, first + p};
    const int64_t hidden = widths.mlp_hidden;
    COMPRESS_RETURN_IF_ERROR(mlp.AddAt(site, shared + "mlp.fc1.weight", 0, ChannelUnits(hidden)));
    COMPRESS_RETURN_IF_ERROR(mlp.AddAt(site, shared + "mlp.fc1.bias", 0, ChannelUnits(hidden)));
    COMPRESS_RETURN_IF_ERROR(mlp.AddAt(site, shared + "mlp.fc2.weight", 1, ChannelUnits(hidden)));
  }

  const int64_t heads = widths.num_heads, head_dim = widths.head_dim;
  const bool by_heads = granularity == AttentionGranularity::kHeads;
  const GroupKind kind = by_heads ? GroupKind::kHeads : GroupKind::kHeadDims;
  GroupBuilder attn(graph, Site{kind, s, first},
                    group + (by_heads ? "attn.heads" : "attn.head_dims"));
  for (int p = 0; p < passes; ++p) {
    const Site site{kind, s, first + p};
    const Units qkv = by_heads ? QkvHeadUnits(heads, head_dim) : QkvHeadDimUnits(heads, head_dim);
    const Units proj =
        by_heads ? ProjHeadUnits(heads, head_dim) : ProjHeadDimUnits(heads, head_dim);
    COMPRESS_RETURN_IF_ERROR(attn.AddAt(site, shared + "attn.qkv.weight", 0, qkv));
    if (config.base.qkv_bias) {
      COMPRESS_RETURN_IF_ERROR(attn.AddAt(site, shared + "attn.qkv.bias", 0, qkv));
    }
    COMPRESS_RETURN_IF_ERROR(attn.AddAt(site, shared + "attn.proj.weight", 1, proj));
    if (!by_heads) continue;
    COMPRESS_RETURN_IF_ERROR(
        attn.AddAt(site, shared + "attn.relative_position_bias_table", 1, ChannelUnits(heads)));
    if (config.attention_transform) {
      // The transforms start at the identity (zero bias), so their weights are measured from
      // it: a pass adds to a head's L2 importance what its mixing changes, not a diagonal of
      // ones.
      const std::string pass = absl::StrCat(group, "passes.", p, ".");
      for (const char* linear : {"proj_l.", "proj_w."}) {
        const std::string name = pass + linear;
        for (int dim : {0, 1}) {
          COMPRESS_RETURN_IF_ERROR(
              attn.AddAt(site, name + "weight", dim, ChannelUnits(heads), Baseline::kIdentity));
        }
        COMPRESS_RETURN_IF_ERROR(attn.AddAt(site, name + "bias", 0, ChannelUnits(heads)));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DependencyGraph> BuildSharedSwinGraph(const SharingConfig& config,
                                                     AttentionGranularity granularity) {
  COMPRESS_RETURN_IF_ERROR(config.Validate());
  DependencyGraph graph;
  for (int s = 0; s < static_cast<int>(config.base.stages.size()); ++s) {
    COMPRESS_RETURN_IF_ERROR(AddEmbedding(config, s, graph));
    for (int g = 0; g < config.num_groups(s); ++g) {
      COMPRESS_RETURN_IF_ERROR(AddSharingGroup(config, s, g, granularity, graph));
    }
  }
  return graph;
}

absl::StatusOr<SharingConfig> PrunedSharingConfig(const SharingConfig& config,
                                                  const std::vector<Group>& groups,
                                                  const std::vector<int64_t>& kept) {
  absl::StatusOr<SwinConfig> base = PrunedSwinConfig(config.base, groups, kept);
  if (!base.ok()) return base.status();
  SharingConfig pruned = config;
  pruned.base = std::move(*base);
  COMPRESS_RETURN_IF_ERROR(pruned.Validate());
  return pruned;
}

#undef COMPRESS_RETURN_IF_ERROR

}  // namespace compress::pipeline
