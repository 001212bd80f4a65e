#include "worker/pipeline/share/share_from_teacher.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <system_error>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "worker/events/durable_file.h"
#include "worker/pipeline/checkpoint/model_io.h"
#include "worker/pipeline/model/torch_error.h"

namespace compress::pipeline {
namespace {

std::string JoinPath(const std::string& dir, const char* file) {
  return (std::filesystem::path(dir) / file).string();
}

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// The teacher tensors a shared-model tensor is initialised from (averaged when several), or
// none for a transform (left at identity). Names: see shared_swin.h.
std::vector<std::string> TeacherSources(const SharingConfig& config, const std::string& name,
                                        SharedInit init) {
  const std::vector<std::string> parts = absl::StrSplit(name, '.');
  int stage = 0, group = 0, pass = 0;
  if (parts.size() < 6 || parts[0] != "layers" || parts[2] != "groups" ||
      !absl::SimpleAtoi(parts[1], &stage) || !absl::SimpleAtoi(parts[3], &group)) {
    return {name};  // patch_embed, downsample, norm, head: same names as the teacher's
  }
  const int first = config.group_first_block(stage, group);
  const std::string prefix = absl::StrCat("layers.", stage, ".blocks.");
  if (parts[4] == "shared") {
    const std::string rest = absl::StrJoin(parts.begin() + 5, parts.end(), ".");
    const int count = init == SharedInit::kFirst ? 1 : config.group_sizes[stage][group];
    std::vector<std::string> sources;
    for (int b = first; b < first + count; ++b)
      sources.push_back(absl::StrCat(prefix, b, ".", rest));
    return sources;
  }
  if (parts[4] == "passes" && absl::SimpleAtoi(parts[5], &pass) && parts.size() >= 7 &&
      (parts[6] == "norm1" || parts[6] == "norm2")) {
    return {absl::StrCat(prefix, first + pass, ".",
                         absl::StrJoin(parts.begin() + 6, parts.end(), "."))};
  }
  return {};
}

}  // namespace

absl::StatusOr<SharedInit> ParseSharedInit(std::string_view text) {
  if (text == "first") return SharedInit::kFirst;
  if (text == "mean") return SharedInit::kMean;
  return absl::InvalidArgumentError(
      absl::StrCat("shared weight init \"", std::string(text), "\" is not \"first\" or \"mean\""));
}

const char* SharedInitName(SharedInit init) {
  return init == SharedInit::kFirst ? "first" : "mean";
}

absl::StatusOr<SharingConfig> MakeSharingConfig(const SwinConfig& base,
                                                const SharingOptions& options) {
  SharingConfig config = DefaultSharing(base);
  if (!options.group_sizes.empty()) config.group_sizes = options.group_sizes;
  config.attention_transform = options.attention_transform;
  config.mlp_transform = options.mlp_transform;
  if (absl::Status status = config.Validate(); !status.ok()) return status;
  return config;
}

absl::StatusOr<SharedSwin> ShareFromTeacher(const SwinTransformer& teacher,
                                            const SharingOptions& options) {
  absl::StatusOr<SharingConfig> config = MakeSharingConfig(teacher->config(), options);
  if (!config.ok()) return config.status();
  absl::StatusOr<SharedSwin> model = CreateSharedSwin(*config);
  if (!model.ok()) return model.status();
  try {
    std::map<std::string, torch::Tensor> source;
    for (auto& [name, tensor] : teacher->StateDict()) source.emplace(name, tensor);
    torch::NoGradGuard no_grad;
    for (auto& [name, target] : (*model)->StateDict()) {
      const std::vector<std::string> names = TeacherSources(*config, name, options.init);
      if (names.empty()) continue;
      torch::Tensor sum;
      for (const std::string& source_name : names) {
        auto it = source.find(source_name);
        if (it == source.end() || it->second.sizes() != target.sizes()) {
          return absl::InternalError(
              absl::StrCat("sharing: the teacher has no tensor \"", source_name, "\" of shape ",
                           ShapeString(target.sizes()), " to initialise \"", name, "\" from"));
        }
        torch::Tensor value = it->second.detach().to(torch::kCPU, torch::kFloat64);
        sum = sum.defined() ? sum + value : value;
      }
      target.copy_(sum / static_cast<double>(names.size()));
    }
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, "initialising the shared model from the teacher");
  }
  return model;
}

absl::Status LoadSharedStateDict(SharedSwin& model, const NamedTensors& tensors,
                                 const std::string& source) {
  return CopyNamedTensorsStrict(model->StateDict(), tensors, source, "shared model");
}

absl::Status SaveSharedModel(const std::string& dir, const SharedSwin& model) {
  const SharingConfig& config = model->config();
  if (absl::Status status = config.Validate(); !status.ok()) return status;
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return ErrnoStatus(error.value(), absl::StrCat("cannot create checkpoint directory ", dir));
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"architecture", "swin_shared"}};
  absl::Status status =
      WriteSafetensors(JoinPath(dir, kModelFileName), model->StateDict(), metadata);
  if (!status.ok()) return status;
  return WriteFileAtomically(JoinPath(dir, kConfigFileName), config.ToJsonString());
}

absl::StatusOr<SharedSwin> LoadSharedModel(const std::string& dir) {
  const std::string config_path = JoinPath(dir, kConfigFileName);
  absl::StatusOr<std::string> text = ReadFileToString(config_path);
  if (!text.ok()) return text.status();
  absl::StatusOr<SharingConfig> config = SharingConfig::FromJsonString(*text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(config_path, ": ", config.status().message()));
  }
  absl::StatusOr<SharedSwin> model = CreateSharedSwin(*config);
  if (!model.ok()) return model.status();
  const std::string weights_path = JoinPath(dir, kModelFileName);
  absl::StatusOr<SafetensorsContents> contents = ReadSafetensors(weights_path);
  if (!contents.ok()) return contents.status();
  if (absl::Status status = LoadSharedStateDict(*model, contents->tensors, weights_path);
      !status.ok()) {
    return status;
  }
  return model;
}

}  // namespace compress::pipeline
