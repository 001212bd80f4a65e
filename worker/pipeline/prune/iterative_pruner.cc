#include "worker/pipeline/prune/iterative_pruner.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <optional>
#include <queue>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/pipeline/model/torch_error.h"

namespace compress::pipeline {
namespace {

absl::Status ValidateOptions(const PruneOptions& options) {
  if (!(options.target_reduction >= 0.0 && options.target_reduction < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prune.target_reduction must be in [0, 1), got ", options.target_reduction));
  }
  if (!(options.tolerance > 0.0 && options.tolerance < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prune.tolerance must be in (0, 1), got ", options.tolerance));
  }
  if (options.steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prune.steps must be at least 1, got ", options.steps));
  }
  if (options.round_to < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prune.round_to must be at least 1, got ", options.round_to));
  }
  return absl::OkStatus();
}

int64_t Metric(const PruneCost& cost, PruneMetric metric) {
  return metric == PruneMetric::kMacs ? cost.macs : cost.params;
}

bool KindEnabled(GroupKind kind, const PruneOptions& options) {
  switch (kind) {
    case GroupKind::kEmbedding:
      return options.prune_embedding;
    case GroupKind::kMlpHidden:
      return options.prune_mlp;
    case GroupKind::kHeads:
    case GroupKind::kHeadDims:
      return options.prune_attention;
  }
  return false;
}

// The next chunk of one group: how many of its lowest-scored remaining units to remove, and
// its position in the removal order (smaller first).
struct Chunk {
  double key = 0.0;
  double tie = 0.0;
  int group = 0;
  int64_t amount = 0;

  bool operator>(const Chunk& other) const {
    return std::tie(key, tie, group) > std::tie(other.key, other.tie, other.group);
  }
};

// One step's removal state.
struct StepState {
  std::vector<std::vector<int64_t>> order;  // Units of each group, lowest score first.
  std::vector<int64_t> removed;             // Units removed from each group so far.
  std::vector<int64_t> width;               // Current width of each group.
};

// Width a chunk leaves `width` at, or -1 when the group may not shrink further.
int64_t NextWidth(GroupKind kind, int64_t width, int round_to) {
  const int64_t quantum = kind == GroupKind::kHeads ? 1 : round_to;
  const int64_t floor = quantum;
  const int64_t next = width % quantum != 0 ? width - width % quantum : width - quantum;
  return next >= floor ? next : -1;
}

std::optional<Chunk> NextChunk(const Group& group, int64_t original_size, const StepState& state,
                               const GroupScores& scores, const PruneOptions& options) {
  if (!KindEnabled(group.kind, options)) return std::nullopt;
  const int64_t width = state.width[group.id];
  const int64_t next = NextWidth(group.kind, width, options.round_to);
  if (next < 0) return std::nullopt;
  Chunk chunk;
  chunk.group = group.id;
  chunk.amount = width - next;
  double sum = 0.0;
  const std::vector<int64_t>& order = state.order[group.id];
  const int64_t begin = state.removed[group.id];
  for (int64_t i = begin; i < begin + chunk.amount; ++i) sum += scores[group.id][order[i]];
  const double mean = sum / static_cast<double>(chunk.amount);
  if (options.ranking == PruneRanking::kGlobal) {
    chunk.key = mean;
    chunk.tie = 0.0;
  } else {
    chunk.key = static_cast<double>(original_size - next) / static_cast<double>(original_size);
    chunk.tie = mean;
  }
  return chunk;
}

// One iterative step: scores the target's current units, chooses the chunks to remove until
// the metric reaches record.goal, slices the target and records the step. `origin` maps the
// current units to the original ones and is updated.
absl::Status RunStep(PruneTarget& target, const PruneOptions& options, BatchSource* calibration,
                     const std::vector<Group>& groups0, double slack,
                     std::vector<std::vector<int64_t>>& origin, PruneStepRecord& record) {
  const int num_groups = static_cast<int>(groups0.size());
  absl::StatusOr<DependencyGraph> graph = target.Graph(options.attention);
  if (!graph.ok()) return graph.status();
  absl::StatusOr<std::vector<Group>> groups = graph->Groups();
  if (!groups.ok()) return groups.status();
  if (static_cast<int>(groups->size()) != num_groups) {
    return absl::InternalError(absl::StrCat("the pruned model has ", groups->size(),
                                            " groups, the original ", num_groups));
  }
  absl::StatusOr<PruneCost> cost = target.Cost();
  if (!cost.ok()) return cost.status();
  int64_t metric = Metric(*cost, options.metric);

  StepState state;
  state.order.resize(num_groups);
  state.removed.assign(num_groups, 0);
  state.width.resize(num_groups);
  for (const Group& group : *groups) state.width[group.id] = group.size;

  if (metric > record.goal) {
    CalibrationLoss loss = target.EvalLoss();
    absl::StatusOr<GroupScores> scores = ComputeImportance(target.Parameters(), *graph, *groups,
                                                           options.importance, loss, calibration);
    if (!scores.ok()) return scores.status();
    NormalizePerKind(*groups, *scores);

    std::priority_queue<Chunk, std::vector<Chunk>, std::greater<Chunk>> queue;
    for (const Group& group : *groups) {
      std::vector<int64_t>& order = state.order[group.id];
      order.resize(group.size);
      std::iota(order.begin(), order.end(), 0);
      const std::vector<double>& unit_scores = (*scores)[group.id];
      std::stable_sort(order.begin(), order.end(), [&unit_scores](int64_t a, int64_t b) {
        return unit_scores[a] < unit_scores[b];
      });
      std::optional<Chunk> chunk =
          NextChunk(group, groups0[group.id].size, state, *scores, options);
      if (chunk) queue.push(*chunk);
    }
    while (metric > record.goal && !queue.empty()) {
      const Chunk chunk = queue.top();
      queue.pop();
      std::vector<int64_t> width = state.width;
      width[chunk.group] -= chunk.amount;
      absl::StatusOr<PruneCost> candidate = target.CostWithWidths(*groups, width);
      if (!candidate.ok()) return candidate.status();
      const int64_t candidate_metric = Metric(*candidate, options.metric);
      // Too far past this step's goal: leave the group for a finer one.
      if (static_cast<double>(candidate_metric) < record.goal - slack) continue;
      state.width = std::move(width);
      state.removed[chunk.group] += chunk.amount;
      metric = candidate_metric;
      const Group& group = (*groups)[chunk.group];
      std::optional<Chunk> next = NextChunk(group, groups0[group.id].size, state, *scores, options);
      if (next) queue.push(*next);
    }
  }

  // Keep the units not removed, in ascending order; record the removed ones.
  std::vector<std::vector<int64_t>> kept(num_groups);
  for (const Group& group : *groups) {
    const std::vector<int64_t>& order = state.order[group.id];
    const int64_t removed = state.removed[group.id];
    if (removed == 0) {
      kept[group.id].resize(group.size);
      std::iota(kept[group.id].begin(), kept[group.id].end(), 0);
      continue;
    }
    kept[group.id].assign(order.begin() + removed, order.end());
    std::sort(kept[group.id].begin(), kept[group.id].end());
    GroupRemoval removal;
    removal.group = group.id;
    for (int64_t i = 0; i < removed; ++i) removal.units.push_back(origin[group.id][order[i]]);
    std::sort(removal.units.begin(), removal.units.end());
    removal.width_before = group.size;
    removal.width_after = group.size - removed;
    record.removed.push_back(std::move(removal));
  }
  if (!record.removed.empty()) {
    if (absl::Status status = target.Slice(*graph, *groups, kept); !status.ok()) return status;
    target.To(options.importance.device);
    for (int g = 0; g < num_groups; ++g) {
      std::vector<int64_t> next_origin;
      for (int64_t u : kept[g]) next_origin.push_back(origin[g][u]);
      origin[g] = std::move(next_origin);
    }
  }
  absl::StatusOr<PruneCost> after = target.Cost();
  if (!after.ok()) return after.status();
  record.macs_after = after->macs;
  record.params_after = after->params;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PrunePlan> RunIterativePruning(PruneTarget& target, const PruneOptions& options,
                                              BatchSource* calibration) {
  if (absl::Status status = ValidateOptions(options); !status.ok()) return status;
  absl::StatusOr<PruneCost> cost_before = target.Cost();
  if (!cost_before.ok()) return cost_before.status();
  absl::StatusOr<DependencyGraph> graph0 = target.Graph(options.attention);
  if (!graph0.ok()) return graph0.status();
  absl::StatusOr<std::vector<Group>> groups0 = graph0->Groups();
  if (!groups0.ok()) return groups0.status();

  PrunePlan plan;
  plan.criterion = ImportanceCriterionName(options.importance.criterion);
  plan.ranking = options.ranking == PruneRanking::kGlobal ? "global" : "local";
  plan.target_metric = options.metric == PruneMetric::kMacs ? "macs" : "params";
  plan.attention = options.attention == AttentionGranularity::kHeads ? "heads" : "head_dims";
  plan.target_reduction = options.target_reduction;
  plan.tolerance = options.tolerance;
  plan.round_to = options.round_to;
  plan.config_before = target.BaseConfig();
  plan.macs_before = cost_before->macs;
  plan.params_before = cost_before->params;
  plan.graph = *graph0;
  plan.groups = *groups0;

  // origin[g][u]: the original unit id of the current model's unit u of group g.
  std::vector<std::vector<int64_t>> origin = AllUnits(*groups0);
  const bool training = target.IsTraining();
  // Work on a copy: the caller's model is left as it is.
  if (absl::Status status = target.Slice(*graph0, *groups0, origin); !status.ok()) return status;
  const double before = static_cast<double>(Metric(*cost_before, options.metric));
  const double goal = (1.0 - options.target_reduction) * before;
  const double slack = options.tolerance * before;

  try {
    target.To(options.importance.device);
    for (int t = 1; t <= options.steps; ++t) {
      PruneStepRecord record;
      record.step = t;
      record.goal = std::llround(before - (before - goal) * t / options.steps);
      absl::Status status = RunStep(target, options, calibration, *groups0, slack, origin, record);
      if (!status.ok()) return status;
      plan.steps.push_back(std::move(record));
    }
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, absl::StrCat("pruning the ", target.Description()));
  }

  target.SetTraining(training);
  absl::StatusOr<PruneCost> cost_after = target.Cost();
  if (!cost_after.ok()) return cost_after.status();
  plan.config_after = target.BaseConfig();
  plan.macs_after = cost_after->macs;
  plan.params_after = cost_after->params;
  plan.achieved_reduction = 1.0 - static_cast<double>(Metric(*cost_after, options.metric)) / before;
  plan.kept = origin;
  if (std::abs(plan.achieved_reduction - options.target_reduction) > options.tolerance) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pruning reached a ", plan.target_metric, " reduction of ", plan.achieved_reduction,
        ", not ", options.target_reduction, " +- ", options.tolerance,
        "; allow more group kinds, a smaller round_to or a larger tolerance"));
  }
  return plan;
}

}  // namespace compress::pipeline
