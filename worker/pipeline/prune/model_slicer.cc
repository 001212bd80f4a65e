#include "worker/pipeline/prune/model_slicer.h"

#include <algorithm>
#include <map>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/pipeline/model/torch_error.h"
#include "worker/pipeline/prune/swin_graph.h"

namespace compress::pipeline {
namespace {

// tensor name -> dim -> indices kept along it.
using KeptIndices = std::map<std::string, std::map<int, std::vector<int64_t>>>;

absl::StatusOr<KeptIndices> KeptIndicesOf(const DependencyGraph& graph,
                                          const std::vector<Group>& groups,
                                          const std::vector<std::vector<int64_t>>& kept_units) {
  if (kept_units.size() != groups.size()) {
    return absl::InvalidArgumentError(absl::StrCat("kept units given for ", kept_units.size(),
                                                   " groups, but the graph has ", groups.size()));
  }
  KeptIndices kept;
  for (const Group& group : groups) {
    const std::vector<int64_t>& units = kept_units[group.id];
    if (units.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("group ", group.name, " must keep at least one unit"));
    }
    for (size_t i = 0; i < units.size(); ++i) {
      if (units[i] < 0 || units[i] >= group.size || (i > 0 && units[i] <= units[i - 1])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "kept units of group ", group.name, " must be ascending, distinct and in [0, ",
            group.size, "); got ", absl::StrJoin(units, ",")));
      }
    }
    for (int id : group.nodes) {
      const SliceNode& node = graph.node(id);
      std::vector<int64_t> indices;
      for (int64_t unit : units) {
        indices.insert(indices.end(), node.units[unit].begin(), node.units[unit].end());
      }
      std::sort(indices.begin(), indices.end());
      kept[node.tensor][node.dim] = std::move(indices);
    }
  }
  return kept;
}

}  // namespace

std::vector<std::vector<int64_t>> AllUnits(const std::vector<Group>& groups) {
  std::vector<std::vector<int64_t>> units(groups.size());
  for (const Group& group : groups) {
    for (int64_t u = 0; u < group.size; ++u) units[group.id].push_back(u);
  }
  return units;
}

absl::StatusOr<SlicedModel> SliceSwinModel(const SwinTransformer& model,
                                           const DependencyGraph& graph,
                                           const std::vector<Group>& groups,
                                           const std::vector<std::vector<int64_t>>& kept_units) {
  absl::StatusOr<KeptIndices> kept = KeptIndicesOf(graph, groups, kept_units);
  if (!kept.ok()) return kept.status();
  std::vector<int64_t> counts(groups.size());
  for (const Group& group : groups) counts[group.id] = kept_units[group.id].size();
  absl::StatusOr<SwinConfig> config = PrunedSwinConfig(model->config(), groups, counts);
  if (!config.ok()) return config.status();
  absl::StatusOr<SwinTransformer> pruned = CreateSwinTransformer(*config);
  if (!pruned.ok()) return pruned.status();

  try {
    std::map<std::string, torch::Tensor> source;
    for (auto& [name, tensor] : model->StateDict()) source.emplace(name, tensor);
    for (const auto& [name, dims] : *kept) {
      if (source.count(name) == 0) {
        return absl::InternalError(
            absl::StrCat("the dependency graph names \"", name, "\", not a tensor of the model"));
      }
    }
    torch::NoGradGuard no_grad;
    for (auto& [name, target] : (*pruned)->StateDict()) {
      auto it = source.find(name);
      if (it == source.end()) {
        return absl::InternalError(
            absl::StrCat("the pruned model has \"", name, "\", which the source model lacks"));
      }
      torch::Tensor value = it->second.detach();
      auto dims = kept->find(name);
      if (dims != kept->end()) {
        for (const auto& [dim, indices] : dims->second) {
          value = value.index_select(
              dim, torch::tensor(indices, torch::dtype(torch::kLong)).to(value.device()));
        }
      }
      if (value.sizes() != target.sizes()) {
        return absl::InternalError(absl::StrCat(
            "slicing \"", name, "\" gives shape [", absl::StrJoin(value.sizes(), ","),
            "] but the pruned model expects [", absl::StrJoin(target.sizes(), ","), "]"));
      }
      target.copy_(value);
    }
    (*pruned)->train(model->is_training());
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, "slicing the pruned model");
  }
  SlicedModel result;
  result.config = std::move(*config);
  result.model = std::move(*pruned);
  return result;
}

}  // namespace compress::pipeline
