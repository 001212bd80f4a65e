#include "worker/pipeline/model/swin_config.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace compress::pipeline {
namespace {

using Json = nlohmann::json;

// The config.json format version written by ToJson; FromJson accepts exactly this one.
constexpr int kFormatVersion = 1;

// Reads the fields of one JSON object, remembering which were consumed so that unknown fields
// can be reported. Errors name the field by its path, e.g. "stages[1].blocks[0].num_heads".
class ObjectReader {
 public:
  ObjectReader(const Json& json, std::string path) : json_(json), path_(std::move(path)) {}

  absl::Status CheckObject() const {
    if (!json_.is_object())
      return absl::InvalidArgumentError(absl::StrCat(Where(), " must be a JSON object"));
    return absl::OkStatus();
  }

  absl::StatusOr<const Json*> Field(const std::string& name) {
    seen_.insert(name);
    auto it = json_.find(name);
    if (it == json_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("config: missing field \"", Path(name), "\""));
    }
    return &*it;
  }

  absl::Status Int(const std::string& name, int* out) {
    absl::StatusOr<const Json*> field = Field(name);
    if (!field.ok()) return field.status();
    if (!(*field)->is_number_integer()) return TypeError(name, "an integer");
    const int64_t value = (*field)->get<int64_t>();
    if (value < -(int64_t{1} << 31) || value >= (int64_t{1} << 31))
      return TypeError(name, "a 32-bit integer");
    *out = static_cast<int>(value);
    return absl::OkStatus();
  }

  absl::Status Double(const std::string& name, double* out) {
    absl::StatusOr<const Json*> field = Field(name);
    if (!field.ok()) return field.status();
    if (!(*field)->is_number()) return TypeError(name, "a number");
    *out = (*field)->get<double>();
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& name, bool* out) {
    absl::StatusOr<const Json*> field = Field(name);
    if (!field.ok()) return field.status();
    if (!(*field)->is_boolean()) return TypeError(name, "a boolean");
    *out = (*field)->get<bool>();
    return absl::OkStatus();
  }

  absl::StatusOr<const Json*> Array(const std::string& name) {
    absl::StatusOr<const Json*> field = Field(name);
    if (!field.ok()) return field.status();
    if (!(*field)->is_array()) return TypeError(name, "an array");
    return field;
  }

  // INVALID_ARGUMENT naming the first field that was never asked for.
  absl::Status CheckNoUnknownFields() const {
    for (auto it = json_.begin(); it != json_.end(); ++it) {
      if (seen_.count(it.key()) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("config: unknown field \"", Path(it.key()), "\""));
      }
    }
    return absl::OkStatus();
  }

  std::string Path(const std::string& name) const {
    return path_.empty() ? name : absl::StrCat(path_, ".", name);
  }

 private:
  std::string Where() const {
    return path_.empty() ? "config" : absl::StrCat("config field \"", path_, "\"");
  }
  absl::Status TypeError(const std::string& name, const char* expected) const {
    return absl::InvalidArgumentError(
        absl::StrCat("config: field \"", Path(name), "\" must be ", expected));
  }

  const Json& json_;
  std::string path_;
  std::set<std::string> seen_;
};

absl::Status Positive(int value, const std::string& field) {
  if (value <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: ", field, " must be positive, got ", value));
  }
  return absl::OkStatus();
}

#define COMPRESS_RETURN_IF_ERROR(expr) \
  do {                                 \
    absl::Status status_ = (expr);     \
    if (!status_.ok()) return status_; \
  } while (false)

}  // namespace

std::vector<int> SwinConfig::depths() const {
  std::vector<int> result;
  for (const StageConfig& stage : stages) result.push_back(static_cast<int>(stage.blocks.size()));
  return result;
}

int SwinConfig::total_blocks() const {
  int total = 0;
  for (const StageConfig& stage : stages) total += static_cast<int>(stage.blocks.size());
  return total;
}

int SwinConfig::stage_resolution(int stage) const {
  if (patch_size <= 0) return 0;
  int resolution = image_size / patch_size;
  // Patch merging pads an odd map with a zero row and column (as torchvision does).
  for (int s = 0; s < stage; ++s) resolution = (resolution + 1) / 2;
  return resolution;
}

int SwinConfig::stage_window(int stage) const {
  return std::min(window_size, stage_resolution(stage));
}

int SwinConfig::block_shift(int stage, int block) const {
  if (block % 2 == 0 || stage_resolution(stage) <= window_size) return 0;
  return window_size / 2;
}

double SwinConfig::block_drop_path(int stage, int block) const {
  // timm: torch.linspace(0, drop_path_rate, sum(depths)); torchvision: the same ramp.
  const int total = total_blocks();
  if (total <= 1) return 0.0;
  int index = block;
  for (int s = 0; s < stage; ++s) index += static_cast<int>(stages[s].blocks.size());
  return drop_path_rate * index / (total - 1);
}

