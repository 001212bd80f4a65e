// Saving and loading Swin models: a checkpoint directory holds model.safetensors (native names)
// and config.json (the exact architecture, SwinConfig::ToJson), so that LoadModel rebuilds the
// model from the pair alone. Foreign checkpoints (timm, Microsoft, torchvision names) are
// imported into a model built from a given config. Every function catches LibTorch errors and
// returns a status. See docs/checkpoints.md.
#ifndef COMPRESS_WORKER_PIPELINE_CHECKPOINT_MODEL_IO_H_
#define COMPRESS_WORKER_PIPELINE_CHECKPOINT_MODEL_IO_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/pipeline/checkpoint/naming.h"
#include "worker/pipeline/checkpoint/safetensors.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/model/swin_config.h"

namespace compress::pipeline {

inline constexpr const char* kModelFileName = "model.safetensors";
inline constexpr const char* kConfigFileName = "config.json";

// Writes dir/model.safetensors (the model's StateDict, on the CPU) and dir/config.json
// (`config`), creating dir if needed. Each file is replaced atomically; config.json is written
// last. `config` must describe `model` (LoadModel checks every tensor against it).
absl::Status SaveModel(const std::string& dir, const SwinTransformer& model,
                       const SwinConfig& config);
// The same with the config the model was built from.
absl::Status SaveModel(const std::string& dir, const SwinTransformer& model);

struct LoadedModel {
  SwinConfig config;
  SwinTransformer model{nullptr};  // On the CPU, in training mode.
};

// Builds a fresh model from dir/config.json and loads dir/model.safetensors into it strictly.
// NOT_FOUND if a file is missing; INVALID_ARGUMENT for a bad config or a tensor that is
// missing, unexpected or of the wrong shape (naming it); DATA_LOSS for a corrupt file.
absl::StatusOr<LoadedModel> LoadModel(const std::string& dir);

// Copies `tensors` (native names) into the model's parameters and stored buffers. Strict:
// every stored tensor of the model must be given exactly once with its exact shape, and no
// other name may appear; floating-point tensors are converted to the parameter's dtype.
// INVALID_ARGUMENT naming the tensors otherwise (the model is left unchanged). `source` names
// where the tensors came from in messages.
// The strict copy behind LoadStateDict, for any module: `targets` are the module's stored
// tensors by name (its StateDict()), which share storage with it. `model_kind` names the model
// in messages ("model", "shared model").
absl::Status CopyNamedTensorsStrict(const NamedTensors& targets, const NamedTensors& tensors,
                                    const std::string& source, const std::string& model_kind);

absl::Status LoadStateDict(SwinTransformer& model, const NamedTensors& tensors,
                           const std::string& source);

// Reads a safetensors checkpoint in any supported naming and returns its tensors under
// native names, rebuilt buffers dropped. kAuto detects the naming from the names.
absl::StatusOr<NamedTensors> ReadWeightsAsNative(const std::string& path, Naming naming);

// ReadWeightsAsNative, then LoadStateDict: imports a foreign checkpoint into a model built
// from the matching config.
absl::Status LoadWeights(SwinTransformer& model, const std::string& path, Naming naming);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_CHECKPOINT_MODEL_IO_H_
