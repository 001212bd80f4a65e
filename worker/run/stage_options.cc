#include "worker/run/stage_options.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"

namespace compress::run {

namespace pl = compress::pipeline;

absl::StatusOr<pl::SharingOptions> SharingOptionsFromSpec(const spec::ShareSpec& share,
                                                          const pl::SwinConfig& base) {
  pl::SharingOptions options;
  options.attention_transform = share.attention_transform;
  options.mlp_transform = share.mlp_transform;
  absl::StatusOr<pl::SharedInit> init = pl::ParseSharedInit(share.init);
  if (!init.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("spec.share.init: ", init.status().message()));
  }
  options.init = *init;
  const int stages = static_cast<int>(base.stages.size());
  if (share.group_size.empty()) return options;
  if (share.group_size.size() != 1 && static_cast<int>(share.group_size.size()) != stages) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.share.group_size: ", share.group_size.size(), " values for a model of ",
                     stages, " stages (give one, or one per stage)"));
  }
  for (int s = 0; s < stages; ++s) {
    const int size = share.group_size.size() == 1 ? share.group_size[0] : share.group_size[s];
    if (size <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.share.group_size[", s, "]: must be positive, got ", size));
    }
    std::vector<int> groups;
    for (int left = static_cast<int>(base.stages[s].blocks.size()); left > 0; left -= size) {
      groups.push_back(std::min(size, left));
    }
    options.group_sizes.push_back(std::move(groups));
  }
  return options;
}

pl::WeightDistillOptions ShareLossFromSpec(const spec::ShareSpec& share) {
  pl::WeightDistillOptions loss;
  loss.temperature = share.temperature;
  loss.logit_weight = share.logit_weight;
  loss.attention_weight = share.attention_loss_weight;
  loss.hidden_weight = share.hidden_loss_weight;
  loss.label_smoothing = share.train.label_smoothing;
  return loss;
}

absl::StatusOr<pl::PruneOptions> PruneOptionsFromSpec(const spec::PruneSpec& prune,
                                                      double reduction) {
  pl::PruneOptions options;
  options.target_reduction = reduction;
  options.metric =
      prune.target_params_reduction > 0.0 ? pl::PruneMetric::kParams : pl::PruneMetric::kMacs;
  options.steps = prune.iterative_steps;
  options.round_to = prune.round_to;
  options.importance.calibration_batches = prune.calibration_batches;
  if (prune.importance == "l2") {
    options.importance.criterion = pl::ImportanceCriterion::kL2;
  } else if (prune.importance == "taylor") {
    options.importance.criterion = pl::ImportanceCriterion::kTaylor;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.prune.importance: unknown value '", prune.importance, "'"));
  }
  if (prune.ranking == "global") {
    options.ranking = pl::PruneRanking::kGlobal;
  } else if (prune.ranking == "local") {
    options.ranking = pl::PruneRanking::kLocal;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.prune.ranking: unknown value '", prune.ranking, "'"));
  }
  if (prune.attention == "heads") {
    options.attention = pl::AttentionGranularity::kHeads;
  } else if (prune.attention == "head_dims") {
    options.attention = pl::AttentionGranularity::kHeadDims;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.prune.attention: unknown value '", prune.attention, "'"));
  }
  return options;
}

pl::DistillStageOptions DistillOptionsFromSpec(const spec::DistillSpec& distill) {
  pl::DistillStageOptions options;
  options.alpha = distill.alpha;
  options.temperature = distill.temperature;
  options.label_smoothing = distill.train.label_smoothing;
  options.attention_weight = distill.attention_loss_weight;
  options.hidden_weight = distill.hidden_loss_weight;
  return options;
}

double PhaseReduction(double target, int64_t teacher, int64_t current) {
  if (current <= 0) return 0.0;
  return 1.0 - (1.0 - target) * static_cast<double>(teacher) / static_cast<double>(current);
}

}  // namespace compress::run
