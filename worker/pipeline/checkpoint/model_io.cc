#include "worker/pipeline/checkpoint/model_io.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/events/durable_file.h"
#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/model/torch_error.h"

namespace compress::pipeline {
namespace {

// At most this many problems of one kind are spelled out in an error message.
constexpr size_t kMaxListedProblems = 10;

// Appends "<kind>: a, b, c (and N more)" to `problems` if `names` is not empty.
void AddProblems(const char* kind, const std::vector<std::string>& names,
                 std::vector<std::string>& problems) {
  if (names.empty()) return;
  const size_t listed = std::min(names.size(), kMaxListedProblems);
  std::string text =
      absl::StrCat(kind, ": ", absl::StrJoin(names.begin(), names.begin() + listed, ", "));
  if (names.size() > listed) absl::StrAppend(&text, " (and ", names.size() - listed, " more)");
  problems.push_back(std::move(text));
}

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string JoinPath(const std::string& dir, const char* file) {
  return (std::filesystem::path(dir) / file).string();
}

}  // namespace

absl::Status CopyNamedTensorsStrict(const NamedTensors& targets, const NamedTensors& tensors,
                                    const std::string& source, const std::string& model_kind) {
  try {
    std::map<std::string, const torch::Tensor*> given;
    std::vector<std::string> repeated, missing, mismatched, unexpected;
    for (const auto& [name, tensor] : tensors) {
      if (!given.emplace(name, &tensor).second) repeated.push_back(absl::StrCat("\"", name, "\""));
    }
    std::vector<std::pair<torch::Tensor, const torch::Tensor*>> copies;
    std::vector<std::string> copy_names;
    for (const auto& [name, target] : targets) {
      auto it = given.find(name);
      if (it == given.end()) {
        missing.push_back(absl::StrCat("\"", name, "\""));
        continue;
      }
      const torch::Tensor& value = *it->second;
      given.erase(it);
      if (value.sizes() != target.sizes()) {
        mismatched.push_back(absl::StrCat("\"", name, "\" has shape ", ShapeString(value.sizes()),
                                          " but the model expects ", ShapeString(target.sizes())));
      } else if (value.is_floating_point() != target.is_floating_point()) {
        mismatched.push_back(absl::StrCat(
            "\"", name, "\" has dtype ", std::string(c10::toString(value.scalar_type())),
            " but the model expects ", std::string(c10::toString(target.scalar_type()))));
      } else {
        copies.emplace_back(target, &value);
        copy_names.push_back(name);
      }
    }
    for (const auto& [name, unused] : given) unexpected.push_back(absl::StrCat("\"", name, "\""));
    std::vector<std::string> problems;
    AddProblems("tensors given twice", repeated, problems);
    AddProblems("missing tensors", missing, problems);
    AddProblems("wrong tensors", mismatched, problems);
    AddProblems("unexpected tensors", unexpected, problems);
    if (!problems.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(source, " does not match the ", model_kind,
                                                     ": ", absl::StrJoin(problems, "; ")));
    }
    // A NaN or infinity in a weight would be trained on or published: refuse the file.
    for (size_t k = 0; k < copies.size(); ++k) {
      const torch::Tensor& value = *copies[k].second;
      if (value.is_floating_point() && !torch::isfinite(value).all().item<bool>()) {
        return absl::DataLossError(absl::StrCat(source, ": tensor \"", copy_names[k],
                                                "\" has non-finite values (NaN or infinity)"));
      }
    }
    torch::NoGradGuard no_grad;
    for (auto& [target, value] : copies) target.copy_(*value);
    return absl::OkStatus();
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, absl::StrCat("loading weights from ", source));
  }
}

absl::Status LoadStateDict(SwinTransformer& model, const NamedTensors& tensors,
                           const std::string& source) {
  return CopyNamedTensorsStrict(model->StateDict(), tensors, source, "model");
}

absl::Status SaveModel(const std::string& dir, const SwinTransformer& model,
                       const SwinConfig& config) {
  if (absl::Status status = config.Validate(); !status.ok()) return status;
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return ErrnoStatus(error.value(), absl::StrCat("cannot create checkpoint directory ", dir));
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"architecture", "swin"}};
  absl::Status status =
      WriteSafetensors(JoinPath(dir, kModelFileName), model->StateDict(), metadata);
  if (!status.ok()) return status;
  return WriteFileAtomically(JoinPath(dir, kConfigFileName), config.ToJsonString());
}

absl::Status SaveModel(const std::string& dir, const SwinTransformer& model) {
  return SaveModel(dir, model, model->config());
}

absl::StatusOr<LoadedModel> LoadModel(const std::string& dir) {
  const std::string config_path = JoinPath(dir, kConfigFileName);
  absl::StatusOr<std::string> config_text = ReadFileToString(config_path);
  if (!config_text.ok()) return config_text.status();
  absl::StatusOr<SwinConfig> config = SwinConfig::FromJsonString(*config_text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(config_path, ": ", config.status().message()));
  }
  const std::string weights_path = JoinPath(dir, kModelFileName);
  // A config.json that describes more parameters than the weights file has bytes is refused
  // before the model is built: a corrupt or hostile one would otherwise allocate without bound
  // (and fail as a retryable allocation error).
  absl::StatusOr<SwinCost> cost = AnalyzeSwinCost(*config);
  if (!cost.ok()) {
    return absl::Status(cost.status().code(),
                        absl::StrCat(config_path, ": ", cost.status().message()));
  }
  std::error_code size_error;
  const uintmax_t weights_bytes = std::filesystem::file_size(weights_path, size_error);
  if (!size_error && weights_bytes < static_cast<uintmax_t>(cost->params)) {
    return absl::DataLossError(absl::StrCat(config_path, ": describes a model of ", cost->params,
                                            " parameters, more than ", weights_path, " (",
                                            weights_bytes, " bytes) can hold"));
  }
  absl::StatusOr<SwinTransformer> model = CreateSwinTransformer(*config);
  if (!model.ok()) return model.status();
  absl::StatusOr<SafetensorsContents> contents = ReadSafetensors(weights_path);
  if (!contents.ok()) return contents.status();
  if (absl::Status status = LoadStateDict(*model, contents->tensors, weights_path); !status.ok()) {
    return status;
  }
  return LoadedModel{*std::move(config), *std::move(model)};
}

absl::StatusOr<NamedTensors> ReadWeightsAsNative(const std::string& path, Naming naming) {
  absl::StatusOr<SafetensorsContents> contents = ReadSafetensors(path);
  if (!contents.ok()) return contents.status();
  if (naming == Naming::kAuto) {
    std::vector<std::string> names;
    for (const auto& [name, unused] : contents->tensors) names.push_back(name);
    naming = DetectNaming(names);
  }
  NamedTensors native;
  for (auto& [name, tensor] : contents->tensors) {
    std::optional<std::string> native_name = ToNativeName(name, naming);
    if (native_name.has_value()) native.emplace_back(*std::move(native_name), std::move(tensor));
  }
  return native;
}

absl::Status LoadWeights(SwinTransformer& model, const std::string& path, Naming naming) {
  absl::StatusOr<NamedTensors> tensors = ReadWeightsAsNative(path, naming);
  if (!tensors.ok()) return tensors.status();
  return LoadStateDict(model, *tensors, path);
}

}  // namespace compress::pipeline
