#include "worker/pipeline/prune/swin_graph.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace compress::pipeline {
namespace {

#define COMPRESS_ASSIGN_OR_RETURN(lhs, expr)    \
  auto lhs##_or = (expr);                       \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  const int lhs = *lhs##_or

using Units = std::vector<std::vector<int64_t>>;

// Unit c -> {c}.
Units Channels(int64_t count) {
  Units units(count);
  for (int64_t c = 0; c < count; ++c) units[c] = {c};
  return units;
}

// Unit c -> {c, C+c, 2C+c, 3C+c}: channel c of each of the four merged neighbours.
Units Interleaved4(int64_t count) {
  Units units(count);
  for (int64_t c = 0; c < count; ++c) units[c] = {c, count + c, 2 * count + c, 3 * count + c};
  return units;
}

// qkv rows of whole heads: unit h -> rows of head h in Q, K and V.
Units QkvHeads(int64_t heads, int64_t head_dim) {
  const int64_t attn = heads * head_dim;
  Units units(heads);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t t = 0; t < 3; ++t) {
      for (int64_t i = 0; i < head_dim; ++i) units[h].push_back(t * attn + h * head_dim + i);
    }
  }
  return units;
}

// proj columns of whole heads: unit h -> {h*d + i}.
Units ProjHeads(int64_t heads, int64_t head_dim) {
  Units units(heads);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < head_dim; ++i) units[h].push_back(h * head_dim + i);
  }
  return units;
}

// qkv rows of one position in every head: unit p -> {t*A + h*d + p}.
Units QkvHeadDims(int64_t heads, int64_t head_dim) {
  const int64_t attn = heads * head_dim;
  Units units(head_dim);
  for (int64_t p = 0; p < head_dim; ++p) {
    for (int64_t t = 0; t < 3; ++t) {
      for (int64_t h = 0; h < heads; ++h) units[p].push_back(t * attn + h * head_dim + p);
    }
  }
  return units;
}

// proj columns of one position in every head: unit p -> {h*d + p}.
Units ProjHeadDims(int64_t heads, int64_t head_dim) {
  Units units(head_dim);
  for (int64_t p = 0; p < head_dim; ++p) {
    for (int64_t h = 0; h < heads; ++h) units[p].push_back(h * head_dim + p);
  }
  return units;
}

// Adds nodes to one group: the first added becomes the anchor the others couple to.
class GroupBuilder {
 public:
  GroupBuilder(DependencyGraph& graph, Site site, std::string name)
      : graph_(graph), site_(site), name_(std::move(name)) {}

  absl::Status Add(const std::string& tensor, int dim, Units units) {
    COMPRESS_ASSIGN_OR_RETURN(id, graph_.AddNode(tensor, dim, std::move(units), site_));
    if (anchor_ < 0) {
      anchor_ = id;
      graph_.SetGroupName(id, name_);
      return absl::OkStatus();
    }
    return graph_.Couple(anchor_, id);
  }

 private:
  DependencyGraph& graph_;
  const Site site_;
  const std::string name_;
  int anchor_ = -1;
};

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
    COMPRESS_RETURN_IF_ERROR(embed.Add("patch_embed.proj.weight", 0, Channels(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("patch_embed.proj.bias", 0, Channels(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("patch_embed.norm.weight", 0, Channels(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("patch_embed.norm.bias", 0, Channels(dim)));
  } else {
    COMPRESS_RETURN_IF_ERROR(
        embed.Add(absl::StrCat(layer, ".downsample.reduction.weight"), 0, Channels(dim)));
  }
  for (int b = 0; b < static_cast<int>(stage.blocks.size()); ++b) {
    const std::string block = absl::StrCat(layer, ".blocks.", b, ".");
    for (const char* tensor : {"norm1.weight", "norm1.bias", "attn.proj.bias", "norm2.weight",
                               "norm2.bias", "mlp.fc2.bias"}) {
      COMPRESS_RETURN_IF_ERROR(embed.Add(block + tensor, 0, Channels(dim)));
    }
    COMPRESS_RETURN_IF_ERROR(embed.Add(block + "attn.qkv.weight", 1, Channels(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(block + "attn.proj.weight", 0, Channels(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(block + "mlp.fc1.weight", 1, Channels(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(block + "mlp.fc2.weight", 0, Channels(dim)));
  }
  if (s + 1 < static_cast<int>(config.stages.size())) {
    const std::string next = absl::StrCat("layers.", s + 1, ".downsample.");
    COMPRESS_RETURN_IF_ERROR(embed.Add(next + "norm.weight", 0, Interleaved4(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(next + "norm.bias", 0, Interleaved4(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add(next + "reduction.weight", 1, Interleaved4(dim)));
  } else {
    COMPRESS_RETURN_IF_ERROR(embed.Add("norm.weight", 0, Channels(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("norm.bias", 0, Channels(dim)));
    COMPRESS_RETURN_IF_ERROR(embed.Add("head.fc.weight", 1, Channels(dim)));
  }

  for (int b = 0; b < static_cast<int>(stage.blocks.size()); ++b) {
    const BlockWidths& widths = stage.blocks[b];
    const std::string block = absl::StrCat(layer, ".blocks.", b, ".");
    GroupBuilder mlp(graph, Site{GroupKind::kMlpHidden, s, b}, block + "mlp.hidden");
    COMPRESS_RETURN_IF_ERROR(mlp.Add(block + "mlp.fc1.weight", 0, Channels(widths.mlp_hidden)));
    COMPRESS_RETURN_IF_ERROR(mlp.Add(block + "mlp.fc1.bias", 0, Channels(widths.mlp_hidden)));
    COMPRESS_RETURN_IF_ERROR(mlp.Add(block + "mlp.fc2.weight", 1, Channels(widths.mlp_hidden)));

    const int64_t heads = widths.num_heads, head_dim = widths.head_dim;
    if (granularity == AttentionGranularity::kHeads) {
      GroupBuilder attn(graph, Site{GroupKind::kHeads, s, b}, block + "attn.heads");
      COMPRESS_RETURN_IF_ERROR(attn.Add(block + "attn.qkv.weight", 0, QkvHeads(heads, head_dim)));
      if (config.qkv_bias) {
        COMPRESS_RETURN_IF_ERROR(attn.Add(block + "attn.qkv.bias", 0, QkvHeads(heads, head_dim)));
      }
      COMPRESS_RETURN_IF_ERROR(attn.Add(block + "attn.proj.weight", 1, ProjHeads(heads, head_dim)));
      COMPRESS_RETURN_IF_ERROR(
          attn.Add(block + "attn.relative_position_bias_table", 1, Channels(heads)));
    } else {
      GroupBuilder attn(graph, Site{GroupKind::kHeadDims, s, b}, block + "attn.head_dims");
      COMPRESS_RETURN_IF_ERROR(
          attn.Add(block + "attn.qkv.weight", 0, QkvHeadDims(heads, head_dim)));
      if (config.qkv_bias) {
        COMPRESS_RETURN_IF_ERROR(
            attn.Add(block + "attn.qkv.bias", 0, QkvHeadDims(heads, head_dim)));
      }
      COMPRESS_RETURN_IF_ERROR(
          attn.Add(block + "attn.proj.weight", 1, ProjHeadDims(heads, head_dim)));
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
#undef COMPRESS_ASSIGN_OR_RETURN

}  // namespace compress::pipeline