absl::Status SwinConfig::Validate() const {
  COMPRESS_RETURN_IF_ERROR(Positive(image_size, "image_size"));
  COMPRESS_RETURN_IF_ERROR(Positive(in_channels, "in_channels"));
  COMPRESS_RETURN_IF_ERROR(Positive(num_classes, "num_classes"));
  COMPRESS_RETURN_IF_ERROR(Positive(patch_size, "patch_size"));
  COMPRESS_RETURN_IF_ERROR(Positive(window_size, "window_size"));
  if (!(drop_path_rate >= 0.0 && drop_path_rate < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: drop_path_rate must be in [0, 1), got ", drop_path_rate));
  }
  if (image_size % patch_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config: image_size ", image_size,
                                                   " is not divisible by patch_size ", patch_size));
  }
  if (stages.empty()) return absl::InvalidArgumentError("config: stages must not be empty");
  int resolution = image_size / patch_size;
  for (size_t s = 0; s < stages.size(); ++s) {
    const std::string stage_path = absl::StrCat("stages[", s, "]");
    if (s > 0) resolution = (resolution + 1) / 2;
    const StageConfig& stage = stages[s];
    COMPRESS_RETURN_IF_ERROR(Positive(stage.dim, stage_path + ".dim"));
    if (stage.blocks.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config: ", stage_path, ".blocks must not be empty"));
    }
    const int window = std::min(window_size, resolution);
    if (resolution % window != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("config: ", stage_path, " feature map side ", resolution,
                       " is not divisible by window_size ", window_size));
    }
    for (size_t b = 0; b < stage.blocks.size(); ++b) {
      const std::string block_path = absl::StrCat(stage_path, ".blocks[", b, "]");
      const BlockWidths& widths = stage.blocks[b];
      COMPRESS_RETURN_IF_ERROR(Positive(widths.num_heads, block_path + ".num_heads"));
      COMPRESS_RETURN_IF_ERROR(Positive(widths.head_dim, block_path + ".head_dim"));
      COMPRESS_RETURN_IF_ERROR(Positive(widths.mlp_hidden, block_path + ".mlp_hidden"));
      if (int64_t{widths.num_heads} * widths.head_dim > (int64_t{1} << 24)) {
        return absl::InvalidArgumentError(
            absl::StrCat("config: ", block_path, " num_heads*head_dim is implausibly large"));
      }
    }
  }
  return absl::OkStatus();
}

Json SwinConfig::ToJson() const {
  Json stages_json = Json::array();
  for (const StageConfig& stage : stages) {
    Json blocks_json = Json::array();
    for (const BlockWidths& widths : stage.blocks) {
      blocks_json.push_back({{"num_heads", widths.num_heads},
                             {"head_dim", widths.head_dim},
                             {"mlp_hidden", widths.mlp_hidden}});
    }
    stages_json.push_back({{"dim", stage.dim}, {"blocks", std::move(blocks_json)}});
  }
  return Json{{"format_version", kFormatVersion},
              {"architecture", "swin"},
              {"image_size", image_size},
              {"in_channels", in_channels},
              {"num_classes", num_classes},
              {"patch_size", patch_size},
              {"window_size", window_size},
              {"drop_path_rate", drop_path_rate},
              {"qkv_bias", qkv_bias},
              {"stages", std::move(stages_json)}};
}

std::string SwinConfig::ToJsonString() const { return ToJson().dump(2) + "\n"; }

absl::StatusOr<SwinConfig> SwinConfig::FromJson(const Json& json) {
  ObjectReader reader(json, "");
  COMPRESS_RETURN_IF_ERROR(reader.CheckObject());
  int version = 0;
  COMPRESS_RETURN_IF_ERROR(reader.Int("format_version", &version));
  if (version != kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: format_version ", version, " is not supported (expected ", kFormatVersion, ")"));
  }
  absl::StatusOr<const Json*> architecture = reader.Field("architecture");
  if (!architecture.ok()) return architecture.status();
  if (!(*architecture)->is_string() || (*architecture)->get<std::string>() != "swin") {
    return absl::InvalidArgumentError("config: field \"architecture\" must be \"swin\"");
  }
  SwinConfig config;
  COMPRESS_RETURN_IF_ERROR(reader.Int("image_size", &config.image_size));
  COMPRESS_RETURN_IF_ERROR(reader.Int("in_channels", &config.in_channels));
  COMPRESS_RETURN_IF_ERROR(reader.Int("num_classes", &config.num_classes));
  COMPRESS_RETURN_IF_ERROR(reader.Int("patch_size", &config.patch_size));
  COMPRESS_RETURN_IF_ERROR(reader.Int("window_size", &config.window_size));
  COMPRESS_RETURN_IF_ERROR(reader.Double("drop_path_rate", &config.drop_path_rate));
  COMPRESS_RETURN_IF_ERROR(reader.Bool("qkv_bias", &config.qkv_bias));
  absl::StatusOr<const Json*> stages = reader.Array("stages");
  if (!stages.ok()) return stages.status();
  for (size_t s = 0; s < (*stages)->size(); ++s) {
    ObjectReader stage_reader((**stages)[s], absl::StrCat("stages[", s, "]"));
    COMPRESS_RETURN_IF_ERROR(stage_reader.CheckObject());
    StageConfig stage;
    COMPRESS_RETURN_IF_ERROR(stage_reader.Int("dim", &stage.dim));
    absl::StatusOr<const Json*> blocks = stage_reader.Array("blocks");
    if (!blocks.ok()) return blocks.status();
    for (size_t b = 0; b < (*blocks)->size(); ++b) {
      ObjectReader block_reader((**blocks)[b], absl::StrCat("stages[", s, "].blocks[", b, "]"));
      COMPRESS_RETURN_IF_ERROR(block_reader.CheckObject());
      BlockWidths widths;
      COMPRESS_RETURN_IF_ERROR(block_reader.Int("num_heads", &widths.num_heads));
      COMPRESS_RETURN_IF_ERROR(block_reader.Int("head_dim", &widths.head_dim));
      COMPRESS_RETURN_IF_ERROR(block_reader.Int("mlp_hidden", &widths.mlp_hidden));
      COMPRESS_RETURN_IF_ERROR(block_reader.CheckNoUnknownFields());
      stage.blocks.push_back(widths);
    }
    COMPRESS_RETURN_IF_ERROR(stage_reader.CheckNoUnknownFields());
    config.stages.push_back(std::move(stage));
  }
  COMPRESS_RETURN_IF_ERROR(reader.CheckNoUnknownFields());
  COMPRESS_RETURN_IF_ERROR(config.Validate());
  return config;
}

