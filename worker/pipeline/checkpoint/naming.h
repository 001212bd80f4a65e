// Parameter naming schemes of Swin checkpoints and their mapping to the native one (timm >= 0.9,
// the names SwinTransformerImpl registers). The tables are in docs/checkpoints.md. Torch-free.
#ifndef COMPRESS_WORKER_PIPELINE_CHECKPOINT_NAMING_H_
#define COMPRESS_WORKER_PIPELINE_CHECKPOINT_NAMING_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace compress::pipeline {

enum class Naming {
  kAuto,         // Detect from the names (DetectNaming).
  kNative,       // timm >= 0.9: downsample at the start of stages 1.., head.fc.
  kMicrosoft,    // microsoft/Swin-Transformer (and timm < 0.9): downsample at the end of
                 // stages 0..n-2, head.{weight,bias}.
  kTorchvision,  // torchvision.models.swin_t and friends: features.N..., mlp.0 / mlp.3.
};

// "auto", "timm" (or "native"), "microsoft", "torchvision"; INVALID_ARGUMENT otherwise.
absl::StatusOr<Naming> ParseNaming(std::string_view text);
const char* NamingName(Naming naming);

// Guesses the scheme of a checkpoint from its tensor names: any "features." name means
// torchvision; "head.fc." means native; "head.weight" or a "layers.0.downsample." name means
// Microsoft; anything else is taken as native.
Naming DetectNaming(const std::vector<std::string>& names);

// The native name of `name` under `naming` (kAuto counts as kNative here: detect first), or
// nullopt for the buffers that are rebuilt and never loaded (relative_position_index,
// attn_mask). Names no rule covers come back unchanged, for the strict loader to report.
std::optional<std::string> ToNativeName(const std::string& name, Naming naming);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_CHECKPOINT_NAMING_H_
