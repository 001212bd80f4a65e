#include "worker/pipeline/prune/shared_pruner.h"

#include <string>
#include <utility>

#include "worker/pipeline/prune/iterative_pruner.h"
#include "worker/pipeline/prune/shared_model_slicer.h"
#include "worker/pipeline/prune/shared_swin_graph.h"
#include "worker/pipeline/share/shared_cost.h"

namespace compress::pipeline {
namespace {

absl::StatusOr<PruneCost> CostOf(const SharingConfig& config) {
  absl::StatusOr<SharedCost> cost = AnalyzeSharedCost(config);
  if (!cost.ok()) return cost.status();
  return PruneCost{cost->total.macs, cost->params};
}

// A SharedSwin under pruning.
class SharedSwinPruneTarget : public PruneTarget {
 public:
  explicit SharedSwinPruneTarget(SharedSwin model) : model_(std::move(model)) {}

  absl::StatusOr<DependencyGraph> Graph(AttentionGranularity granularity) const override {
    return BuildSharedSwinGraph(model_->config(), granularity);
  }
  absl::StatusOr<PruneCost> Cost() const override { return CostOf(model_->config()); }
  absl::StatusOr<PruneCost> CostWithWidths(const std::vector<Group>& groups,
                                           const std::vector<int64_t>& widths) const override {
    absl::StatusOr<SharingConfig> config = PrunedSharingConfig(model_->config(), groups, widths);
    if (!config.ok()) return config.status();
    return CostOf(*config);
  }
  absl::Status Slice(const DependencyGraph& graph, const std::vector<Group>& groups,
                     const std::vector<std::vector<int64_t>>& kept_units) override {
    absl::StatusOr<SlicedSharedModel> sliced =
        SliceSharedSwinModel(model_, graph, groups, kept_units);
    if (!sliced.ok()) return sliced.status();
    model_ = sliced->model;
    return absl::OkStatus();
  }
  NamedTensors Parameters() const override {
    NamedTensors parameters;
    for (const auto& item : model_->named_parameters(/*recurse=*/true)) {
      parameters.emplace_back(item.key(), item.value());
    }
    return parameters;
  }
  CalibrationLoss EvalLoss() override {
    SharedSwin scored = model_;
    scored->eval();
    return [scored](const TrainBatch& batch) mutable {
      return torch::nn::functional::cross_entropy(scored->forward(batch.inputs), batch.targets);
    };
  }
  void To(const torch::Device& device) override { model_->to(device); }
  bool IsTraining() const override { return model_->is_training(); }
  void SetTraining(bool training) override { model_->train(training); }
  SwinConfig BaseConfig() const override { return model_->config().base; }
  std::string Description() const override { return "shared Swin Transformer"; }

  const SharedSwin& model() const { return model_; }

 private:
  SharedSwin model_;
};

}  // namespace

absl::StatusOr<SharedPruneResult> PruneSharedSwin(const SharedSwin& model,
                                                  const PruneOptions& options,
                                                  BatchSource* calibration) {
  SharedSwinPruneTarget target(model);
  absl::StatusOr<PrunePlan> plan = RunIterativePruning(target, options, calibration);
  if (!plan.ok()) return plan.status();
  SharedPruneResult result;
  result.config = target.model()->config();
  result.model = target.model();
  result.plan = std::move(*plan);
  return result;
}

}  // namespace compress::pipeline
