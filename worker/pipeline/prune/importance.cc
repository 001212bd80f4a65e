#include "worker/pipeline/prune/importance.h"

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "worker/pipeline/model/torch_error.h"

namespace compress::pipeline {
namespace {

// Per-element scores of every parameter that some node refers to, keyed by name.
using ElementScores = std::map<std::string, torch::Tensor>;

absl::StatusOr<std::map<std::string, torch::Tensor>> NodeTensors(
    const std::vector<std::pair<std::string, torch::Tensor>>& parameters,
    const DependencyGraph& graph) {
  std::map<std::string, torch::Tensor> by_name(parameters.begin(), parameters.end());
  std::map<std::string, torch::Tensor> used;
  for (const SliceNode& node : graph.nodes()) {
    auto it = by_name.find(node.tensor);
    if (it == by_name.end()) {
      return absl::InternalError(
          absl::StrCat("the dependency graph names \"", node.tensor, "\", not a model parameter"));
    }
    if (node.dim >= it->second.dim()) {
      return absl::InternalError(absl::StrCat("the dependency graph prunes dim ", node.dim,
                                              " of \"", node.tensor, "\", which has ",
                                              it->second.dim()));
    }
    used.emplace(node.tensor, it->second);
  }
  return used;
}

// L2: the squared difference of every element from its tensor's baseline (the graph's nodes
// of one tensor share it).
absl::StatusOr<ElementScores> SquaredMagnitudes(const std::map<std::string, torch::Tensor>& tensors,
                                                const DependencyGraph& graph) {
  std::map<std::string, Baseline> baselines;
  for (const SliceNode& node : graph.nodes()) baselines.emplace(node.tensor, node.baseline);
  torch::NoGradGuard no_grad;
  ElementScores scores;
  for (const auto& [name, tensor] : tensors) {
    torch::Tensor w = tensor.detach().to(torch::kDouble);
    if (baselines.at(name) == Baseline::kIdentity) {
      if (w.dim() != 2 || w.size(0) != w.size(1)) {
        return absl::InternalError(
            absl::StrCat("\"", name, "\" has the identity as baseline but is not square"));
      }
      w = w - torch::eye(w.size(0), w.options());
    }
    scores[name] = w.square();
  }
  return scores;
}

absl::StatusOr<ElementScores> TaylorScores(const std::map<std::string, torch::Tensor>& tensors,
                                           const ImportanceOptions& options,
                                           const CalibrationLoss& loss, BatchSource& source) {
  if (options.calibration_batches <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration_batches must be positive for Taylor importance, got ",
                     options.calibration_batches));
  }
  ElementScores scores;
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.requires_grad()) {
      return absl::FailedPreconditionError(absl::StrCat("Taylor importance needs gradients, but \"",
                                                        name, "\" does not require them"));
    }
    scores[name] = torch::zeros_like(tensor, torch::kDouble);
    tensor.mutable_grad() = torch::Tensor();
  }
  int64_t epoch = 0;
  if (absl::Status status = source.StartEpoch(epoch, 0); !status.ok()) return status;
  for (int i = 0; i < options.calibration_batches; ++i) {
    absl::StatusOr<std::optional<TrainBatch>> next = source.Next();
    if (!next.ok()) return next.status();
    if (!next->has_value()) {
      if (absl::Status status = source.StartEpoch(++epoch, 0); !status.ok()) return status;
      next = source.Next();
      if (!next.ok()) return next.status();
      if (!next->has_value()) {
        return absl::FailedPreconditionError("the calibration source yields no batches");
      }
    }
    TrainBatch batch = std::move(**next);
    batch.inputs = batch.inputs.to(options.device);
    batch.targets = batch.targets.to(options.device);
    torch::Tensor value = loss(batch);
    if (!value.defined() || value.numel() != 1 || !value.requires_grad()) {
      return absl::FailedPreconditionError(
          "the calibration loss must be a scalar that depends on the parameters");
    }
    value.backward();
    torch::NoGradGuard no_grad;
    for (const auto& [name, tensor] : tensors) {
      const torch::Tensor& grad = tensor.grad();
      if (grad.defined()) scores[name] += (tensor * grad).abs().to(torch::kDouble);
      tensor.mutable_grad() = torch::Tensor();
    }
  }
  return scores;
}

}  // namespace

