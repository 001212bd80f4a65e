// Tests of importance, slicing and the iterative pruner on a tiny Swin.
#include "worker/pipeline/prune/pruner.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>
#include <string>

#include "nlohmann/json.hpp"
#include "tests/pipeline/prune/prune_test_util.h"
#include "worker/pipeline/checkpoint/model_io.h"
#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/prune/importance.h"
#include "worker/pipeline/prune/model_slicer.h"
#include "worker/pipeline/prune/swin_graph.h"
#include "worker/pipeline/train/batch_source.h"

namespace compress::pipeline {
namespace {

using prune_testing::Calibration;
using prune_testing::Graph;
using prune_testing::Images;
using prune_testing::RandomModel;
using prune_testing::State;
using prune_testing::TinyConfig;

Graph BuildGraph(const SwinConfig& config, AttentionGranularity granularity) {
  return prune_testing::GroupsOf(BuildSwinGraph(config, granularity));
}

// Every LayerNorm, head count, bias table and merging width agrees with the config.
void ExpectConsistentShapes(const SwinTransformer& model) {
  const SwinConfig& config = model->config();
  for (int s = 0; s < model->num_stages(); ++s) {
    const int64_t dim = config.stages[s].dim;
    if (s > 0) {
      const int64_t previous = config.stages[s - 1].dim;
      PatchMerging merge = model->stage(s)->downsample;
      EXPECT_EQ(merge->norm->weight.sizes(), torch::IntArrayRef({4 * previous}));
      EXPECT_EQ(merge->reduction->weight.sizes(), torch::IntArrayRef({dim, 4 * previous}));
    }
    for (int b = 0; b < static_cast<int>(config.stages[s].blocks.size()); ++b) {
      const BlockWidths& widths = config.stages[s].blocks[b];
      SwinBlock block = model->block(s, b);
      EXPECT_EQ(block->norm1->weight.size(0), dim);
      EXPECT_EQ(block->norm2->weight.size(0), dim);
      EXPECT_EQ(block->attn->num_heads(), widths.num_heads);
      EXPECT_EQ(block->attn->head_dim(), widths.head_dim);
      EXPECT_EQ(block->attn->qkv->weight.sizes(), torch::IntArrayRef({3 * widths.attn_dim(), dim}));
      EXPECT_EQ(block->attn->proj->weight.sizes(), torch::IntArrayRef({dim, widths.attn_dim()}));
      EXPECT_EQ(block->attn->relative_position_bias_table.size(1), widths.num_heads);
      EXPECT_EQ(block->mlp->fc1->weight.sizes(), torch::IntArrayRef({widths.mlp_hidden, dim}));
      EXPECT_EQ(block->mlp->fc2->weight.sizes(), torch::IntArrayRef({dim, widths.mlp_hidden}));
    }
  }
  EXPECT_EQ(model->norm->weight.size(0), config.num_features());
  EXPECT_EQ(model->head->fc->weight.sizes(),
            torch::IntArrayRef({config.num_classes, config.num_features()}));
}

TEST(PrunerTest, PruningNothingKeepsTheOutputs) {
  const SwinConfig config = TinyConfig();
  SwinTransformer model = RandomModel(config, 1);
  const torch::Tensor images = Images(config, 2, 2);
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = model->forward(images);

  Graph g = BuildGraph(config, AttentionGranularity::kHeads);
  absl::StatusOr<SlicedModel> copy = SliceSwinModel(model, g.graph, g.groups, AllUnits(g.groups));
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ(copy->config, config);
  EXPECT_TRUE(torch::equal(copy->model->forward(images), expected));

  PruneOptions options;
  options.target_reduction = 0.0;
  absl::StatusOr<PruneResult> pruned = PruneSwin(model, options, nullptr);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(pruned->config, config);
  pruned->model->eval();
  EXPECT_TRUE(torch::equal(pruned->model->forward(images), expected));
  EXPECT_EQ(pruned->plan.macs_after, pruned->plan.macs_before);
}

// Drops units {1, 3} (or unit 1 of a 2-unit group) of one group and checks every tensor.
void ExpectGroupSlicesRemoved(const SwinTransformer& model, AttentionGranularity granularity,
                              const std::string& group_name) {
  const Graph g = BuildGraph(model->config(), granularity);
  prune_testing::ExpectGroupSlicesRemoved(
      model, g, group_name,
      [&](const std::vector<std::vector<int64_t>>& kept) {
        return SliceSwinModel(model, g.graph, g.groups, kept);
      },
      ExpectConsistentShapes);
}

TEST(PrunerTest, PruningOneGroupRemovesExactlyItsMembersSlices) {
  const SwinConfig config = TinyConfig();
  SwinTransformer model = RandomModel(config, 3);
  ExpectGroupSlicesRemoved(model, AttentionGranularity::kHeads, "layers.0.embedding");
  ExpectGroupSlicesRemoved(model, AttentionGranularity::kHeads, "layers.1.embedding");
  ExpectGroupSlicesRemoved(model, AttentionGranularity::kHeads, "layers.0.blocks.1.mlp.hidden");
  ExpectGroupSlicesRemoved(model, AttentionGranularity::kHeads, "layers.1.blocks.0.attn.heads");
  ExpectGroupSlicesRemoved(model, AttentionGranularity::kHeadDims,
                           "layers.0.blocks.1.attn.head_dims");
}

TEST(PrunerTest, SlicedQkvKeepsTheRemainingHeadsComputation) {
  // Removing a head changes the block's output by exactly that head's share of proj: the
  // remaining heads' attention is computed from the same rows of Q, K and V.
  const SwinConfig config = TinyConfig();
  SwinTransformer model = RandomModel(config, 4);
  Graph g = BuildGraph(config, AttentionGranularity::kHeads);
  std::vector<std::vector<int64_t>> kept = AllUnits(g.groups);
  int heads_group = -1;
  for (const Group& group : g.groups) {
    if (group.name == "layers.1.blocks.0.attn.heads") heads_group = group.id;
  }
  ASSERT_GE(heads_group, 0);
  kept[heads_group] = {0, 2, 3};
  absl::StatusOr<SlicedModel> sliced = SliceSwinModel(model, g.graph, g.groups, kept);
  ASSERT_TRUE(sliced.ok()) << sliced.status();
  // Zeroing head 1's proj columns in the original gives the same function.
  {
    torch::NoGradGuard no_grad;
    model->block(1, 0)->attn->proj->weight.slice(1, 8, 16).zero_();
  }
  const torch::Tensor images = Images(config, 2, 5);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(sliced->model->forward(images), model->forward(images), 1e-5, 1e-5));
}

TEST(PrunerTest, RemovedHeadDimsComputeWhatZeroingThemDid) {
  // Cutting positions {1, 3} of every head of a block (head_dim 8 -> 6) equals zeroing them in
  // Q, K and the proj columns of the original: the attention keeps its 1/sqrt(8) scale.
  const SwinConfig config = TinyConfig();
  SwinTransformer model = RandomModel(config, 6);
  {
    // Peaked attention, so that a wrong scale shows in the logits.
    torch::NoGradGuard no_grad;
    model->block(1, 0)->attn->qkv->weight.mul_(10);
  }
  Graph g = BuildGraph(config, AttentionGranularity::kHeadDims);
  std::vector<std::vector<int64_t>> kept = AllUnits(g.groups);
  const Group* group = prune_testing::FindGroup(g, "layers.1.blocks.0.attn.head_dims");
  ASSERT_NE(group, nullptr);
  const BlockWidths widths = config.stages[1].blocks[0];
  ASSERT_EQ(group->size, widths.head_dim);
  kept[group->id].clear();
  for (int64_t p = 0; p < widths.head_dim; ++p) {
    if (p != 1 && p != 3) kept[group->id].push_back(p);
  }
  absl::StatusOr<SlicedModel> sliced = SliceSwinModel(model, g.graph, g.groups, kept);
  ASSERT_TRUE(sliced.ok()) << sliced.status();
  ASSERT_EQ(sliced->model->block(1, 0)->attn->head_dim(), widths.head_dim - 2);
  {
    torch::NoGradGuard no_grad;
    const int64_t attn = widths.attn_dim();
    for (int64_t h = 0; h < widths.num_heads; ++h) {
      for (int64_t p : {1, 3}) {
        const int64_t i = h * widths.head_dim + p;
        for (int64_t row : {i, attn + i}) {
          model->block(1, 0)->attn->qkv->weight[row].zero_();
          model->block(1, 0)->attn->qkv->bias[row].zero_();
        }
        model->block(1, 0)->attn->proj->weight.select(1, i).zero_();
      }
    }
  }
  const torch::Tensor images = Images(config, 2, 7);
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = model->forward(images);
  EXPECT_TRUE(torch::allclose(sliced->model->forward(images), expected, 1e-5, 1e-5));
  // Without the queries' rescale the block would compute something else.
  torch::Tensor qkv = sliced->model->block(1, 0)->attn->qkv->weight;
  qkv.narrow(0, 0, qkv.size(0) / 3).div_(std::sqrt(6.0 / 8.0));
  EXPECT_GT((sliced->model->forward(images) - expected).abs().max().item<float>(), 1e-4);
}

class RatioTest : public ::testing::TestWithParam<double> {};

TEST_P(RatioTest, PrunedModelRunsAndMeetsTheMacTarget) {
  const double ratio = GetParam();
  const SwinConfig config = TinyConfig();
  SwinTransformer model = RandomModel(config, 11);
  PruneOptions options;
  options.target_reduction = ratio;
  options.steps = 3;
  absl::StatusOr<PruneResult> result = PruneSwin(model, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectConsistentShapes(result->model);
  EXPECT_EQ(result->model->config(), result->config);

  // Within +-1% of the target by the analytic counter...
  absl::StatusOr<SwinCost> before = AnalyzeSwinCost(config);
  absl::StatusOr<SwinCost> after = AnalyzeSwinCost(result->config);
  ASSERT_TRUE(before.ok() && after.ok());
  const double goal = (1.0 - ratio) * static_cast<double>(before->total.macs);
  EXPECT_LE(std::abs(static_cast<double>(after->total.macs) - goal),
            0.01 * static_cast<double>(before->total.macs));
  EXPECT_EQ(result->plan.macs_after, after->total.macs);
  // ... and by counting the operations the pruned model actually runs.
  result->model->eval();
  {
    torch::NoGradGuard no_grad;
    MacCounter counter;
    result->model->forward(Images(config, 1, 12));
    EXPECT_LE(std::abs(static_cast<double>(counter.count().macs) - goal),
              0.01 * static_cast<double>(before->total.macs));
    EXPECT_EQ(counter.count().macs, after->total.macs);
  }

  // Forward and backward run; every parameter gets a finite gradient.
  result->model->train();
  torch::Tensor logits = result->model->forward(Images(config, 2, 13));
  ASSERT_EQ(logits.sizes(), torch::IntArrayRef({2, config.num_classes}));
  torch::nn::functional::cross_entropy(logits, torch::tensor({0, 3}, torch::kLong)).backward();
  for (const auto& item : result->model->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_TRUE(torch::isfinite(item.value().grad()).all().item<bool>()) << item.key();
  }

  // The plan: steps cut monotonically and what they removed plus what is kept is every unit.
  const PrunePlan& plan = result->plan;
  ASSERT_EQ(plan.steps.size(), 3u);
  int64_t previous = plan.macs_before;
  std::vector<std::set<int64_t>> seen(plan.groups.size());
  for (const PruneStepRecord& step : plan.steps) {
    EXPECT_LE(step.macs_after, previous);
    previous = step.macs_after;
    for (const GroupRemoval& removal : step.removed) {
      EXPECT_EQ(removal.width_before - removal.width_after,
                static_cast<int64_t>(removal.units.size()));
      for (int64_t u : removal.units) EXPECT_TRUE(seen[removal.group].insert(u).second);
    }
  }
  EXPECT_EQ(previous, plan.macs_after);
  for (const Group& group : plan.groups) {
    for (int64_t u : plan.kept[group.id]) EXPECT_TRUE(seen[group.id].insert(u).second);
    EXPECT_EQ(static_cast<int64_t>(seen[group.id].size()), group.size) << group.name;
  }
  const nlohmann::json json = plan.ToJson();
  EXPECT_EQ(json["steps"].size(), 3u);
  EXPECT_EQ(json["groups"].size(), plan.groups.size());
  EXPECT_EQ(json["after"]["macs"], plan.macs_after);
}

INSTANTIATE_TEST_SUITE_P(Ratios, RatioTest, ::testing::Values(0.1, 0.3, 0.5, 0.7));

TEST(PrunerTest, HeadDimsLocalRankingAndParamsTarget) {
  const SwinConfig config = TinyConfig();
  SwinTransformer model = RandomModel(config, 21);
  PruneOptions options;
  options.target_reduction = 0.4;
  options.attention = AttentionGranularity::kHeadDims;
  options.ranking = PruneRanking::kLocal;
  options.round_to = 2;
  absl::StatusOr<PruneResult> local = PruneSwin(model, options, nullptr);
  ASSERT_TRUE(local.ok()) << local.status();
  ExpectConsistentShapes(local->model);
  EXPECT_NEAR(local->plan.achieved_reduction, 0.4, 0.01);
  bool head_dim_cut = false;
  for (const StageConfig& stage : local->config.stages) {
    for (const BlockWidths& widths : stage.blocks) head_dim_cut |= widths.head_dim < 8;
  }
  EXPECT_TRUE(head_dim_cut);

  options.metric = PruneMetric::kParams;
  options.round_to = 8;
  options.attention = AttentionGranularity::kHeads;
  options.ranking = PruneRanking::kGlobal;
  absl::StatusOr<PruneResult> params = PruneSwin(model, options, nullptr);
  ASSERT_TRUE(params.ok()) << params.status();
  absl::StatusOr<SwinCost> before = AnalyzeSwinCost(config);
  absl::StatusOr<SwinCost> after = AnalyzeSwinCost(params->config);
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_NEAR(1.0 - static_cast<double>(after->params) / static_cast<double>(before->params), 0.4,
              0.01);
}

TEST(PrunerTest, SaveLoadRoundTripOfAPrunedModel) {
  const SwinConfig config = TinyConfig();
  SwinTransformer model = RandomModel(config, 31);
  PruneOptions options;
  options.target_reduction = 0.45;
  absl::StatusOr<PruneResult> result = PruneSwin(model, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const std::string dir =
      (std::filesystem::temp_directory_path() / "compress_pruner_test_round_trip").string();
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(SaveModel(dir, result->model).ok());
  absl::StatusOr<LoadedModel> loaded = LoadModel(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config, result->config);
  result->model->eval();
  loaded->model->eval();
  const torch::Tensor images = Images(config, 2, 32);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(loaded->model->forward(images), result->model->forward(images)));
  std::filesystem::remove_all(dir);
}

TEST(PrunerTest, TaylorNeedsGradientsAndDiffersFromL2) {
  const SwinConfig config = TinyConfig();
  SwinTransformer model = RandomModel(config, 41);
  Graph g = BuildGraph(config, AttentionGranularity::kHeads);
  std::vector<std::pair<std::string, torch::Tensor>> parameters;
  for (const auto& item : model->named_parameters()) {
    parameters.emplace_back(item.key(), item.value());
  }
  CalibrationLoss loss = [model](const TrainBatch& batch) mutable {
    return torch::nn::functional::cross_entropy(model->forward(batch.inputs), batch.targets);
  };
  std::unique_ptr<TensorBatchSource> source = Calibration(config);

  ImportanceOptions taylor;
  taylor.criterion = ImportanceCriterion::kTaylor;
  taylor.calibration_batches = 3;
  EXPECT_EQ(ComputeImportance(parameters, g.graph, g.groups, taylor, loss, nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);

  absl::StatusOr<GroupScores> l2 =
      ComputeImportance(parameters, g.graph, g.groups, ImportanceOptions(), {}, nullptr);
  absl::StatusOr<GroupScores> first =
      ComputeImportance(parameters, g.graph, g.groups, taylor, loss, source.get());
  absl::StatusOr<GroupScores> second =
      ComputeImportance(parameters, g.graph, g.groups, taylor, loss, source.get());
  ASSERT_TRUE(l2.ok()) << l2.status();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  // Repeatable (the source restarts at epoch 0), gradients cleared afterwards.
  for (const Group& group : g.groups) {
    for (int64_t u = 0; u < group.size; ++u) {
      EXPECT_NEAR((*first)[group.id][u], (*second)[group.id][u],
                  1e-6 * (1.0 + std::abs((*first)[group.id][u])));
    }
  }
  for (const auto& [name, tensor] : parameters) EXPECT_FALSE(tensor.grad().defined()) << name;
  // The two criteria order the units differently somewhere.
  int reordered = 0;
  for (const Group& group : g.groups) {
    auto ranks = [&group](const std::vector<double>& scores) {
      std::vector<int64_t> order(group.size);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&scores](int64_t a, int64_t b) { return scores[a] < scores[b]; });
      return order;
    };
    reordered += ranks((*l2)[group.id]) != ranks((*first)[group.id]);
    for (double score : (*first)[group.id]) EXPECT_GE(score, 0.0);
  }
  EXPECT_GT(reordered, 0);

  // Without gradients there is no Taylor importance.
  for (auto& [name, tensor] : parameters) tensor.set_requires_grad(false);
  EXPECT_EQ(
      ComputeImportance(parameters, g.graph, g.groups, taylor, loss, source.get()).status().code(),
      absl::StatusCode::kFailedPrecondition);
  for (auto& [name, tensor] : parameters) tensor.set_requires_grad(true);

  // The pruner runs with Taylor and records it.
  PruneOptions options;
  options.target_reduction = 0.3;
  options.importance = taylor;
  EXPECT_EQ(PruneSwin(model, options, nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<PruneResult> pruned = PruneSwin(model, options, source.get());
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(pruned->plan.criterion, "taylor");
  EXPECT_NEAR(pruned->plan.achieved_reduction, 0.3, 0.01);
}

TEST(PrunerTest, RejectsBadOptions) {
  const SwinConfig config = TinyConfig();
  SwinTransformer model = RandomModel(config, 51);
  PruneOptions options;
  options.target_reduction = 1.0;
  EXPECT_EQ(PruneSwin(model, options, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  options.target_reduction = 0.3;
  options.steps = 0;
  EXPECT_EQ(PruneSwin(model, options, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  options.steps = 2;
  options.round_to = 0;
  EXPECT_EQ(PruneSwin(model, options, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  // Only the MLP may shrink, and not by 90%: the target is out of reach.
  options.round_to = 8;
  options.prune_embedding = false;
  options.prune_attention = false;
  options.target_reduction = 0.9;
  EXPECT_EQ(PruneSwin(model, options, nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace compress::pipeline
