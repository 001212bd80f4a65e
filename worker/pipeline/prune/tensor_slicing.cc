#include "worker/pipeline/prune/tensor_slicing.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/pipeline/model/torch_error.h"

namespace compress::pipeline {

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

std::vector<int64_t> KeptCounts(const std::vector<std::vector<int64_t>>& kept_units) {
  std::vector<int64_t> counts;
  counts.reserve(kept_units.size());
  for (const std::vector<int64_t>& units : kept_units) {
    counts.push_back(static_cast<int64_t>(units.size()));
  }
  return counts;
}

std::vector<std::vector<int64_t>> AllUnits(const std::vector<Group>& groups) {
  std::vector<std::vector<int64_t>> units(groups.size());
  for (const Group& group : groups) {
    for (int64_t u = 0; u < group.size; ++u) units[group.id].push_back(u);
  }
  return units;
}

absl::Status CopyKeptSlices(const NamedTensors& source, const NamedTensors& target,
                            const KeptIndices& kept, const std::string& what) {
  try {
    std::map<std::string, torch::Tensor> by_name(source.begin(), source.end());
    for (const auto& [name, dims] : kept) {
      if (by_name.count(name) == 0) {
        return absl::InternalError(
            absl::StrCat("the dependency graph names \"", name, "\", not a tensor of the ", what));
      }
    }
    torch::NoGradGuard no_grad;
    for (const auto& [name, destination] : target) {
      auto it = by_name.find(name);
      if (it == by_name.end()) {
        return absl::InternalError(
            absl::StrCat("the pruned ", what, " has \"", name, "\", which the source lacks"));
      }
      torch::Tensor value = it->second.detach();
      auto dims = kept.find(name);
      if (dims != kept.end()) {
        for (const auto& [dim, indices] : dims->second) {
          value = value.index_select(
              dim, torch::tensor(indices, torch::dtype(torch::kLong)).to(value.device()));
        }
      }
      if (value.sizes() != destination.sizes()) {
        return absl::InternalError(absl::StrCat(
            "slicing \"", name, "\" gives shape [", absl::StrJoin(value.sizes(), ","),
            "] but the pruned ", what, " expects [", absl::StrJoin(destination.sizes(), ","), "]"));
      }
      torch::Tensor copy_target = destination;
      copy_target.copy_(value);
    }
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, absl::StrCat("slicing the pruned ", what));
  }
  return absl::OkStatus();
}

absl::Status KeepAttentionScale(const DependencyGraph& graph, const std::vector<Group>& groups,
                                const std::vector<int64_t>& kept_counts,
                                const NamedTensors& target) {
  try {
    std::map<std::string, torch::Tensor> by_name(target.begin(), target.end());
    torch::NoGradGuard no_grad;
    for (const Group& group : groups) {
      if (group.kind != GroupKind::kHeadDims) continue;
      const int64_t kept = kept_counts.at(group.id);
      if (kept == group.size) continue;
      const double factor = std::sqrt(static_cast<double>(kept) / static_cast<double>(group.size));
      for (int id : group.nodes) {
        const SliceNode& node = graph.node(id);
        if (node.dim != 0 || !(absl::EndsWith(node.tensor, "qkv.weight") ||
                               absl::EndsWith(node.tensor, "qkv.bias"))) {
          continue;
        }
        auto it = by_name.find(node.tensor);
        if (it == by_name.end()) {
          return absl::InternalError(absl::StrCat("the pruned model lacks \"", node.tensor, "\""));
        }
        torch::Tensor qkv = it->second;
        qkv.narrow(0, 0, qkv.size(0) / 3).mul_(factor);
      }
    }
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, "rescaling the queries of pruned head dims");
  } catch (const std::out_of_range&) {
    return absl::InternalError("kept counts do not cover every group");
  }
  return absl::OkStatus();
}

}  // namespace compress::pipeline
