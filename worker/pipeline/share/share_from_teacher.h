// Making a shared Swin from a trained one (ShareFromTeacher) and saving / loading shared models:
// a checkpoint directory holds model.safetensors (SharedSwinImpl::StateDict names) and
// config.json (SharingConfig::ToJson: the base config plus its "sharing" section), so that
// LoadSharedModel rebuilds the model from the pair alone. Every function returns a status; no
// LibTorch exception escapes.
#ifndef COMPRESS_WORKER_PIPELINE_SHARE_SHARE_FROM_TEACHER_H_
#define COMPRESS_WORKER_PIPELINE_SHARE_SHARE_FROM_TEACHER_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/pipeline/checkpoint/safetensors.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/share/shared_swin.h"
#include "worker/pipeline/share/sharing_config.h"

namespace compress::pipeline {

// How a group's shared weights are initialised from the blocks it replaces.
enum class SharedInit {
  kFirst,  // "first": the group's first block.
  kMean,   // "mean": the element-wise mean over the group's blocks.
};

// "first" or "mean"; INVALID_ARGUMENT otherwise.
absl::StatusOr<SharedInit> ParseSharedInit(std::string_view text);
const char* SharedInitName(SharedInit init);

struct SharingOptions {
  // Group sizes per stage (see SharingConfig::group_sizes); empty: one group per stage.
  std::vector<std::vector<int>> group_sizes;
  // Give every pass proj_l / proj_w.
  bool attention_transform = true;
  // Give every pass the FFN transform.
  bool mlp_transform = true;
  // Initialisation of the shared weights. `first` reproduces the teacher exactly when a group's
  // blocks are equal; the first-vs-mean comparison is pending (bench/results/share.md).
  SharedInit init = SharedInit::kFirst;
};

// The SharingConfig that `options` describe for a model of `base`; INVALID_ARGUMENT naming the
// field when it does not validate.
absl::StatusOr<SharingConfig> MakeSharingConfig(const SwinConfig& base,
                                                const SharingOptions& options);

// A shared model (on the CPU, training mode) of teacher->config(): patch embedding, mergings,
// final norm and head copied from the teacher; each pass's norm1 / norm2 from the block it
// replaces; each group's shared weights from its first block or the mean of its blocks;
// transforms at identity. The teacher is not changed.
absl::StatusOr<SharedSwin> ShareFromTeacher(const SwinTransformer& teacher,
                                            const SharingOptions& options);

// Writes dir/model.safetensors and dir/config.json (created if needed; each file replaced
// atomically, config.json last).
absl::Status SaveSharedModel(const std::string& dir, const SharedSwin& model);

// Builds a fresh SharedSwin from dir/config.json and loads dir/model.safetensors strictly.
// NOT_FOUND for a missing file; INVALID_ARGUMENT for a bad config or a missing, unexpected or
// mis-shaped tensor (named); DATA_LOSS for a corrupt file.
absl::StatusOr<SharedSwin> LoadSharedModel(const std::string& dir);

// Copies `tensors` into the model strictly (every stored tensor exactly once with its shape,
// nothing else); INVALID_ARGUMENT naming the tensors otherwise, the model unchanged.
absl::Status LoadSharedStateDict(SharedSwin& model, const NamedTensors& tensors,
                                 const std::string& source);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_SHARE_SHARE_FROM_TEACHER_H_
