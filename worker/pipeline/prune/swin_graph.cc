#include "worker/pipeline/prune/swin_graph.h"

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

absl::Status AddStage(const SwinConfig& config, int s, AttentionGranularity granularity,
                      DependencyGraph& graph) {
  const StageConfig& stage = config.stages[s];
  const std::string layer = absl::StrCat("layers.", s);
  const int64_t dim = stage.dim;
  GroupBuilder embed(graph, Site{GroupKind::kEmbedding, s, -1}, absl::StrCat(layer, ".embedding"));
  if (s == 0) {
    COMPRESS_RETURN_IF_ERROR(embed.Add("patch_embed.proj.weight", 0, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("patch_embed.proj.bias", 0, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("patch_embed.norm.weight", 0, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("patch_embed.norm.bias", 0, ChannelUnits(dim)));
  } else {
    COMPRESS_RETURN_IF_ERROR(
        embed.Add(absl::StrCat(layer, ".downsample.reduction.weight"), 0, ChannelUnits(dim)));
  }
  for (int b = 0; b < static_cast<int>(stage.blocks.size()); ++b) {
    const std::string block = absl::StrCat(layer, ".blocks.", b, ".");
    for (const char* tensor : {"norm1.weight", "norm1.bias", "attn.proj.bias", "norm2.weight",
                               "norm2.bias", "mlp.fc2.bias"}) {
      COMPRESS_RETURN_IF_ERROR(embed.Add(block + tensor, 0, ChannelUnits(dim)));
    }
    COMPRESS_RETURN_IF_ERROR(embed.Add(block + "attn.qkv.weight", 1, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(block + "attn.proj.weight", 0, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(block + "mlp.fc1.weight", 1, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(block + "mlp.fc2.weight", 0, ChannelUnits(dim)));
  }
  if (s + 1 < static_cast<int>(config.stages.size())) {
    const std::string next = absl::StrCat("layers.", s + 1, ".downsample.");
    COMPRESS_RETURN_IF_ERROR(embed.Add(next + "norm.weight", 0, Interleaved4Units(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(next + "norm.bias", 0, Interleaved4Units(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(next + "reduction.weight", 1, Interleaved4Units(dim)));
  } else {
    COMPRESS_RETURN_IF_ERROR(embed.Add("norm.weight", 0, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("norm.bias", 0, ChannelUnits(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("head.fc.weight", 1, ChannelUnits(dim)));
  }

  for (int b = 0; b < static_cast<int>(stage.blocks.size()); ++b) {
    const BlockWidths& widths = stage.blocks[b];
    const std::string block = absl::StrCat(layer, ".blocks.", b, ".");
    GroupBuilder mlp(graph, Site{GroupKind::kMlpHidden, s, b}, block + "mlp.hidden");
    COMPRESS_RETURN_IF_ERROR(mlp.Add(block + "mlp.fc1.weight", 0, ChannelUnits(widths.mlp_hidden)));
    COMPRESS_RETURN_IF_ERROR(mlp.Add(block + "mlp.fc1.bias", 0, ChannelUnits(widths.mlp_hidden)));
    COMPRESS_RETURN_IF_ERROR(mlp.Add(block + "mlp.fc2.weight", 1, ChannelUnits(widths.mlp_hidden)));

    const int64_t heads = widths.num_heads, head_dim = widths.head_dim;
    if (granularity == AttentionGranularity::kHeads) {
      GroupBuilder attn(graph, Site{GroupKind::kHeads, s, b}, block + "attn.heads");
      COMPRESS_RETURN_IF_ERROR(
          attn.Add(block + "attn.qkv.weight", 0, QkvHeadUnits(heads, head_dim)));
      if (config.qkv_bias) {
        COMPRESS_RETURN_IF_ERROR(
            attn.Add(block + "attn.qkv.bias", 0, QkvHeadUnits(heads, head_dim)));
      }
      COMPRESS_RETURN_IF_ERROR(
          attn.Add(block + "attn.proj.weight", 1, ProjHeadUnits(heads, head_dim)));
      COMPRESS_RETURN_IF_ERROR(
          attn.Add(block + "attn.relative_position_bias_table", 1, ChannelUnits(heads)));
    } else {
      GroupBuilder attn(graph, Site{GroupKind::kHeadDims, s, b}, block + "attn.head_dims");
      COMPRESS_RETURN_IF_ERROR(
          attn.Add(block + "attn.qkv.weight", 0, QkvHeadDimUnits(heads, head_dim)));
      if (config.qkv_bias) {
        COMPRESS_RETURN_IF_ERROR(
            attn.Add(block + "attn.qkv.bias", 0, QkvHeadDimUnits(heads, head_dim)));
      }
      COMPRESS_RETURN_IF_ERROR(
          attn.Add(block + "attn.proj.weight", 1, ProjHeadDimUnits(heads, head_dim)));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DependencyGraph> BuildSwinGraph(const SwinConfig& config,
                                               AttentionGranularity granularity) {
  COMPRESS_RETURN_IF_ERROR(config.Validate());
  DependencyGraph graph;
  for (int s = 0; s < static_cast<int>(config.stages.size()); ++s) {
    COMPRESS_RETURN_IF_ERROR(AddStage(config, s, granularity, graph));
  }
  return graph;
}

absl::StatusOr<SwinConfig> PrunedSwinConfig(const SwinConfig& config,
                                            const std::vector<Group>& groups,
                                            const std::vector<int64_t>& kept) {
  if (kept.size() != groups.size()) {
    return absl::InvalidArgumentError(absl::StrCat("kept widths for ", kept.size(),
                                                   " groups, but the graph has ", groups.size()));
  }
  SwinConfig pruned = config;
  for (size_t g = 0; g < groups.size(); ++g) {
    const Group& group = groups[g];
    if (kept[g] < 1 || kept[g] > group.size) {
      return absl::InvalidArgumentError(
          absl::StrCat("group ", group.name, " keeps ", kept[g], " of its ", group.size, " units"));
    }
    const int width = static_cast<int>(kept[g]);
    for (const Site& site : group.sites) {
      if (site.stage < 0 || site.stage >= static_cast<int>(pruned.stages.size())) {
        return absl::InvalidArgumentError(
            absl::StrCat("group ", group.name, " names stage ", site.stage));
      }
      StageConfig& stage = pruned.stages[site.stage];
      if (site.kind == GroupKind::kEmbedding) {
        stage.dim = width;
        continue;
      }
      if (site.block < 0 || site.block >= static_cast<int>(stage.blocks.size())) {
        return absl::InvalidArgumentError(
            absl::StrCat("group ", group.name, " names block ", site.block));
      }
      BlockWidths& widths = stage.blocks[site.block];
      switch (site.kind) {
        case GroupKind::kMlpHidden:
          widths.mlp_hidden = width;
          break;
        case GroupKind::kHeads:
          widths.num_heads = width;
          break;
        case GroupKind::kHeadDims:
          widths.head_dim = width;
          break;
        case GroupKind::kEmbedding:
          break;
      }
    }
  }
  COMPRESS_RETURN_IF_ERROR(pruned.Validate());
  return pruned;
}

#undef COMPRESS_RETURN_IF_ERROR

}  // namespace compress::pipeline
