// PruneSharedSwin: structured pruning of a weight-shared Swin (share/shared_swin.h) to a MAC (or
// parameter) reduction target, with the iterative algorithm of PruneSwin (pruner.h) over the
// groups of the shared model's dependency graph (shared_swin_graph.h). The result is a smaller
// SharedSwin: the same stages, sharing groups and transforms, every block of a sharing group
// with the group's new widths; it saves with SaveSharedModel and loads back with
// LoadSharedModel. Costs are those of AnalyzeSharedCost (a shared weight's parameters counted
// once, its operations once per pass). See docs/prune.md, "Shared models".
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_SHARED_PRUNER_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_SHARED_PRUNER_H_

#include "absl/status/statusor.h"
#include "worker/pipeline/prune/prune_plan.h"
#include "worker/pipeline/prune/pruner.h"
#include "worker/pipeline/share/shared_swin.h"
#include "worker/pipeline/share/sharing_config.h"
#include "worker/pipeline/train/batch_source.h"

namespace compress::pipeline {

struct SharedPruneResult {
  SharingConfig config;       // The pruned architecture.
  SharedSwin model{nullptr};  // Built from `config`, on options.importance.device.
  // The record; its config_before / config_after are the base (unshared) configs, and its
  // MACs and parameters those of AnalyzeSharedCost.
  PrunePlan plan;
};

// Prunes a copy of `model` (left unchanged), as PruneSwin does a plain model: same options,
// same errors. `calibration` feeds Taylor importance (the loss is the cross-entropy of the
// model's logits, in eval mode; the gradient of a shared weight sums over all its passes) and
// may be null for L2.
absl::StatusOr<SharedPruneResult> PruneSharedSwin(const SharedSwin& model,
                                                  const PruneOptions& options,
                                                  BatchSource* calibration);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_SHARED_PRUNER_H_
