#include "worker/run/stage_model.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/pipeline/checkpoint/model_io.h"
#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/share/share_from_teacher.h"
#include "worker/pipeline/share/shared_cost.h"

namespace compress::run {

namespace pl = compress::pipeline;

absl::StatusOr<StageModel> StageModel::Load(const std::string& dir) {
  const std::string config_path = dir + "/config.json";
  std::ifstream in(config_path);
  if (!in) return absl::NotFoundError(absl::StrCat(config_path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json config = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::DataLossError(absl::StrCat(config_path, ": not a JSON object"));
  }
  if (config.contains("sharing")) {
    absl::StatusOr<pl::SharedSwin> shared = pl::LoadSharedModel(dir);
    if (!shared.ok()) return shared.status();
    return StageModel(*shared);
  }
  absl::StatusOr<pl::LoadedModel> loaded = pl::LoadModel(dir);
  if (!loaded.ok()) return loaded.status();
  return StageModel(loaded->model);
}

absl::Status StageModel::Save(const std::string& dir) const {
  return is_shared() ? pl::SaveSharedModel(dir, shared_) : pl::SaveModel(dir, plain_);
}

torch::nn::Module& StageModel::module() const {
  return is_shared() ? static_cast<torch::nn::Module&>(*shared_.ptr())
                     : static_cast<torch::nn::Module&>(*plain_.ptr());
}

const pl::SwinConfig& StageModel::config() const {
  return is_shared() ? shared_->config().base : plain_->config();
}

torch::Tensor StageModel::forward(const torch::Tensor& images) const {
  return is_shared() ? shared_.ptr()->forward(images) : plain_.ptr()->forward(images);
}

pl::DistillStudent StageModel::AsStudent() const {
  return is_shared() ? pl::MakeDistillStudent(shared_) : pl::MakeDistillStudent(plain_);
}

absl::StatusOr<StageModel::Cost> StageModel::AnalyzeCost() const {
  if (is_shared()) {
    absl::StatusOr<pl::SharedCost> cost = pl::AnalyzeSharedCost(shared_->config());
    if (!cost.ok()) return cost.status();
    return Cost{cost->params, cost->total.macs};
  }
  absl::StatusOr<pl::SwinCost> cost = pl::AnalyzeSwinCost(plain_->config());
  if (!cost.ok()) return cost.status();
  return Cost{cost->params, cost->total.macs};
}

}  // namespace compress::run
