// PruneSwin: structured pruning of a Swin Transformer to a MAC (or parameter) reduction target,
// iteratively (prune a part of the way, re-score on the pruned model, repeat), over the groups
// of its dependency graph (swin_graph.h). See docs/prune.md.
//
// Each step aims at goal_t = before - (before - target) * t / steps, t = 1..steps, with
// target = (1 - target_reduction) * before. It scores the current model's units, normalises
// the scores per group kind, and removes *chunks* in order until the analytic cost
// (AnalyzeSwinCost) reaches goal_t:
//   - a chunk is the next lowest-scored units of one group that take its width down to the
//     next multiple of round_to (whole heads, one at a time, for head groups); a width never
//     goes below round_to (one head);
//   - global ranking takes the chunk of lowest mean normalised score first; local ranking takes
//     the chunk of the group with the smallest fraction removed so far (every group of a kind
//     ends near the same ratio), lowest-scored units first within a group;
//   - a chunk that would take the cost below goal_t - tolerance * before is skipped (its group
//     gives no more chunks in that step), so the last step ends within the tolerance.
// Then the model is sliced (model_slicer.h) and the next step starts from it.
#ifndef COMPRESS_WORKER_PIPELINE_PRUNE_PRUNER_H_
#define COMPRESS_WORKER_PIPELINE_PRUNE_PRUNER_H_

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/model/swin_config.h"
#include "worker/pipeline/prune/importance.h"
#include "worker/pipeline/prune/prune_plan.h"
#include "worker/pipeline/prune/swin_graph.h"
#include "worker/pipeline/train/batch_source.h"

namespace compress::pipeline {

enum class PruneMetric {
  kMacs,    // Analytic MACs of one image.
  kParams,  // Trainable parameters.
};

enum class PruneRanking {
  kGlobal,  // One ranking over every group's units (normalised scores).
  kLocal,   // Each group ranks its own units; groups are cut at similar ratios.
};

struct PruneOptions {
  // Fraction of the original metric to remove, in [0, 1).
  double target_reduction = 0.32;
  // What target_reduction applies to.
  PruneMetric metric = PruneMetric::kMacs;
  // The result's reduction lies within target_reduction +- tolerance (fractions of the
  // original), or PruneSwin fails.
  double tolerance = 0.01;
  // Iterative steps (>= 1); importance is recomputed on the pruned model before each.
  int steps = 4;
  // Importance criterion and, for Taylor, calibration batches and device.
  ImportanceOptions importance;
  PruneRanking ranking = PruneRanking::kGlobal;
  // Attention pruned by whole heads or by head dims.
  AttentionGranularity attention = AttentionGranularity::kHeads;
  // Which group kinds may lose units.
  bool prune_embedding = true;
  bool prune_mlp = true;
  bool prune_attention = true;
  // Channel widths (embedding, MLP hidden, head dim) are cut to multiples of this (>= 1) and
  // never below it.
  int round_to = 8;
};

struct PruneResult {
  SwinConfig config;               // The pruned architecture.
  SwinTransformer model{nullptr};  // Built from `config`, on importance.device.
  PrunePlan plan;
};

// Prunes a copy of `model` (left unchanged). `calibration` feeds Taylor importance (the loss is
// the cross-entropy of the model's logits, in eval mode) and may be null for L2.
// INVALID_ARGUMENT for bad options; FAILED_PRECONDITION when the target cannot be reached
// within the tolerance (the message says how close it came) or Taylor lacks data; INTERNAL
// for LibTorch errors.
absl::StatusOr<PruneResult> PruneSwin(const SwinTransformer& model, const PruneOptions& options,
                                      BatchSource* calibration);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_PRUNE_PRUNER_H_
