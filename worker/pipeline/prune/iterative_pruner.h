// The iterative pruning algorithm of PruneSwin and PruneSharedSwin (pruner.h describes it),
// written once over PruneTarget: the few things it needs from a model kind (its dependency
// graph, the cost of a pruning of it, slicing, its parameters and calibration loss). Internal
// to the prune stage.
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_ITERATIVE_PRUNER_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_ITERATIVE_PRUNER_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/pipeline/model/swin_config.h"
#include "worker/pipeline/prune/dependency_graph.h"
#include "worker/pipeline/prune/importance.h"
#include "worker/pipeline/prune/prune_plan.h"
#include "worker/pipeline/prune/pruner.h"
#include "worker/pipeline/prune/tensor_slicing.h"
#include "worker/pipeline/train/batch_source.h"

namespace compress::pipeline {

// What the pruning targets measure.
struct PruneCost {
  int64_t macs = 0;    // Analytic MACs of one image.
  int64_t params = 0;  // Trainable parameters.
};

// One model being pruned: holds the current model, which Slice replaces. Not thread-safe.
class PruneTarget {
 public:
  virtual ~PruneTarget() = default;

  // The dependency graph of the current model.
  virtual absl::StatusOr<DependencyGraph> Graph(AttentionGranularity granularity) const = 0;
  // The cost of the current model.
  virtual absl::StatusOr<PruneCost> Cost() const = 0;
  // The cost of the current model after keeping widths[g] units of groups[g] (groups of
  // Graph()).
  virtual absl::StatusOr<PruneCost> CostWithWidths(const std::vector<Group>& groups,
                                                   const std::vector<int64_t>& widths) const = 0;
  // Replaces the current model by a new one holding the kept units (on the CPU).
  virtual absl::Status Slice(const DependencyGraph& graph, const std::vector<Group>& groups,
                             const std::vector<std::vector<int64_t>>& kept_units) = 0;
  // The current model's named parameters.
  virtual NamedTensors Parameters() const = 0;
  // Puts the current model in eval mode and returns the cross-entropy of its logits.
  virtual CalibrationLoss EvalLoss() = 0;
  virtual void To(const torch::Device& device) = 0;
  virtual bool IsTraining() const = 0;
  virtual void SetTraining(bool training) = 0;
  // The (base) SwinConfig of the current model, for the plan.
  virtual SwinConfig BaseConfig() const = 0;
  // The model kind in error messages, e.g. "Swin Transformer".
  virtual std::string Description() const = 0;
};

// Copies the target's model (a slice keeping every unit), then prunes the copy in
// options.steps steps and returns the plan; the target then holds the pruned model, on
// options.importance.device, in the original model's training mode. Errors as PruneSwin.
absl::StatusOr<PrunePlan> RunIterativePruning(PruneTarget& target, const PruneOptions& options,
                                              BatchSource* calibration);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_ITERATIVE_PRUNER_H_