const char* ImportanceCriterionName(ImportanceCriterion criterion) {
  return criterion == ImportanceCriterion::kL2 ? "l2" : "taylor";
}

absl::StatusOr<GroupScores> ComputeImportance(
    const std::vector<std::pair<std::string, torch::Tensor>>& parameters,
    const DependencyGraph& graph, const std::vector<Group>& groups,
    const ImportanceOptions& options, const CalibrationLoss& loss, BatchSource* calibration) {
  try {
    absl::StatusOr<std::map<std::string, torch::Tensor>> tensors = NodeTensors(parameters, graph);
    if (!tensors.ok()) return tensors.status();
    ElementScores elements;
    if (options.criterion == ImportanceCriterion::kTaylor) {
      if (!loss || calibration == nullptr) {
        return absl::FailedPreconditionError(
            "Taylor importance needs a calibration loss and a calibration data source");
      }
      // Gradients of parameters outside the graph (e.g. the classifier bias) are cleared too.
      auto clear_gradients = [&parameters] {
        for (const auto& [name, tensor] : parameters) tensor.mutable_grad() = torch::Tensor();
      };
      clear_gradients();
      absl::StatusOr<ElementScores> taylor = TaylorScores(*tensors, options, loss, *calibration);
      clear_gradients();
      if (!taylor.ok()) return taylor.status();
      elements = std::move(*taylor);
    } else {
      absl::StatusOr<ElementScores> l2 = SquaredMagnitudes(*tensors, graph);
      if (!l2.ok()) return l2.status();
      elements = std::move(*l2);
    }

    GroupScores scores(groups.size());
    for (const Group& group : groups) {
      std::vector<double>& unit_scores = scores[group.id];
      unit_scores.assign(group.size, 0.0);
      for (int id : group.nodes) {
        const SliceNode& node = graph.node(id);
        const torch::Tensor& element = elements.at(node.tensor);
        // Sum over every dimension but the pruned one: one score per index along it.
        torch::Tensor per_index = element.movedim(node.dim, 0)
                                      .reshape({element.size(node.dim), -1})
                                      .sum(1)
                                      .cpu()
                                      .contiguous();
        const double* values = per_index.data_ptr<double>();
        const int64_t length = per_index.size(0);
        for (size_t u = 0; u < node.units.size(); ++u) {
          for (int64_t index : node.units[u]) {
            if (index < 0 || index >= length) {
              return absl::InternalError(absl::StrCat("unit ", u, " of \"", node.tensor, "\" dim ",
                                                      node.dim, " has index ", index,
                                                      " out of [0, ", length, ")"));
            }
            unit_scores[u] += values[index];
          }
        }
      }
      if (options.criterion == ImportanceCriterion::kL2) {
        for (double& score : unit_scores) score = std::sqrt(score);
      }
    }
    return scores;
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, "computing pruning importance");
  }
}

void NormalizePerKind(const std::vector<Group>& groups, GroupScores& scores) {
  std::map<GroupKind, std::pair<double, int64_t>> sums;  // kind -> (sum, units)
  for (const Group& group : groups) {
    auto& [sum, count] = sums[group.kind];
    for (double score : scores[group.id]) sum += score;
    count += static_cast<int64_t>(scores[group.id].size());
  }
  for (const Group& group : groups) {
    const auto& [sum, count] = sums[group.kind];
    if (count == 0 || sum <= 0.0) continue;
    const double mean = sum / static_cast<double>(count);
    for (double& score : scores[group.id]) score /= mean;
  }
}

}  // namespace compress::pipeline
