// The options of each compression stage, from the job spec's sections (the spec's fields are
// documented in proto/compress/v1/job_spec.proto).
#ifndef COMPRESS_WORKER_RUN_STAGE_OPTIONS_H_
#define COMPRESS_WORKER_RUN_STAGE_OPTIONS_H_

#include "absl/status/statusor.h"
#include "worker/pipeline/distill/distill_stage.h"
#include "worker/pipeline/model/swin_config.h"
#include "worker/pipeline/prune/pruner.h"
#include "worker/pipeline/share/distill_losses.h"
#include "worker/pipeline/share/share_from_teacher.h"
#include "worker/spec/job_spec.h"

namespace compress::run {

// spec.share.group_size holds one group size per stage (a single value applies to every
// stage; empty: one group per stage); a stage's blocks are cut into consecutive groups of that
// size, the last one possibly shorter. INVALID_ARGUMENT naming the field otherwise.
absl::StatusOr<pipeline::SharingOptions> SharingOptionsFromSpec(const spec::ShareSpec& share,
                                                                const pipeline::SwinConfig& base);

// The share stage's weight-distillation loss.
pipeline::WeightDistillOptions ShareLossFromSpec(const spec::ShareSpec& share);

// Pruning options for one prune phase removing `reduction` of the current model's MACs, or of
// its parameters when the spec sets target_params_reduction.
absl::StatusOr<pipeline::PruneOptions> PruneOptionsFromSpec(const spec::PruneSpec& prune,
                                                            double reduction);

// The distill stage's loss (the trainer options are filled by the caller).
pipeline::DistillStageOptions DistillOptionsFromSpec(const spec::DistillSpec& distill);

// The reduction a prune phase must remove from a model of `current` MACs (or parameters) so that
// the result has (1 - target) * teacher: the spec's target is relative to the teacher, and
// sharing changes the count before pruning (its transformation layers add operations; shared
// blocks remove parameters).
double PhaseReduction(double target, int64_t teacher, int64_t current);

}  // namespace compress::run

#endif  // COMPRESS_WORKER_RUN_STAGE_OPTIONS_H_
