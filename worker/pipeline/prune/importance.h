// Importance of the units of every group of a dependency graph.
//
//   kL2      group magnitude: sqrt(sum over the group's members of (w - b)^2 over each unit's
//            slice), b the member's baseline (SliceNode::baseline): 0 for ordinary weights, the
//            identity matrix for a shared model's proj_l / proj_w weights, which start at the
//            identity. A transform thus counts what it adds beyond passing the heads through,
//            and a heads group is not scored higher for having more passes.
//   kTaylor  first-order Taylor (Molchanov et al., "Importance Estimation for Neural Network
//            Pruning", CVPR 2019; Torch-Pruning's TaylorImportance): the loss change estimated
//            by removing a slice, sum over the slice of |w * dL/dw|, accumulated over a number
//            of calibration batches and summed over the group's members. It uses no baseline:
//            it estimates the effect of setting the slice to zero, which is what removing a
//            head does to its row and column of a transform, and the diagonal entry is what
//            carries the head through that pass, so its |w * dL/dw| is that pass's share of the
//            loss change, weighed by the gradient (a pass the loss does not depend on adds
//            nothing).
// A tensor shared by several passes is one node, so its magnitude counts once and its
// gradient is already the sum of the gradients of all its uses.
//
// NormalizePerKind divides every unit's score by the mean unit score of all groups of the same
// kind, so that embedding channels, MLP units and heads can be ranked against each other.
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_IMPORTANCE_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_IMPORTANCE_H_

#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipeline/prune/dependency_graph.h"
#include "worker/pipeline/train/batch_source.h"

namespace compress::pipeline {

enum class ImportanceCriterion {
  kL2,      // Weight magnitude; needs no data.
  kTaylor,  // |w * dL/dw| over calibration batches.
};

// "l2", "taylor".
const char* ImportanceCriterionName(ImportanceCriterion criterion);

struct ImportanceOptions {
  ImportanceCriterion criterion = ImportanceCriterion::kL2;
  // Taylor: batches drawn from the calibration source (> 0). The source is read from epoch 0,
  // batch 0, and wraps to the next epoch when it runs out.
  int calibration_batches = 8;
  // Taylor: device the batches are moved to (the model's device).
  torch::Device device = torch::kCPU;
};

// scores[g][u]: importance of unit u of group g.
using GroupScores = std::vector<std::vector<double>>;

// The scalar loss of a batch through the model (forward pass included).
using CalibrationLoss = std::function<torch::Tensor(const TrainBatch& batch)>;

// Scores every unit of `groups` (from graph.Groups()). `parameters` are the model's named
// parameters (every node's tensor must be among them: INTERNAL otherwise). Taylor needs
// `loss` and `calibration` (FAILED_PRECONDITION without them) and parameters that require
// gradients; it clears their gradients before and after. INTERNAL for LibTorch errors.
absl::StatusOr<GroupScores> ComputeImportance(
    const std::vector<std::pair<std::string, torch::Tensor>>& parameters,
    const DependencyGraph& graph, const std::vector<Group>& groups,
    const ImportanceOptions& options, const CalibrationLoss& loss, BatchSource* calibration);

// Divides scores in place by the mean unit score of their group kind (kinds whose mean is 0
// are left as they are).
void NormalizePerKind(const std::vector<Group>& groups, GroupScores& scores);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_IMPORTANCE_H_
