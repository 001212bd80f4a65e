// Tests of the dependency graph and the Swin grouping (torch-free).
#include "worker/pipeline/prune/swin_graph.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "nlohmann/json.hpp"
#include "worker/pipeline/model/swin_config.h"
#include "worker/pipeline/prune/dependency_graph.h"

namespace compress::pipeline {
namespace {

SwinConfig Micro() {
  absl::StatusOr<SwinConfig> config = SwinPreset("swin_micro");
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

const Group* FindGroup(const std::vector<Group>& groups, const std::string& name) {
  for (const Group& group : groups) {
    if (group.name == name) return &group;
  }
  return nullptr;
}

const SliceNode* FindMember(const DependencyGraph& graph, const Group& group,
                            const std::string& tensor, int dim) {
  for (int id : group.nodes) {
    if (graph.node(id).tensor == tensor && graph.node(id).dim == dim) return &graph.node(id);
  }
  return nullptr;
}

TEST(SwinGraphTest, GroupsOfSwinMicro) {
  const SwinConfig config = Micro();
  absl::StatusOr<DependencyGraph> graph = BuildSwinGraph(config, AttentionGranularity::kHeads);
  ASSERT_TRUE(graph.ok()) << graph.status();
  absl::StatusOr<std::vector<Group>> groups = graph->Groups();
  ASSERT_TRUE(groups.ok()) << groups.status();
  // Per stage: one embedding group, and per block an MLP and a heads group.
  ASSERT_EQ(groups->size(), 2u * (1 + 2 * 2));
  // A plain model's weights are all measured from zero.
  for (const SliceNode& node : graph->nodes()) {
    EXPECT_EQ(node.baseline, Baseline::kZero) << node.tensor;
  }
  int embedding = 0, mlp = 0, heads = 0;
  for (const Group& group : *groups) {
    embedding += group.kind == GroupKind::kEmbedding;
    mlp += group.kind == GroupKind::kMlpHidden;
    heads += group.kind == GroupKind::kHeads;
  }
  EXPECT_EQ(embedding, 2);
  EXPECT_EQ(mlp, 4);
  EXPECT_EQ(heads, 4);

  const Group* stage0 = FindGroup(*groups, "layers.0.embedding");
  ASSERT_NE(stage0, nullptr);
  EXPECT_EQ(stage0->size, 48);
  // Stem, 10 nodes per block, then the next merging's norm (2) and reduction columns.
  EXPECT_EQ(stage0->nodes.size(), 4u + 2 * 10 + 3);
  const SliceNode* merge_in =
      FindMember(*graph, *stage0, "layers.1.downsample.reduction.weight", 1);
  ASSERT_NE(merge_in, nullptr);
  EXPECT_EQ(merge_in->units[5], (std::vector<int64_t>{5, 53, 101, 149}));
  ASSERT_NE(FindMember(*graph, *stage0, "layers.1.downsample.norm.bias", 0), nullptr);
  ASSERT_NE(FindMember(*graph, *stage0, "layers.0.blocks.1.attn.qkv.weight", 1), nullptr);
  EXPECT_EQ(FindMember(*graph, *stage0, "layers.0.blocks.1.attn.qkv.weight", 0), nullptr);

  const Group* stage1 = FindGroup(*groups, "layers.1.embedding");
  ASSERT_NE(stage1, nullptr);
  EXPECT_EQ(stage1->size, 96);
  ASSERT_NE(FindMember(*graph, *stage1, "layers.1.downsample.reduction.weight", 0), nullptr);
  ASSERT_NE(FindMember(*graph, *stage1, "head.fc.weight", 1), nullptr);
  ASSERT_NE(FindMember(*graph, *stage1, "norm.weight", 0), nullptr);

  // swin_micro stage 1: 4 heads of 24; head 2's rows in Q, K and V.
  const Group* attn = FindGroup(*groups, "layers.1.blocks.0.attn.heads");
  ASSERT_NE(attn, nullptr);
  EXPECT_EQ(attn->size, 4);
  const SliceNode* qkv = FindMember(*graph, *attn, "layers.1.blocks.0.attn.qkv.weight", 0);
  ASSERT_NE(qkv, nullptr);
  ASSERT_EQ(qkv->units[2].size(), 3u * 24);
  EXPECT_EQ(qkv->units[2][0], 48);
  EXPECT_EQ(qkv->units[2][24], 96 + 48);
  EXPECT_EQ(qkv->units[2][48], 192 + 48);
  const SliceNode* table =
      FindMember(*graph, *attn, "layers.1.blocks.0.attn.relative_position_bias_table", 1);
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(table->units[3], (std::vector<int64_t>{3}));
  const SliceNode* proj = FindMember(*graph, *attn, "layers.1.blocks.0.attn.proj.weight", 1);
  ASSERT_NE(proj, nullptr);
  EXPECT_EQ(proj->units[1].front(), 24);
  EXPECT_EQ(proj->units[1].back(), 47);

  // Every (tensor, dim) is in exactly one group.
  std::set<std::pair<std::string, int>> seen;
  for (const Group& group : *groups) {
    for (int id : group.nodes) {
      EXPECT_TRUE(seen.emplace(graph->node(id).tensor, graph->node(id).dim).second)
          << graph->node(id).tensor;
    }
  }
}

TEST(SwinGraphTest, HeadDimGroupsTakeOnePositionOfEveryHead) {
  const SwinConfig config = Micro();
  absl::StatusOr<DependencyGraph> graph = BuildSwinGraph(config, AttentionGranularity::kHeadDims);
  ASSERT_TRUE(graph.ok()) << graph.status();
  absl::StatusOr<std::vector<Group>> groups = graph->Groups();
  ASSERT_TRUE(groups.ok()) << groups.status();
  const Group* attn = FindGroup(*groups, "layers.0.blocks.1.attn.head_dims");
  ASSERT_NE(attn, nullptr);
  EXPECT_EQ(attn->kind, GroupKind::kHeadDims);
  EXPECT_EQ(attn->size, 24);
  const SliceNode* qkv = FindMember(*graph, *attn, "layers.0.blocks.1.attn.qkv.weight", 0);
  ASSERT_NE(qkv, nullptr);
  // Position 5 of heads 0 and 1 in Q, K and V (attn dim 48).
  EXPECT_EQ(qkv->units[5], (std::vector<int64_t>{5, 29, 53, 77, 101, 125}));
  const SliceNode* proj = FindMember(*graph, *attn, "layers.0.blocks.1.attn.proj.weight", 1);
  ASSERT_NE(proj, nullptr);
  EXPECT_EQ(proj->units[5], (std::vector<int64_t>{5, 29}));
  EXPECT_EQ(FindMember(*graph, *attn, "layers.0.blocks.1.attn.relative_position_bias_table", 1),
            nullptr);
}

TEST(DependencyGraphTest, SharedTensorIsOneNodeAndMergesItsGroups) {
  DependencyGraph graph;
  auto units = [](int n) {
    std::vector<std::vector<int64_t>> u(n);
    for (int i = 0; i < n; ++i) u[i] = {i};
    return u;
  };
  const Site pass0{GroupKind::kMlpHidden, 0, 0};
  const Site pass1{GroupKind::kMlpHidden, 0, 1};
  absl::StatusOr<int> fc1_a = graph.AddNode("shared.fc1.weight", 0, units(4), pass0);
  absl::StatusOr<int> t0 = graph.AddNode("pass0.transform.weight", 1, units(4), pass0);
  absl::StatusOr<int> fc1_b = graph.AddNode("shared.fc1.weight", 0, units(4), pass1);
  absl::StatusOr<int> t1 = graph.AddNode("pass1.transform.weight", 1, units(4), pass1);
  ASSERT_TRUE(fc1_a.ok() && t0.ok() && fc1_b.ok() && t1.ok());
  EXPECT_EQ(*fc1_a, *fc1_b);
  ASSERT_TRUE(graph.Couple(*fc1_a, *t0).ok());
  ASSERT_TRUE(graph.Couple(*fc1_b, *t1).ok());
  absl::StatusOr<std::vector<Group>> groups = graph.Groups();
  ASSERT_TRUE(groups.ok()) << groups.status();
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ((*groups)[0].nodes.size(), 3u);
  EXPECT_EQ((*groups)[0].sites, (std::vector<Site>{pass0, pass1}));

  EXPECT_EQ(graph.AddNode("shared.fc1.weight", 0, units(5), pass0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<int> other = graph.AddNode("x.weight", 0, units(3), pass0);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(graph.Couple(*fc1_a, *other).code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<int> mixed = graph.AddNode("y.weight", 0, units(4), Site{GroupKind::kHeads, 0, 0});
  ASSERT_TRUE(mixed.ok());
  ASSERT_TRUE(graph.Couple(*fc1_a, *mixed).ok());
  EXPECT_EQ(graph.Groups().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(DependencyGraphTest, BaselineBelongsToTheTensor) {
  DependencyGraph graph;
  std::vector<std::vector<int64_t>> units = {{0}, {1}, {2}};
  const Site site{GroupKind::kHeads, 0, 0};
  absl::StatusOr<int> plain = graph.AddNode("attn.qkv.weight", 0, units, site);
  absl::StatusOr<int> rows = graph.AddNode("proj_l.weight", 0, units, site, Baseline::kIdentity);
  absl::StatusOr<int> columns = graph.AddNode("proj_l.weight", 1, units, site, Baseline::kIdentity);
  ASSERT_TRUE(plain.ok() && rows.ok() && columns.ok());
  EXPECT_EQ(graph.node(*plain).baseline, Baseline::kZero);
  EXPECT_EQ(graph.node(*rows).baseline, Baseline::kIdentity);
  EXPECT_EQ(graph.node(*columns).baseline, Baseline::kIdentity);
  // Again at another site: the same node.
  absl::StatusOr<int> again =
      graph.AddNode("proj_l.weight", 1, units, Site{GroupKind::kHeads, 0, 1}, Baseline::kIdentity);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *columns);
  // One tensor, two baselines: on the same dim or on another.
  EXPECT_EQ(graph.AddNode("proj_l.weight", 1, units, site).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(graph.AddNode("attn.qkv.weight", 1, units, site, Baseline::kIdentity).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(SwinGraphTest, PrunedConfigSetsTheWidthsOfEachSite) {
  const SwinConfig config = Micro();
  absl::StatusOr<DependencyGraph> graph = BuildSwinGraph(config, AttentionGranularity::kHeads);
  ASSERT_TRUE(graph.ok());
  absl::StatusOr<std::vector<Group>> groups = graph->Groups();
  ASSERT_TRUE(groups.ok());
  std::vector<int64_t> kept;
  for (const Group& group : *groups) kept.push_back(group.size);
  kept[FindGroup(*groups, "layers.0.embedding")->id] = 40;
  kept[FindGroup(*groups, "layers.1.blocks.1.mlp.hidden")->id] = 100;
  kept[FindGroup(*groups, "layers.1.blocks.0.attn.heads")->id] = 3;
  absl::StatusOr<SwinConfig> pruned = PrunedSwinConfig(config, *groups, kept);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(pruned->stages[0].dim, 40);
  EXPECT_EQ(pruned->stages[1].dim, 96);
  EXPECT_EQ(pruned->stages[1].blocks[1].mlp_hidden, 100);
  EXPECT_EQ(pruned->stages[1].blocks[0].num_heads, 3);
  EXPECT_EQ(pruned->stages[1].blocks[0].head_dim, 24);
  kept[0] = 0;
  EXPECT_EQ(PrunedSwinConfig(config, *groups, kept).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SwinGraphTest, GroupsJsonListsMembersWithIndices) {
  const SwinConfig config = Micro();
  absl::StatusOr<DependencyGraph> graph = BuildSwinGraph(config, AttentionGranularity::kHeads);
  ASSERT_TRUE(graph.ok());
  absl::StatusOr<std::vector<Group>> groups = graph->Groups();
  ASSERT_TRUE(groups.ok());
  const nlohmann::json json = graph->GroupsToJson(*groups);
  ASSERT_EQ(json.size(), groups->size());
  const nlohmann::json& first = json[0];
  EXPECT_EQ(first["name"], "layers.0.embedding");
  EXPECT_EQ(first["kind"], "embedding");
  EXPECT_EQ(first["size"], 48);
  EXPECT_EQ(first["members"][0]["tensor"], "patch_embed.proj.weight");
  EXPECT_EQ(first["members"][0]["indices"].size(), 48u);
}

}  // namespace
}  // namespace compress::pipeline
