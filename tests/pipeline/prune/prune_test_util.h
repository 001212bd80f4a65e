// Tiny Swin configs and helpers shared by the prune-stage tests.
#ifndef COMPRESS_TESTS_PIPELINE_PRUNE_PRUNE_TEST_UTIL_H_
#define COMPRESS_TESTS_PIPELINE_PRUNE_PRUNE_TEST_UTIL_H_

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/model/swin_config.h"
#include "worker/pipeline/prune/dependency_graph.h"
#include "worker/pipeline/prune/tensor_slicing.h"
#include "worker/pipeline/train/batch_source.h"

namespace compress::pipeline::prune_testing {

// 32x32x3, patch 2, window 4: stage 0 at 16x16 (shifted windows), stage 1 at 8x8, widths 16
// and 32, heads 2 and 4 of 8, MLP 64 and 128; `depths` blocks per stage.
inline SwinConfig TinyConfig(std::vector<int> depths = {2, 2}) {
  UniformSwinOptions options;
  options.image_size = 32;
  options.in_channels = 3;
  options.num_classes = 5;
  options.patch_size = 2;
  options.window_size = 4;
  options.embed_dim = 16;
  options.depths = std::move(depths);
  options.num_heads = {2, 4};
  options.drop_path_rate = 0.0;
  absl::StatusOr<SwinConfig> config = MakeUniformSwinConfig(options);
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

// Sets every parameter of `model` to random values (from torch's global generator), so that
// each channel of a norm differs, and puts it in eval mode.
template <typename Model>
void Randomize(Model& model) {
  torch::NoGradGuard no_grad;
  for (auto& parameter : model->parameters()) parameter.copy_(torch::randn_like(parameter) * 0.2);
  model->eval();
}

// A model whose every parameter is random.
inline SwinTransformer RandomModel(const SwinConfig& config, uint64_t seed) {
  torch::manual_seed(seed);
  absl::StatusOr<SwinTransformer> model = CreateSwinTransformer(config);
  EXPECT_TRUE(model.ok()) << model.status();
  Randomize(*model);
  return *model;
}

inline torch::Tensor Images(const SwinConfig& config, int batch, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randn({batch, config.in_channels, config.image_size, config.image_size});
}

inline torch::Tensor CalibrationTargets(const SwinConfig& config) {
  return torch::arange(32, torch::kLong) % config.num_classes;
}

// 32 images in batches of 8, in order: the first batch is Images(config, 32, 7)[0:8].
inline std::unique_ptr<TensorBatchSource> Calibration(const SwinConfig& config) {
  TensorBatchSourceOptions options;
  options.batch_size = 8;
  options.shuffle = false;
  absl::StatusOr<std::unique_ptr<TensorBatchSource>> source =
      TensorBatchSource::Create(Images(config, 32, 7), CalibrationTargets(config), options);
  EXPECT_TRUE(source.ok()) << source.status();
  return std::move(*source);
}

// A copy of the model's state.
template <typename Model>
std::map<std::string, torch::Tensor> State(const Model& model) {
  std::map<std::string, torch::Tensor> state;
  for (auto& [name, tensor] : model->StateDict()) state.emplace(name, tensor.detach().clone());
  return state;
}

template <typename Model>
NamedTensors Parameters(const Model& model) {
  NamedTensors parameters;
  for (const auto& item : model->named_parameters()) {
    parameters.emplace_back(item.key(), item.value());
  }
  return parameters;
}

struct Graph {
  DependencyGraph graph;
  std::vector<Group> groups;
};

inline Graph GroupsOf(absl::StatusOr<DependencyGraph> graph) {
  EXPECT_TRUE(graph.ok()) << graph.status();
  absl::StatusOr<std::vector<Group>> groups = graph->Groups();
  EXPECT_TRUE(groups.ok()) << groups.status();
  return {*graph, *groups};
}

inline const Group* FindGroup(const Graph& g, const std::string& name) {
  for (const Group& group : g.groups) {
    if (group.name == name) return &group;
  }
  return nullptr;
}

// Drops units {1, 3} (or unit 1 of a 2-unit group) of the group named `group_name` of `g` (the
// graph of `model`) with `slice` (kept units -> StatusOr of a struct with a `model`), checks
// the sliced model with `check_shapes`, and checks that every tensor of the group's members
// lost exactly those units' indices along each pruned dim and that every other tensor is
// unchanged.
template <typename Model, typename Slice, typename CheckShapes>
void ExpectGroupSlicesRemoved(const Model& model, const Graph& g, const std::string& group_name,
                              Slice slice, CheckShapes check_shapes) {
  const Group* target = FindGroup(g, group_name);
  ASSERT_NE(target, nullptr) << group_name;
  std::vector<std::vector<int64_t>> kept = AllUnits(g.groups);
  std::set<int64_t> dropped = target->size > 2 ? std::set<int64_t>{1, 3} : std::set<int64_t>{1};
  kept[target->id].clear();
  for (int64_t u = 0; u < target->size; ++u) {
    if (dropped.count(u) == 0) kept[target->id].push_back(u);
  }
  auto sliced = slice(kept);
  ASSERT_TRUE(sliced.ok()) << sliced.status();
  check_shapes(sliced->model);

  std::map<std::string, std::map<int, std::vector<int64_t>>> cut;
  std::map<std::string, std::map<int, int64_t>> removed;  // indices dropped along each dim
  for (int id : target->nodes) {
    const SliceNode& node = g.graph.node(id);
    std::vector<int64_t> indices;
    for (int64_t u : kept[target->id]) {
      indices.insert(indices.end(), node.units[u].begin(), node.units[u].end());
    }
    std::sort(indices.begin(), indices.end());
    cut[node.tensor][node.dim] = indices;
    for (int64_t u : dropped) removed[node.tensor][node.dim] += node.units[u].size();
  }
  const std::map<std::string, torch::Tensor> before = State(model);
  int changed = 0;
  for (const auto& [name, tensor] : State(sliced->model)) {
    torch::Tensor expected = before.at(name);
    if (auto it = cut.find(name); it != cut.end()) {
      ++changed;
      for (const auto& [dim, indices] : it->second) {
        EXPECT_EQ(expected.size(dim) - tensor.size(dim), removed[name][dim]) << name;
        expected = expected.index_select(dim, torch::tensor(indices, torch::kLong));
      }
      // Cut head dims keep their attention scale through the queries (KeepAttentionScale).
      if (target->kind == GroupKind::kHeadDims &&
          (absl::EndsWith(name, "qkv.weight") || absl::EndsWith(name, "qkv.bias"))) {
        torch::NoGradGuard no_grad;
        expected.narrow(0, 0, expected.size(0) / 3)
            .mul_(std::sqrt(static_cast<double>(kept[target->id].size()) /
                            static_cast<double>(target->size)));
      }
    }
    EXPECT_TRUE(torch::equal(tensor, expected)) << group_name << ": " << name;
  }
  EXPECT_EQ(changed, static_cast<int>(cut.size()));
}

}  // namespace compress::pipeline::prune_testing

#endif  // COMPRESS_TESTS_PIPELINE_PRUNE_PRUNE_TEST_UTIL_H_
