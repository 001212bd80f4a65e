#include "worker/pipeline/share/sharing_config.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace compress::pipeline {
namespace {

using Json = nlohmann::json;

constexpr const char* kSharingField = "sharing";

absl::Status SharingError(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config: sharing.", what));
}

}  // namespace

int SharingConfig::group_first_block(int stage, int group) const {
  int first = 0;
  for (int g = 0; g < group; ++g) first += group_sizes.at(stage).at(g);
  return first;
}

int SharingConfig::group_of_block(int stage, int block) const {
  int end = 0;
  for (int g = 0; g < num_groups(stage); ++g) {
    end += group_sizes[stage][g];
    if (block < end) return g;
  }
  return -1;
}

int SharingConfig::pass_of_block(int stage, int block) const {
  const int group = group_of_block(stage, block);
  return group < 0 ? -1 : block - group_first_block(stage, group);
}

absl::Status SharingConfig::Validate() const {
  if (absl::Status status = base.Validate(); !status.ok()) return status;
  if (group_sizes.size() != base.stages.size()) {
    return SharingError(absl::StrCat("group_sizes has ", group_sizes.size(),
                                     " stages but the model has ", base.stages.size()));
  }
  for (size_t s = 0; s < group_sizes.size(); ++s) {
    const std::vector<BlockWidths>& blocks = base.stages[s].blocks;
    if (group_sizes[s].empty()) {
      return SharingError(absl::StrCat("group_sizes[", s, "] is empty"));
    }
    size_t first = 0;
    for (size_t g = 0; g < group_sizes[s].size(); ++g) {
      const int size = group_sizes[s][g];
      if (size <= 0) {
        return SharingError(
            absl::StrCat("group_sizes[", s, "][", g, "] is ", size, " but must be positive"));
      }
      if (first + size > blocks.size()) break;  // reported below as a wrong sum
      for (size_t b = first + 1; b < first + size; ++b) {
        if (!(blocks[b] == blocks[first])) {
          return SharingError(absl::StrCat("group_sizes[", s, "][", g, "]: block ", b, " of stage ",
                                           s, " has other widths than block ", first,
                                           " and cannot share its weights"));
        }
      }
      first += size;
    }
    int total = 0;
    for (int size : group_sizes[s]) total += size;
    if (total != static_cast<int>(blocks.size())) {
      return SharingError(absl::StrCat("group_sizes[", s, "] sums to ", total, " but stage ", s,
                                       " has ", blocks.size(), " blocks"));
    }
  }
  return absl::OkStatus();
}

Json SharingConfig::ToJson() const {
  Json json = base.ToJson();
  json[kSharingField] = {{"group_sizes", group_sizes},
                         {"attention_transform", attention_transform},
                         {"mlp_transform", mlp_transform}};
  return json;
}

std::string SharingConfig::ToJsonString() const { return ToJson().dump(2) + "\n"; }

absl::StatusOr<SharingConfig> SharingConfig::FromJson(const Json& json) {
  if (!json.is_object()) return absl::InvalidArgumentError("config: must be a JSON object");
  auto it = json.find(kSharingField);
  if (it == json.end()) {
    return absl::InvalidArgumentError(
        "config: missing field \"sharing\" (not the config of a shared model)");
  }
  const Json& sharing = *it;
  if (!sharing.is_object()) return SharingError("must be a JSON object");
  Json base_json = json;
  base_json.erase(kSharingField);
  absl::StatusOr<SwinConfig> base = SwinConfig::FromJson(base_json);
  if (!base.ok()) return base.status();

  SharingConfig config;
  config.base = *std::move(base);
  for (auto field = sharing.begin(); field != sharing.end(); ++field) {
    if (field.key() != "group_sizes" && field.key() != "attention_transform" &&
        field.key() != "mlp_transform") {
      return SharingError(absl::StrCat(field.key(), " is not a known field"));
    }
  }
  for (const char* name : {"attention_transform", "mlp_transform"}) {
    auto flag = sharing.find(name);
    if (flag == sharing.end()) return SharingError(absl::StrCat(name, " is missing"));
    if (!flag->is_boolean()) return SharingError(absl::StrCat(name, " must be a boolean"));
  }
  config.attention_transform = sharing["attention_transform"].get<bool>();
  config.mlp_transform = sharing["mlp_transform"].get<bool>();
  auto groups = sharing.find("group_sizes");
  if (groups == sharing.end()) return SharingError("group_sizes is missing");
  if (!groups->is_array()) return SharingError("group_sizes must be an array of arrays");
  for (size_t s = 0; s < groups->size(); ++s) {
    const Json& stage = (*groups)[s];
    if (!stage.is_array()) {
      return SharingError(absl::StrCat("group_sizes[", s, "] must be an array of integers"));
    }
    std::vector<int> sizes;
    for (size_t g = 0; g < stage.size(); ++g) {
      if (!stage[g].is_number_integer()) {
        return SharingError(absl::StrCat("group_sizes[", s, "][", g, "] must be an integer"));
      }
      const int64_t size = stage[g].get<int64_t>();
      if (size <= 0 || size > (int64_t{1} << 20)) {
        return SharingError(
            absl::StrCat("group_sizes[", s, "][", g, "] is ", size, " but must be positive"));
      }
      sizes.push_back(static_cast<int>(size));
    }
    config.group_sizes.push_back(std::move(sizes));
  }
  if (absl::Status status = config.Validate(); !status.ok()) return status;
  return config;
}

absl::StatusOr<SharingConfig> SharingConfig::FromJsonString(std::string_view text) {
  Json json = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError("config: not valid JSON");
  return FromJson(json);
}

bool SharingConfig::operator==(const SharingConfig& other) const {
  return base == other.base && group_sizes == other.group_sizes &&
         attention_transform == other.attention_transform && mlp_transform == other.mlp_transform;
}

SharingConfig DefaultSharing(const SwinConfig& base) {
  SharingConfig config;
  config.base = base;
  config.group_sizes = UniformGroupSizes(base, 0);
  return config;
}

std::vector<std::vector<int>> UniformGroupSizes(const SwinConfig& base, int group_size) {
  std::vector<std::vector<int>> sizes;
  for (const StageConfig& stage : base.stages) {
    const int depth = static_cast<int>(stage.blocks.size());
    std::vector<int> groups;
    if (group_size <= 0) {
      groups.push_back(depth);
    } else {
      for (int first = 0; first < depth; first += group_size) {
        groups.push_back(std::min(group_size, depth - first));
      }
    }
    sizes.push_back(std::move(groups));
  }
  return sizes;
}

}  // namespace compress::pipeline
