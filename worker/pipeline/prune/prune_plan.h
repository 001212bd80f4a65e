// PrunePlan: the record of a pruning run, written out as the `prune plan` JSON (docs/prune.md):
// the grouping matrix F of the original model, the target, every iterative step (what it
// removed, MACs and parameters after it) and the units each group kept. Torch-free.
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_PRUNE_PLAN_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_PRUNE_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json_fwd.hpp"
#include "worker/pipeline/model/swin_config.h"
#include "worker/pipeline/prune/dependency_graph.h"

namespace compress::pipeline {

// Units one step took from one group. Unit ids are those of the original model's group.
struct GroupRemoval {
  int group = 0;
  std::vector<int64_t> units;
  int64_t width_before = 0;
  int64_t width_after = 0;
};

struct PruneStepRecord {
  int step = 0;      // 1-based.
  int64_t goal = 0;  // MACs (or parameters) this step aimed at.
  std::vector<GroupRemoval> removed;
  int64_t macs_after = 0;    // Analytic MACs of one image after the step.
  int64_t params_after = 0;  // Trainable parameters after the step.
};

struct PrunePlan {
  // Settings, for the record.
  std::string criterion;      // "l2" or "taylor".
  std::string ranking;        // "global" or "local".
  std::string target_metric;  // "macs" or "params".
  std::string attention;      // "heads" or "head_dims".
  double target_reduction = 0.0;
  double tolerance = 0.0;
  int round_to = 0;

  SwinConfig config_before;
  SwinConfig config_after;
  int64_t macs_before = 0;
  int64_t params_before = 0;
  int64_t macs_after = 0;
  int64_t params_after = 0;
  // achieved reduction of the target metric, 1 - after / before.
  double achieved_reduction = 0.0;

  // The original model's graph and groups (the rows of F).
  DependencyGraph graph;
  std::vector<Group> groups;
  // kept[g]: original unit ids group g keeps, ascending.
  std::vector<std::vector<int64_t>> kept;
  std::vector<PruneStepRecord> steps;

  nlohmann::json ToJson() const;
  std::string ToJsonString() const;  // Indented by 1.
};

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_PRUNE_PLAN_H_