absl::StatusOr<SwinConfig> SwinConfig::FromJsonString(std::string_view text) {
  Json json = Json::parse(text.begin(), text.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError("config: not valid JSON");
  return FromJson(json);
}

bool SwinConfig::operator==(const SwinConfig& other) const {
  return image_size == other.image_size && in_channels == other.in_channels &&
         num_classes == other.num_classes && patch_size == other.patch_size &&
         window_size == other.window_size && drop_path_rate == other.drop_path_rate &&
         qkv_bias == other.qkv_bias && stages == other.stages;
}

absl::StatusOr<SwinConfig> MakeUniformSwinConfig(const UniformSwinOptions& options) {
  if (options.depths.size() != options.num_heads.size()) {
    return absl::InvalidArgumentError(absl::StrCat("config: depths has ", options.depths.size(),
                                                   " stages but num_heads has ",
                                                   options.num_heads.size()));
  }
  if (options.depths.empty()) return absl::InvalidArgumentError("config: depths must not be empty");
  if (!(options.mlp_ratio > 0.0))
    return absl::InvalidArgumentError("config: mlp_ratio must be positive");
  COMPRESS_RETURN_IF_ERROR(Positive(options.embed_dim, "embed_dim"));
  SwinConfig config;
  config.image_size = options.image_size;
  config.in_channels = options.in_channels;
  config.num_classes = options.num_classes;
  config.patch_size = options.patch_size;
  config.window_size = options.window_size;
  config.drop_path_rate = options.drop_path_rate;
  config.qkv_bias = options.qkv_bias;
  for (size_t s = 0; s < options.depths.size(); ++s) {
    // The width doubles at every stage; past 2^24 no model fits in memory anyway.
    if (s >= 24 || (int64_t{options.embed_dim} << s) > (int64_t{1} << 24)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config: stage ", s, " width embed_dim * 2^", s, " is implausibly large (embed_dim ",
          options.embed_dim, ", ", options.depths.size(), " stages)"));
    }
    const int dim = options.embed_dim << s;
    const int heads = options.num_heads[s];
    COMPRESS_RETURN_IF_ERROR(Positive(heads, absl::StrCat("num_heads[", s, "]")));
    COMPRESS_RETURN_IF_ERROR(Positive(options.depths[s], absl::StrCat("depths[", s, "]")));
    if (dim % heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat("config: stage ", s, " width ", dim,
                                                     " is not divisible by num_heads[", s,
                                                     "] = ", heads));
    }
    StageConfig stage;
    stage.dim = dim;
    const BlockWidths widths{heads, dim / heads, static_cast<int>(dim * options.mlp_ratio)};
    stage.blocks.assign(options.depths[s], widths);
    config.stages.push_back(std::move(stage));
  }
  COMPRESS_RETURN_IF_ERROR(config.Validate());
  return config;
}

absl::StatusOr<SwinConfig> SwinPreset(std::string_view name) {
  UniformSwinOptions options;
  if (name == "swin_t") {
    return MakeUniformSwinConfig(options);  // The defaults are Swin-T's.
  }
  if (name == "swin_micro") {
    options.image_size = 28;
    options.in_channels = 1;
    options.num_classes = 10;
    options.patch_size = 2;
    options.window_size = 7;
    options.embed_dim = 48;
    options.depths = {2, 2};
    options.num_heads = {2, 4};
    options.drop_path_rate = 0.05;
    return MakeUniformSwinConfig(options);
  }
  return absl::NotFoundError(absl::StrCat("unknown Swin preset \"", std::string(name),
                                          "\"; known presets: swin_t, swin_micro"));
}

}  // namespace compress::pipeline
#undef COMPRESS_RETURN_IF_ERROR
