#include "worker/pipeline/prune/graph_units.h"

#include <utility>

namespace compress::pipeline {

Units ChannelUnits(int64_t count) {
  Units units(count);
  for (int64_t c = 0; c < count; ++c) units[c] = {c};
  return units;
}

Units Interleaved4Units(int64_t count) {
  Units units(count);
  for (int64_t c = 0; c < count; ++c) units[c] = {c, count + c, 2 * count + c, 3 * count + c};
  return units;
}

Units QkvHeadUnits(int64_t heads, int64_t head_dim) {
  const int64_t attn = heads * head_dim;
  Units units(heads);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t t = 0; t < 3; ++t) {
      for (int64_t i = 0; i < head_dim; ++i) units[h].push_back(t * attn + h * head_dim + i);
    }
  }
  return units;
}

Units ProjHeadUnits(int64_t heads, int64_t head_dim) {
  Units units(heads);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < head_dim; ++i) units[h].push_back(h * head_dim + i);
  }
  return units;
}

Units QkvHeadDimUnits(int64_t heads, int64_t head_dim) {
  const int64_t attn = heads * head_dim;
  Units units(head_dim);
  for (int64_t p = 0; p < head_dim; ++p) {
    for (int64_t t = 0; t < 3; ++t) {
      for (int64_t h = 0; h < heads; ++h) units[p].push_back(t * attn + h * head_dim + p);
    }
  }
  return units;
}

Units ProjHeadDimUnits(int64_t heads, int64_t head_dim) {
  Units units(head_dim);
  for (int64_t p = 0; p < head_dim; ++p) {
    for (int64_t h = 0; h < heads; ++h) units[p].push_back(h * head_dim + p);
  }
  return units;
}

GroupBuilder::GroupBuilder(DependencyGraph& graph, Site site, std::string name)
    : graph_(graph), site_(site), name_(std::move(name)) {}

absl::Status GroupBuilder::Add(const std::string& tensor, int dim, Units units) {
  return AddAt(site_, tensor, dim, std::move(units));
}

absl::Status GroupBuilder::AddAt(const Site& site, const std::string& tensor, int dim, Units units,
                                 Baseline baseline) {
  absl::StatusOr<int> id = graph_.AddNode(tensor, dim, std::move(units), site, baseline);
  if (!id.ok()) return id.status();
  if (anchor_ < 0) {
    anchor_ = *id;
    graph_.SetGroupName(*id, name_);
    return absl::OkStatus();
  }
  if (*id == anchor_) return absl::OkStatus();
  return graph_.Couple(anchor_, *id);
}

}  // namespace compress::pipeline
