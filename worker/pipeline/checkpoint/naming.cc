#include "worker/pipeline/checkpoint/naming.h"

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace compress::pipeline {
namespace {

bool IsRebuiltBuffer(const std::string& name) {
  return absl::EndsWith(name, ".relative_position_index") || absl::EndsWith(name, ".attn_mask") ||
         name == "relative_position_index" || name == "attn_mask";
}

// Splits "a.b.c" at its first dot into ("a", "b.c"); the rest is empty if there is no dot.
std::pair<std::string, std::string> SplitFirst(const std::string& name) {
  const size_t dot = name.find('.');
  if (dot == std::string::npos) return {name, ""};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

std::string MicrosoftToNative(const std::string& name) {
  if (name == "head.weight" || name == "head.bias") return absl::StrCat("head.fc.", name.substr(5));
  // layers.{s}.downsample.X ends stage s; natively it starts stage s + 1.
  std::vector<std::string> parts = absl::StrSplit(name, '.');
  int stage = 0;
  if (parts.size() >= 4 && parts[0] == "layers" && parts[2] == "downsample" &&
      absl::SimpleAtoi(parts[1], &stage)) {
    parts[1] = absl::StrCat(stage + 1);
    return absl::StrJoin(parts, ".");
  }
  return name;
}

std::string TorchvisionToNative(const std::string& name) {
  if (absl::StartsWith(name, "features.0.0.")) {
    return absl::StrCat("patch_embed.proj.", name.substr(13));
  }
  if (absl::StartsWith(name, "features.0.2.")) {
    return absl::StrCat("patch_embed.norm.", name.substr(13));
  }
  if (absl::StartsWith(name, "head.")) return absl::StrCat("head.fc.", name.substr(5));
  if (!absl::StartsWith(name, "features.")) return name;
  auto [index_text, rest] = SplitFirst(name.substr(9));
  int index = 0;
  if (!absl::SimpleAtoi(index_text, &index) || index <= 0 || rest.empty()) return name;
  if (index % 2 == 0) {
    // features.{2s} is the patch merging that starts stage s.
    return absl::StrCat("layers.", index / 2, ".downsample.", rest);
  }
  // features.{2s+1}.{b}.X is block b of stage s; its MLP is a Sequential (0: fc1, 3: fc2).
  auto [block, block_rest] = SplitFirst(rest);
  if (absl::StartsWith(block_rest, "mlp.0.")) {
    block_rest = absl::StrCat("mlp.fc1.", block_rest.substr(6));
  } else if (absl::StartsWith(block_rest, "mlp.3.")) {
    block_rest = absl::StrCat("mlp.fc2.", block_rest.substr(6));
  }
  return absl::StrCat("layers.", index / 2, ".blocks.", block, ".", block_rest);
}

}  // namespace

absl::StatusOr<Naming> ParseNaming(std::string_view text) {
  if (text == "auto") return Naming::kAuto;
  if (text == "timm" || text == "native") return Naming::kNative;
  if (text == "microsoft") return Naming::kMicrosoft;
  if (text == "torchvision") return Naming::kTorchvision;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown checkpoint naming \"", std::string(text),
                   "\"; expected auto, timm, microsoft or torchvision"));
}

const char* NamingName(Naming naming) {
  switch (naming) {
    case Naming::kAuto:
      return "auto";
    case Naming::kNative:
      return "timm";
    case Naming::kMicrosoft:
      return "microsoft";
    case Naming::kTorchvision:
      return "torchvision";
  }
  return "unknown";
}

Naming DetectNaming(const std::vector<std::string>& names) {
  bool microsoft = false;
  for (const std::string& name : names) {
    if (absl::StartsWith(name, "features.")) return Naming::kTorchvision;
    if (absl::StartsWith(name, "head.fc.")) return Naming::kNative;
    if (name == "head.weight" || absl::StartsWith(name, "layers.0.downsample.")) microsoft = true;
  }
  return microsoft ? Naming::kMicrosoft : Naming::kNative;
}

std::optional<std::string> ToNativeName(const std::string& name, Naming naming) {
  if (IsRebuiltBuffer(name)) return std::nullopt;
  switch (naming) {
    case Naming::kMicrosoft:
      return MicrosoftToNative(name);
    case Naming::kTorchvision:
      return TorchvisionToNative(name);
    case Naming::kAuto:
    case Naming::kNative:
      break;
  }
  return name;
}

}  // namespace compress::pipeline
