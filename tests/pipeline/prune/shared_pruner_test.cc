// Tests of the shared-model dependency graph, slicer and pruner on a tiny weight-shared Swin.
#include "worker/pipeline/prune/shared_pruner.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/pipeline/prune/prune_test_util.h"
#include "tests/pipeline/share/share_test_util.h"
#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/model/counted_ops.h"
#include "worker/pipeline/prune/importance.h"
#include "worker/pipeline/prune/shared_model_slicer.h"
#include "worker/pipeline/prune/shared_swin_graph.h"
#include "worker/pipeline/prune/swin_graph.h"
#include "worker/pipeline/share/share_from_teacher.h"
#include "worker/pipeline/share/shared_cost.h"

namespace compress::pipeline {
namespace {

using prune_testing::Calibration;
using prune_testing::CalibrationTargets;
using prune_testing::FindGroup;
using prune_testing::Graph;
using prune_testing::Images;
using prune_testing::Parameters;
using prune_testing::Randomize;
using prune_testing::RandomModel;
using prune_testing::State;
using prune_testing::TinyConfig;

// TinyConfig shared as given (default: one group of two passes per stage), both transforms on.
SharingConfig SharedConfig(std::vector<std::vector<int>> group_sizes = {{2}, {2}}) {
  SharingConfig config = DefaultSharing(TinyConfig());
  config.group_sizes = std::move(group_sizes);
  EXPECT_TRUE(config.Validate().ok()) << config.Validate();
  return config;
}

// A shared model whose every parameter (transforms included) is random.
SharedSwin RandomSharedModel(const SharingConfig& config, uint64_t seed) {
  torch::manual_seed(seed);
  absl::StatusOr<SharedSwin> model = CreateSharedSwin(config);
  EXPECT_TRUE(model.ok()) << model.status();
  Randomize(*model);
  return *model;
}

Graph BuildGraph(const SharingConfig& config, AttentionGranularity granularity) {
  return prune_testing::GroupsOf(BuildSharedSwinGraph(config, granularity));
}

// Every LayerNorm, head count, transform, bias table and merging width agrees with the config,
// and the blocks of a sharing group have equal widths.
void ExpectConsistentSharedShapes(const SharedSwin& model) {
  const SharingConfig& config = model->config();
  const SwinConfig& base = config.base;
  for (int s = 0; s < static_cast<int>(base.stages.size()); ++s) {
    const int64_t dim = base.stages[s].dim;
    if (s > 0) {
      const int64_t previous = base.stages[s - 1].dim;
      PatchMerging merge = model->stage(s)->downsample;
      EXPECT_EQ(merge->norm->weight.sizes(), torch::IntArrayRef({4 * previous}));
      EXPECT_EQ(merge->reduction->weight.sizes(), torch::IntArrayRef({dim, 4 * previous}));
    }
    for (int g = 0; g < config.num_groups(s); ++g) {
      const int first = config.group_first_block(s, g);
      const BlockWidths& widths = base.stages[s].blocks[first];
      SharedGroup group = model->group(s, g);
      WindowAttention attn = group->shared->attn;
      EXPECT_EQ(attn->num_heads(), widths.num_heads);
      EXPECT_EQ(attn->head_dim(), widths.head_dim);
      EXPECT_EQ(attn->qkv->weight.sizes(), torch::IntArrayRef({3 * widths.attn_dim(), dim}));
      EXPECT_EQ(attn->proj->weight.sizes(), torch::IntArrayRef({dim, widths.attn_dim()}));
      EXPECT_EQ(attn->relative_position_bias_table.size(1), widths.num_heads);
      Mlp mlp = group->shared->mlp;
      EXPECT_EQ(mlp->fc1->weight.sizes(), torch::IntArrayRef({widths.mlp_hidden, dim}));
      EXPECT_EQ(mlp->fc2->weight.sizes(), torch::IntArrayRef({dim, widths.mlp_hidden}));
      for (int p = 0; p < config.group_sizes[s][g]; ++p) {
        EXPECT_EQ(base.stages[s].blocks[first + p], widths);
        SharedPass pass = group->pass_list[p];
        EXPECT_EQ(pass->norm1->weight.size(0), dim);
        EXPECT_EQ(pass->norm2->weight.size(0), dim);
        const int64_t heads = widths.num_heads;
        for (torch::nn::Linear linear : {pass->proj_l, pass->proj_w}) {
          EXPECT_EQ(linear->weight.sizes(), torch::IntArrayRef({heads, heads}));
          EXPECT_EQ(linear->bias.sizes(), torch::IntArrayRef({heads}));
        }
        EXPECT_EQ(pass->mlp_transform->norm->weight.size(0), dim);
        EXPECT_EQ(pass->mlp_transform->conv->weight.sizes(),
                  torch::IntArrayRef({dim, 1, kMlpTransformKernel, kMlpTransformKernel}));
        EXPECT_EQ(pass->mlp_transform->conv->bias.size(0), dim);
      }
    }
  }
  EXPECT_EQ(model->norm->weight.size(0), base.num_features());
  EXPECT_EQ(model->head->fc->weight.sizes(),
            torch::IntArrayRef({base.num_classes, base.num_features()}));
}

TEST(SharedSwinGraphTest, GroupsCoverEverySharedWeightAndPass) {
  const SharingConfig config = SharedConfig({{1, 1}, {2}});
  SharedSwin model = RandomSharedModel(config, 1);
  for (AttentionGranularity granularity :
       {AttentionGranularity::kHeads, AttentionGranularity::kHeadDims}) {
    const bool by_heads = granularity == AttentionGranularity::kHeads;
    const Graph g = BuildGraph(config, granularity);
    // Per stage the embedding, per sharing group the MLP and the attention.
    std::vector<std::string> names;
    for (const Group& group : g.groups) names.push_back(group.name);
    const std::string attn = by_heads ? ".attn.heads" : ".attn.head_dims";
    EXPECT_EQ(names,
              (std::vector<std::string>{
                  "layers.0.embedding", "layers.0.groups.0.mlp.hidden", "layers.0.groups.0" + attn,
                  "layers.0.groups.1.mlp.hidden", "layers.0.groups.1" + attn, "layers.1.embedding",
                  "layers.1.groups.0.mlp.hidden", "layers.1.groups.0" + attn}));
    // The shared group of stage 1 sets the widths of both its blocks.
    const Group* mlp = FindGroup(g, "layers.1.groups.0.mlp.hidden");
    ASSERT_NE(mlp, nullptr);
    EXPECT_EQ(mlp->sites,
              (std::vector<Site>{{GroupKind::kMlpHidden, 1, 0}, {GroupKind::kMlpHidden, 1, 1}}));
    EXPECT_EQ(mlp->size, 128);

    // Every tensor but the classifier bias is in the graph (with head dims, the bias tables
    // and proj_l / proj_w, which do not depend on the head width, stay whole too).
    std::set<std::string> in_graph;
    for (const SliceNode& node : g.graph.nodes()) in_graph.insert(node.tensor);
    for (const auto& [name, tensor] : model->StateDict()) {
      const bool head_only = name.find("relative_position_bias_table") != std::string::npos ||
                             name.find("proj_l") != std::string::npos ||
                             name.find("proj_w") != std::string::npos;
      const bool expected = name != "head.fc.bias" && (by_heads || !head_only);
      EXPECT_EQ(in_graph.count(name) == 1, expected) << name;
    }
    // Only the attention transforms' weights, which start at the identity, are measured from it.
    for (const SliceNode& node : g.graph.nodes()) {
      const bool transform = absl::EndsWith(node.tensor, "proj_l.weight") ||
                             absl::EndsWith(node.tensor, "proj_w.weight");
      EXPECT_EQ(node.baseline, transform ? Baseline::kIdentity : Baseline::kZero) << node.tensor;
    }
  }
}

TEST(SharedPrunerTest, PruningNothingKeepsTheOutputs) {
  const SharingConfig config = SharedConfig();
  SharedSwin model = RandomSharedModel(config, 2);
  const torch::Tensor images = Images(config.base, 2, 2);
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = model->forward(images);

  const Graph g = BuildGraph(config, AttentionGranularity::kHeads);
  absl::StatusOr<SlicedSharedModel> copy =
      SliceSharedSwinModel(model, g.graph, g.groups, AllUnits(g.groups));
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ(copy->config, config);
  EXPECT_TRUE(torch::equal(copy->model->forward(images), expected));

  PruneOptions options;
  options.target_reduction = 0.0;
  absl::StatusOr<SharedPruneResult> pruned = PruneSharedSwin(model, options, nullptr);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(pruned->config, config);
  pruned->model->eval();
  EXPECT_TRUE(torch::equal(pruned->model->forward(images), expected));
  EXPECT_EQ(pruned->plan.macs_after, pruned->plan.macs_before);
  // The model given is left as it was.
  EXPECT_TRUE(torch::equal(model->forward(images), expected));
}

// Drops units {1, 3} (or unit 1 of a 2-unit group) of one group and checks every tensor.
void ExpectSharedGroupSlicesRemoved(const SharedSwin& model, AttentionGranularity granularity,
                                    const std::string& group_name) {
  const Graph g = BuildGraph(model->config(), granularity);
  prune_testing::ExpectGroupSlicesRemoved(
      model, g, group_name,
      [&](const std::vector<std::vector<int64_t>>& kept) {
        return SliceSharedSwinModel(model, g.graph, g.groups, kept);
      },
      ExpectConsistentSharedShapes);
}

TEST(SharedPrunerTest, PruningOneGroupRemovesExactlyItsMembersSlices) {
  const SharingConfig config = SharedConfig({{1, 1}, {2}});
  SharedSwin model = RandomSharedModel(config, 3);
  ExpectSharedGroupSlicesRemoved(model, AttentionGranularity::kHeads, "layers.0.embedding");
  ExpectSharedGroupSlicesRemoved(model, AttentionGranularity::kHeads, "layers.1.embedding");
  ExpectSharedGroupSlicesRemoved(model, AttentionGranularity::kHeads,
                                 "layers.1.groups.0.mlp.hidden");
  ExpectSharedGroupSlicesRemoved(model, AttentionGranularity::kHeads,
                                 "layers.1.groups.0.attn.heads");
  ExpectSharedGroupSlicesRemoved(model, AttentionGranularity::kHeads,
                                 "layers.0.groups.1.attn.heads");
  ExpectSharedGroupSlicesRemoved(model, AttentionGranularity::kHeadDims,
                                 "layers.1.groups.0.attn.head_dims");
}

TEST(SharedPrunerTest, PruningAHeadCutsQkvProjBiasTableAndEveryPassTransform) {
  const SharingConfig config = SharedConfig();
  SharedSwin model = RandomSharedModel(config, 4);
  const Graph g = BuildGraph(config, AttentionGranularity::kHeads);
  const Group* heads = FindGroup(g, "layers.1.groups.0.attn.heads");
  ASSERT_NE(heads, nullptr);
  ASSERT_EQ(heads->size, 4);
  // Exactly these members: the shared qkv, proj and bias table, and both passes' transforms.
  std::set<std::pair<std::string, int>> members;
  for (int id : heads->nodes) members.emplace(g.graph.node(id).tensor, g.graph.node(id).dim);
  const std::string group = "layers.1.groups.0.";
  std::set<std::pair<std::string, int>> expected = {
      {group + "shared.attn.qkv.weight", 0},
      {group + "shared.attn.qkv.bias", 0},
      {group + "shared.attn.proj.weight", 1},
      {group + "shared.attn.relative_position_bias_table", 1}};
  for (const char* pass : {"passes.0.", "passes.1."}) {
    for (const char* linear : {"proj_l.", "proj_w."}) {
      expected.insert({group + pass + linear + "weight", 0});
      expected.insert({group + pass + linear + "weight", 1});
      expected.insert({group + pass + linear + "bias", 0});
    }
  }
  EXPECT_EQ(members, expected);

  // Remove head 1 of 4 (head_dim 8, attention width 32).
  std::vector<std::vector<int64_t>> kept = AllUnits(g.groups);
  kept[heads->id] = {0, 2, 3};
  absl::StatusOr<SlicedSharedModel> sliced = SliceSharedSwinModel(model, g.graph, g.groups, kept);
  ASSERT_TRUE(sliced.ok()) << sliced.status();
  ExpectConsistentSharedShapes(sliced->model);
  EXPECT_EQ(sliced->config.base.stages[1].blocks[0].num_heads, 3);
  EXPECT_EQ(sliced->config.base.stages[1].blocks[1].num_heads, 3);

  std::vector<int64_t> qkv_rows, proj_columns;
  for (int64_t t = 0; t < 3; ++t) {
    for (int64_t h : {0, 2, 3}) {
      for (int64_t i = 0; i < 8; ++i) qkv_rows.push_back(t * 32 + h * 8 + i);
    }
  }
  for (int64_t h : {0, 2, 3}) {
    for (int64_t i = 0; i < 8; ++i) proj_columns.push_back(h * 8 + i);
  }
  const torch::Tensor rows = torch::tensor(qkv_rows, torch::kLong);
  const torch::Tensor columns = torch::tensor(proj_columns, torch::kLong);
  const torch::Tensor kept_heads = torch::tensor(std::vector<int64_t>{0, 2, 3}, torch::kLong);
  WindowAttention before = model->group(1, 0)->shared->attn;
  WindowAttention after = sliced->model->group(1, 0)->shared->attn;
  EXPECT_TRUE(torch::equal(after->qkv->weight, before->qkv->weight.index_select(0, rows)));
  EXPECT_TRUE(torch::equal(after->qkv->bias, before->qkv->bias.index_select(0, rows)));
  EXPECT_TRUE(torch::equal(after->proj->weight, before->proj->weight.index_select(1, columns)));
  EXPECT_TRUE(torch::equal(after->proj->bias, before->proj->bias));
  EXPECT_TRUE(torch::equal(after->relative_position_bias_table,
                           before->relative_position_bias_table.index_select(1, kept_heads)));
  for (int p = 0; p < 2; ++p) {
    SharedPass old_pass = model->group(1, 0)->pass_list[p];
    SharedPass new_pass = sliced->model->group(1, 0)->pass_list[p];
    EXPECT_TRUE(torch::equal(
        new_pass->proj_l->weight,
        old_pass->proj_l->weight.index_select(0, kept_heads).index_select(1, kept_heads)));
    EXPECT_TRUE(
        torch::equal(new_pass->proj_l->bias, old_pass->proj_l->bias.index_select(0, kept_heads)));
    EXPECT_TRUE(torch::equal(
        new_pass->proj_w->weight,
        old_pass->proj_w->weight.index_select(0, kept_heads).index_select(1, kept_heads)));
    EXPECT_TRUE(
        torch::equal(new_pass->proj_w->bias, old_pass->proj_w->bias.index_select(0, kept_heads)));
  }
  // The other stage is untouched.
  EXPECT_TRUE(torch::equal(sliced->model->group(0, 0)->shared->attn->qkv->weight,
                           model->group(0, 0)->shared->attn->qkv->weight));
  const torch::Tensor images = Images(config.base, 2, 5);
  torch::NoGradGuard no_grad;
  EXPECT_EQ(sliced->model->forward(images).sizes(), torch::IntArrayRef({2, 5}));
}

class SharedRatioTest : public ::testing::TestWithParam<double> {};

TEST_P(SharedRatioTest, PrunedSharedModelRunsAndMeetsTheMacTarget) {
  const double ratio = GetParam();
  const SharingConfig config = SharedConfig();
  SharedSwin model = RandomSharedModel(config, 11);
  PruneOptions options;
  options.target_reduction = ratio;
  options.steps = 3;
  absl::StatusOr<SharedPruneResult> result = PruneSharedSwin(model, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectConsistentSharedShapes(result->model);
  EXPECT_EQ(result->model->config(), result->config);
  EXPECT_EQ(result->config.group_sizes, config.group_sizes);
  EXPECT_EQ(result->plan.config_after, result->config.base);

  // Within +-1% of the target by the analytic counter...
  absl::StatusOr<SharedCost> before = AnalyzeSharedCost(config);
  absl::StatusOr<SharedCost> after = AnalyzeSharedCost(result->config);
  ASSERT_TRUE(before.ok() && after.ok());
  const double goal = (1.0 - ratio) * static_cast<double>(before->total.macs);
  EXPECT_LE(std::abs(static_cast<double>(after->total.macs) - goal),
            0.01 * static_cast<double>(before->total.macs));
  EXPECT_EQ(result->plan.macs_before, before->total.macs);
  EXPECT_EQ(result->plan.macs_after, after->total.macs);
  EXPECT_EQ(result->plan.params_after, after->params);
  RecordProperty("macs_before", std::to_string(before->total.macs));
  RecordProperty("macs_after", std::to_string(after->total.macs));
  RecordProperty("params_before", std::to_string(before->params));
  RecordProperty("params_after", std::to_string(after->params));
  // ... and by counting the operations the pruned model actually runs.
  result->model->eval();
  {
    torch::NoGradGuard no_grad;
    MacCounter counter;
    result->model->forward(Images(config.base, 1, 12));
    EXPECT_EQ(counter.count().macs, after->total.macs);
  }

  // Forward and backward run; every parameter gets a finite gradient.
  result->model->train();
  torch::Tensor logits = result->model->forward(Images(config.base, 2, 13));
  ASSERT_EQ(logits.sizes(), torch::IntArrayRef({2, config.base.num_classes}));
  torch::nn::functional::cross_entropy(logits, torch::tensor({0, 3}, torch::kLong)).backward();
  for (const auto& item : result->model->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_TRUE(torch::isfinite(item.value().grad()).all().item<bool>()) << item.key();
  }

  // What the steps removed plus what is kept is every unit of every group.
  const PrunePlan& plan = result->plan;
  ASSERT_EQ(plan.steps.size(), 3u);
  std::vector<std::set<int64_t>> seen(plan.groups.size());
  for (const PruneStepRecord& step : plan.steps) {
    for (const GroupRemoval& removal : step.removed) {
      for (int64_t u : removal.units) EXPECT_TRUE(seen[removal.group].insert(u).second);
    }
  }
  for (const Group& group : plan.groups) {
    for (int64_t u : plan.kept[group.id]) EXPECT_TRUE(seen[group.id].insert(u).second);
    EXPECT_EQ(static_cast<int64_t>(seen[group.id].size()), group.size) << group.name;
  }
  EXPECT_EQ(plan.ToJson()["groups"].size(), plan.groups.size());
}

INSTANTIATE_TEST_SUITE_P(Ratios, SharedRatioTest, ::testing::Values(0.1, 0.3, 0.5, 0.7));

TEST(SharedPrunerTest, SeveralGroupsPerStageHeadDimsLocalRankingAndParamsTarget) {
  const SharingConfig config = SharedConfig({{1, 1}, {2}});
  SharedSwin model = RandomSharedModel(config, 21);
  PruneOptions options;
  options.target_reduction = 0.4;
  options.attention = AttentionGranularity::kHeadDims;
  options.ranking = PruneRanking::kLocal;
  options.round_to = 2;
  absl::StatusOr<SharedPruneResult> local = PruneSharedSwin(model, options, nullptr);
  ASSERT_TRUE(local.ok()) << local.status();
  ExpectConsistentSharedShapes(local->model);
  EXPECT_NEAR(local->plan.achieved_reduction, 0.4, 0.01);

  options.metric = PruneMetric::kParams;
  options.round_to = 8;
  options.attention = AttentionGranularity::kHeads;
  options.ranking = PruneRanking::kGlobal;
  absl::StatusOr<SharedPruneResult> params = PruneSharedSwin(model, options, nullptr);
  ASSERT_TRUE(params.ok()) << params.status();
  ExpectConsistentSharedShapes(params->model);
  absl::StatusOr<SharedCost> before = AnalyzeSharedCost(config);
  absl::StatusOr<SharedCost> after = AnalyzeSharedCost(params->config);
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_NEAR(1.0 - static_cast<double>(after->params) / static_cast<double>(before->params), 0.4,
              0.01);
}

TEST(SharedPrunerTest, SaveLoadRoundTripOfAPrunedSharedModel) {
  const SharingConfig config = SharedConfig({{1, 1}, {2}});
  SharedSwin model = RandomSharedModel(config, 31);
  PruneOptions options;
  options.target_reduction = 0.45;
  absl::StatusOr<SharedPruneResult> result = PruneSharedSwin(model, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const std::string dir =
      (std::filesystem::temp_directory_path() / "compress_shared_pruner_test_round_trip").string();
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(SaveSharedModel(dir, result->model).ok());
  absl::StatusOr<SharedSwin> loaded = LoadSharedModel(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->config(), result->config);
  result->model->eval();
  (*loaded)->eval();
  const torch::Tensor images = Images(config.base, 2, 32);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal((*loaded)->forward(images), result->model->forward(images)));
  std::filesystem::remove_all(dir);
}

TEST(SharedPrunerTest, TaylorImportanceOfASharedWeightCountsEveryPass) {
  // A shared model made from a teacher whose grouped blocks are equal computes what the
  // teacher computes; the gradient of a shared tensor is then the sum of the gradients of the
  // teacher's copies, one per pass, and so is its Taylor score's |w * dL/dw|.
  const SwinConfig base = TinyConfig();
  SwinTransformer teacher = RandomModel(base, 61);
  absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, SharingOptions());
  ASSERT_TRUE(shared.ok()) << shared.status();
  testing::EqualiseGroups(teacher, (*shared)->config());
  teacher->eval();
  (*shared)->eval();

  const torch::Tensor inputs = Images(base, 32, 7).slice(0, 0, 8);
  const torch::Tensor targets = CalibrationTargets(base).slice(0, 0, 8);
  {
    torch::NoGradGuard no_grad;
    ASSERT_TRUE(torch::allclose((*shared)->forward(inputs), teacher->forward(inputs), 1e-4, 1e-5));
  }

  const Graph g = BuildGraph((*shared)->config(), AttentionGranularity::kHeads);
  const Group* hidden = FindGroup(g, "layers.0.groups.0.mlp.hidden");
  ASSERT_NE(hidden, nullptr);
  ImportanceOptions taylor;
  taylor.criterion = ImportanceCriterion::kTaylor;
  taylor.calibration_batches = 1;
  SharedSwin model = *shared;
  CalibrationLoss loss = [model](const TrainBatch& batch) mutable {
    return torch::nn::functional::cross_entropy(model->forward(batch.inputs), batch.targets);
  };
  std::unique_ptr<TensorBatchSource> source = Calibration(base);
  absl::StatusOr<GroupScores> scores =
      ComputeImportance(Parameters(model), g.graph, g.groups, taylor, loss, source.get());
  ASSERT_TRUE(scores.ok()) << scores.status();

  torch::nn::functional::cross_entropy(teacher->forward(inputs), targets).backward();
  Mlp first = teacher->block(0, 0)->mlp;
  Mlp second = teacher->block(0, 1)->mlp;
  // Score of hidden unit j from the weights and gradients of the given passes.
  auto score = [&](bool both, int64_t j) {
    double sum = 0.0;
    auto add = [&](const torch::Tensor& w, const torch::Tensor& g0, const torch::Tensor& g1) {
      const torch::Tensor grad = both ? g0 + g1 : g0;
      sum += (w * grad).abs().sum().item<double>();
    };
    add(first->fc1->weight[j], first->fc1->weight.grad()[j], second->fc1->weight.grad()[j]);
    add(first->fc1->bias[j], first->fc1->bias.grad()[j], second->fc1->bias.grad()[j]);
    add(first->fc2->weight.select(1, j), first->fc2->weight.grad().select(1, j),
        second->fc2->weight.grad().select(1, j));
    return sum;
  };
  double differs = 0.0;
  for (int64_t j = 0; j < hidden->size; ++j) {
    const double both = score(true, j);
    EXPECT_NEAR((*scores)[hidden->id][j], both, 1e-4 * both + 1e-9) << j;
    differs = std::max(differs, std::abs(both - score(false, j)) / (both + 1e-12));
  }
  // The second pass's share is not negligible: one pass alone would give other scores.
  EXPECT_GT(differs, 0.05);
}

// L2 scores of every group of `g` for `parameters`.
GroupScores L2Scores(const NamedTensors& parameters, const Graph& g) {
  absl::StatusOr<GroupScores> scores =
      ComputeImportance(parameters, g.graph, g.groups, ImportanceOptions(), nullptr, nullptr);
  EXPECT_TRUE(scores.ok()) << scores.status();
  return scores.ok() ? *scores : GroupScores(g.groups.size());
}

TEST(SharedPrunerTest, L2ImportanceMeasuresTheAttentionTransformsFromTheIdentity) {
  // Shared from a teacher, each group's shared weights are its first block's and every
  // transform is the identity: each head scores what the teacher's first block gives it.
  const SwinConfig base = TinyConfig();
  SwinTransformer teacher = RandomModel(base, 71);
  absl::StatusOr<SharedSwin> shared = ShareFromTeacher(teacher, SharingOptions());
  ASSERT_TRUE(shared.ok()) << shared.status();
  SharedSwin model = *shared;
  const SharingConfig& config = model->config();
  ASSERT_EQ(config.group_sizes, (std::vector<std::vector<int>>{{2}, {2}}));
  ASSERT_TRUE(config.attention_transform);

  const Graph plain = prune_testing::GroupsOf(BuildSwinGraph(base, AttentionGranularity::kHeads));
  const GroupScores teacher_scores = L2Scores(Parameters(teacher), plain);
  const Graph g = BuildGraph(config, AttentionGranularity::kHeads);
  for (int s = 0; s < 2; ++s) {
    const Group* heads = FindGroup(g, absl::StrCat("layers.", s, ".groups.0.attn.heads"));
    const Group* block = FindGroup(plain, absl::StrCat("layers.", s, ".blocks.0.attn.heads"));
    ASSERT_NE(heads, nullptr);
    ASSERT_NE(block, nullptr);
    ASSERT_EQ(heads->size, block->size);
    const GroupScores scores = L2Scores(Parameters(model), g);
    for (int64_t h = 0; h < heads->size; ++h) {
      const double expected = teacher_scores[block->id][h];
      EXPECT_NEAR(scores[heads->id][h], expected, 1e-12 * expected) << s << " " << h;
    }
  }

  // Away from the identity, a transform adds its row and column of W - I and its bias.
  torch::manual_seed(72);
  SharedGroup group = model->group(1, 0);
  {
    torch::NoGradGuard no_grad;
    for (SharedPass pass : group->pass_list) {
      for (torch::nn::Linear linear : {pass->proj_l, pass->proj_w}) {
        linear->weight.add_(torch::randn_like(linear->weight) * 0.1);
        linear->bias.copy_(torch::randn_like(linear->bias) * 0.1);
      }
    }
  }
  const Group* heads = FindGroup(g, "layers.1.groups.0.attn.heads");
  const Group* block = FindGroup(plain, "layers.1.blocks.0.attn.heads");
  const GroupScores scores = L2Scores(Parameters(model), g);
  for (int64_t h = 0; h < heads->size; ++h) {
    double squared = std::pow(teacher_scores[block->id][h], 2);
    for (SharedPass pass : group->pass_list) {
      for (torch::nn::Linear linear : {pass->proj_l, pass->proj_w}) {
        const torch::Tensor offset =
            linear->weight.detach().to(torch::kDouble) - torch::eye(heads->size, torch::kDouble);
        squared += offset[h].square().sum().item<double>() +
                   offset.select(1, h).square().sum().item<double>() +
                   std::pow(linear->bias[h].item<double>(), 2);
      }
    }
    EXPECT_NEAR(scores[heads->id][h], std::sqrt(squared), 1e-9 * std::sqrt(squared)) << h;
  }
}

TEST(SharedPrunerTest, L2ImportanceOfEqualHeadsDoesNotGrowWithPasses) {
  // Stage 0 has a sharing group of one pass and one of two, with equal attention weights and
  // identity transforms: their heads score the same, before and after per-kind normalisation.
  SharingConfig config = DefaultSharing(TinyConfig({3, 2}));
  config.group_sizes = {{1, 2}, {2}};
  ASSERT_TRUE(config.Validate().ok()) << config.Validate();
  SharedSwin model = RandomSharedModel(config, 81);
  {
    torch::NoGradGuard no_grad;
    WindowAttention source = model->group(0, 0)->shared->attn;
    WindowAttention target = model->group(0, 1)->shared->attn;
    target->qkv->weight.copy_(source->qkv->weight);
    target->qkv->bias.copy_(source->qkv->bias);
    target->proj->weight.copy_(source->proj->weight);
    target->relative_position_bias_table.copy_(source->relative_position_bias_table);
  }
  for (int s = 0; s < 2; ++s) {
    for (int g = 0; g < config.num_groups(s); ++g) {
      for (SharedPass pass : model->group(s, g)->pass_list) pass->ResetTransformsToIdentity();
    }
  }

  const Graph g = BuildGraph(config, AttentionGranularity::kHeads);
  const Group* one = FindGroup(g, "layers.0.groups.0.attn.heads");
  const Group* two = FindGroup(g, "layers.0.groups.1.attn.heads");
  ASSERT_NE(one, nullptr);
  ASSERT_NE(two, nullptr);
  ASSERT_EQ(one->sites.size(), 1u);
  ASSERT_EQ(two->sites.size(), 2u);
  GroupScores scores = L2Scores(Parameters(model), g);
  ASSERT_EQ(scores[one->id].size(), 2u);
  for (bool normalised : {false, true}) {
    if (normalised) NormalizePerKind(g.groups, scores);
    for (int64_t h = 0; h < 2; ++h) {
      EXPECT_NEAR(scores[two->id][h], scores[one->id][h], 1e-12 * scores[one->id][h])
          << (normalised ? "normalised, head " : "head ") << h;
    }
  }
}

TEST(SharedPrunerTest, L2ImportanceNeedsASquareMatrixToMeasureFromTheIdentity) {
  DependencyGraph graph;
  ASSERT_TRUE(
      graph.AddNode("w", 0, {{0}, {1}}, Site{GroupKind::kHeads, 0, 0}, Baseline::kIdentity).ok());
  absl::StatusOr<std::vector<Group>> groups = graph.Groups();
  ASSERT_TRUE(groups.ok());
  const NamedTensors parameters = {{"w", torch::zeros({2, 3})}};
  EXPECT_EQ(ComputeImportance(parameters, graph, *groups, ImportanceOptions(), nullptr, nullptr)
                .status()
                .code(),
            absl::StatusCode::kInternal);
}

TEST(SharedPrunerTest, RejectsBadOptionsAndUnreachableTargets) {
  const SharingConfig config = SharedConfig();
  SharedSwin model = RandomSharedModel(config, 51);
  PruneOptions options;
  options.target_reduction = 1.0;
  EXPECT_EQ(PruneSharedSwin(model, options, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.target_reduction = 0.9;
  options.prune_embedding = false;
  options.prune_attention = false;
  EXPECT_EQ(PruneSharedSwin(model, options, nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
  options = PruneOptions();
  options.importance.criterion = ImportanceCriterion::kTaylor;
  EXPECT_EQ(PruneSharedSwin(model, options, nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace compress::pipeline
