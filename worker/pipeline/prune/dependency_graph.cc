#include "worker/pipeline/prune/dependency_graph.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace compress::pipeline {

const char* GroupKindName(GroupKind kind) {
  switch (kind) {
    case GroupKind::kEmbedding:
      return "embedding";
    case GroupKind::kMlpHidden:
      return "mlp_hidden";
    case GroupKind::kHeads:
      return "heads";
    case GroupKind::kHeadDims:
      return "head_dims";
  }
  return "unknown";
}

absl::StatusOr<int> DependencyGraph::AddNode(const std::string& tensor, int dim,
                                             std::vector<std::vector<int64_t>> units,
                                             const Site& site, Baseline baseline) {
  for (std::vector<int64_t>& unit : units) std::sort(unit.begin(), unit.end());
  // The nodes of one tensor are adjacent in index_ (keyed by (tensor, dim)).
  for (auto it = index_.lower_bound({tensor, std::numeric_limits<int>::min()});
       it != index_.end() && it->first.first == tensor; ++it) {
    if (nodes_[it->second].baseline != baseline) {
      return absl::FailedPreconditionError(absl::StrCat("tensor ", tensor,
                                                        " was added with two baselines (dims ",
                                                        nodes_[it->second].dim, " and ", dim, ")"));
    }
  }
  auto [it, inserted] =
      index_.emplace(std::make_pair(tensor, dim), static_cast<int>(nodes_.size()));
  if (!inserted) {
    SliceNode& existing = nodes_[it->second];
    if (existing.units != units) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", tensor, " dim ", dim, " was added twice with different units (",
                       existing.units.size(), " vs ", units.size(), ")"));
    }
    if (std::find(existing.sites.begin(), existing.sites.end(), site) == existing.sites.end()) {
      existing.sites.push_back(site);
    }
    return it->second;
  }
  SliceNode node;
  node.tensor = tensor;
  node.dim = dim;
  node.units = std::move(units);
  node.sites.push_back(site);
  node.baseline = baseline;
  nodes_.push_back(std::move(node));
  return it->second;
}

absl::Status DependencyGraph::Couple(int a, int b) {
  const int count = static_cast<int>(nodes_.size());
  if (a < 0 || b < 0 || a >= count || b >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("coupling nodes ", a, " and ", b, ": the graph has ", count, " nodes"));
  }
  if (nodes_[a].units.size() != nodes_[b].units.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("coupling ", nodes_[a].tensor, " dim ", nodes_[a].dim, " (",
                     nodes_[a].units.size(), " units) with ", nodes_[b].tensor, " dim ",
                     nodes_[b].dim, " (", nodes_[b].units.size(), " units)"));
  }
  edges_.emplace_back(a, b);
  return absl::OkStatus();
}

int DependencyGraph::Find(int id) const {
  while (parent_[id] != id) {
    parent_[id] = parent_[parent_[id]];
    id = parent_[id];
  }
  return id;
}

absl::StatusOr<std::vector<Group>> DependencyGraph::Groups() const {
  parent_.resize(nodes_.size());
  std::iota(parent_.begin(), parent_.end(), 0);
  for (const auto& [a, b] : edges_) {
    const int ra = Find(a), rb = Find(b);
    // The smaller id becomes the root, so a group is keyed by its first node.
    if (ra != rb) parent_[std::max(ra, rb)] = std::min(ra, rb);
  }
  std::vector<Group> groups;
  std::map<int, int> group_of_root;
  for (int id = 0; id < static_cast<int>(nodes_.size()); ++id) {
    const int root = Find(id);
    auto [it, inserted] = group_of_root.emplace(root, static_cast<int>(groups.size()));
    if (inserted) {
      Group group;
      group.id = it->second;
      group.kind = nodes_[id].sites.front().kind;
      group.size = static_cast<int64_t>(nodes_[id].units.size());
      auto name = group_names_.find(id);
      group.name = name != group_names_.end()
                       ? name->second
                       : absl::StrCat(nodes_[id].tensor, ":", nodes_[id].dim);
      groups.push_back(std::move(group));
    }
    Group& group = groups[it->second];
    group.nodes.push_back(id);
    for (const Site& site : nodes_[id].sites) {
      if (site.kind != group.kind) {
        return absl::FailedPreconditionError(
            absl::StrCat("group ", group.name, " mixes ", GroupKindName(group.kind), " and ",
                         GroupKindName(site.kind), " (at ", nodes_[id].tensor, ")"));
      }
      if (std::find(group.sites.begin(), group.sites.end(), site) == group.sites.end()) {
        group.sites.push_back(site);
      }
    }
  }
  for (Group& group : groups) std::sort(group.sites.begin(), group.sites.end());
  return groups;
}

nlohmann::json DependencyGraph::GroupsToJson(const std::vector<Group>& groups) const {
  nlohmann::json out = nlohmann::json::array();
  for (const Group& group : groups) {
    nlohmann::json sites = nlohmann::json::array();
    for (const Site& site : group.sites) {
      sites.push_back({{"stage", site.stage}, {"block", site.block}});
    }
    nlohmann::json members = nlohmann::json::array();
    for (int id : group.nodes) {
      const SliceNode& node = nodes_[id];
      members.push_back({{"tensor", node.tensor}, {"dim", node.dim}, {"indices", node.units}});
    }
    out.push_back({{"id", group.id},
                   {"name", group.name},
                   {"kind", GroupKindName(group.kind)},
                   {"size", group.size},
                   {"sites", std::move(sites)},
                   {"members", std::move(members)}});
  }
  return out;
}

}  // namespace compress::pipeline
