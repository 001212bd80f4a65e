#include "worker/spec/job_spec.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace compress::spec {
namespace {

// protobuf's JSON name of a snake_case field: "target_macs_reduction" -> "targetMacsReduction".
std::string CamelCase(absl::string_view snake) {
  std::string out;
  bool upper = false;
  for (char c : snake) {
    if (c == '_') {
      upper = true;
    } else {
      out.push_back(upper ? absl::ascii_toupper(c) : c);
      upper = false;
    }
  }
  return out;
}

// Reads the fields of one JSON object, tracking its path for error messages. The first error
// sticks; later reads are no-ops. Finish() reports fields that were never read as unknown.
class ObjectReader {
 public:
  ObjectReader(const nlohmann::json* object, std::string path, absl::Status* status)
      : object_(object), path_(std::move(path)), status_(status) {
    if (object_ != nullptr && !object_->is_null() && !object_->is_object()) {
      Fail(path_, "expected a JSON object");
      object_ = nullptr;
    }
  }

  // Integer field; zero (or absence) keeps `out` unless `zero_is_value`.
  void Int(const char* name, int& out, int min, int max, bool zero_is_value = false) {
    int64_t value = out;
    if (Int64Value(name, value, min, max, zero_is_value)) out = static_cast<int>(value);
  }
  void Int64(const char* name, int64_t& out, int64_t min, int64_t max) {
    int64_t value = out;
    if (Int64Value(name, value, min, max, false)) out = value;
  }
  // Number field in [min, max]; with `zero_is_value` an explicit 0 is kept (optional fields).
  void Double(const char* name, double& out, double min, double max, bool zero_is_value = false) {
    const nlohmann::json* v = Find(name);
    if (v == nullptr) return;
    if (v->is_string()) {
      // protobuf's JSON form of a non-finite float.
      const std::string text = v->get<std::string>();
      if (text == "NaN" || text == "Infinity" || text == "-Infinity") {
        return Fail(Path(name),
                    absl::StrCat("must be a finite number in [", min, ", ", max, "], got ", text));
      }
    }
    if (!v->is_number()) return Fail(Path(name), "expected a number");
    double value = v->get<double>();
    if (value == 0 && !zero_is_value) return;
    if (!std::isfinite(value) || value < min || value > max) {
      return Fail(Path(name), absl::StrCat("must be in [", min, ", ", max, "], got ", value));
    }
    out = value;
  }
  void Bool(const char* name, bool& out) {
    const nlohmann::json* v = Find(name);
    if (v == nullptr) return;
    if (!v->is_boolean()) return Fail(Path(name), "expected true or false");
    out = v->get<bool>();
  }
  // String field; empty keeps `out`. A non-empty `allowed` restricts the values.
  void String(const char* name, std::string& out, std::vector<std::string> allowed = {}) {
    const nlohmann::json* v = Find(name);
    if (v == nullptr) return;
    if (!v->is_string()) return Fail(Path(name), "expected a string");
    std::string value = v->get<std::string>();
    if (value.empty()) return;
    // No name or path of a spec holds one; a NUL would end a path early where the OS reads it.
    const auto control = std::find_if(value.begin(), value.end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
    });
    if (control != value.end()) {
      return Fail(Path(name),
                  absl::StrCat("contains the control character 0x",
                               absl::Hex(static_cast<unsigned char>(*control), absl::kZeroPad2),
                               " at offset ", control - value.begin()));
    }
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
      return Fail(Path(name), absl::StrCat("unknown value '", value,
                                           "'; expected one of: ", absl::StrJoin(allowed, ", ")));
    }
    out = std::move(value);
  }
  void IntList(const char* name, std::vector<int>& out, int min, int max) {
    const nlohmann::json* v = Find(name);
    if (v == nullptr) return;
    if (!v->is_array()) return Fail(Path(name), "expected a list of integers");
    std::vector<int> values;
    for (size_t i = 0; i < v->size(); ++i) {
      const nlohmann::json& e = (*v)[i];
      std::string path = absl::StrCat(Path(name), "[", i, "]");
      if (!e.is_number_integer()) return Fail(path, "expected an integer");
      int64_t x = e.get<int64_t>();
      if (x < min || x > max) {
        return Fail(path, absl::StrCat("must be in [", min, ", ", max, "], got ", x));
      }
      values.push_back(static_cast<int>(x));
    }
    out = std::move(values);
  }
  // The reader of a nested object (absent: a reader that reads nothing).
  ObjectReader Child(const char* name) { return ObjectReader(Find(name), Path(name), status_); }
  // True when the field is present and not null.
  bool Has(const char* name) { return Find(name) != nullptr; }

  void Finish() {
    if (object_ == nullptr || !status_->ok()) return;
    for (const auto& [key, value] : object_->items()) {
      if (read_.count(key) == 0) {
        return Fail(absl::StrCat(path_, ".", key), "unknown field");
      }
    }
  }

  void Fail(const std::string& path, absl::string_view what) {
    if (status_->ok()) *status_ = absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  }
  std::string Path(const char* name) const { return absl::StrCat(path_, ".", name); }

 private:
  const nlohmann::json* Find(const char* name) {
    if (object_ == nullptr || !status_->ok()) return nullptr;
    for (const std::string& key : {std::string(name), CamelCase(name)}) {
      auto it = object_->find(key);
      if (it != object_->end()) {
        read_.insert(key);
        return it->is_null() ? nullptr : &*it;
      }
    }
    return nullptr;
  }

  bool Int64Value(const char* name, int64_t& out, int64_t min, int64_t max, bool zero_is_value) {
    const nlohmann::json* v = Find(name);
    if (v == nullptr) return false;
    int64_t value = 0;
    const auto out_of_range = [&](const std::string& got) {
      Fail(Path(name), absl::StrCat("must be in [", min, ", ", max, "], got ", got));
      return false;
    };
    if (v->is_number_unsigned() &&
        v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return out_of_range(absl::StrCat(v->get<uint64_t>()));
    } else if (v->is_number_integer()) {
      value = v->get<int64_t>();
    } else if (v->is_string() && absl::SimpleAtoi(v->get<std::string>(), &value)) {
      // protobuf writes int64 as a string.
    } else if (v->is_number_float() && std::isfinite(v->get<double>()) &&
               std::floor(v->get<double>()) == v->get<double>() &&
               (v->get<double>() < static_cast<double>(min) ||
                v->get<double>() > static_cast<double>(max))) {
      // A whole number written with an exponent (1e20): its range is the problem.
      return out_of_range(v->dump());
    } else {
      Fail(Path(name), "expected an integer");
      return false;
    }
    if (value == 0 && !zero_is_value) return false;
    if (value < min || value > max) {
      Fail(Path(name), absl::StrCat("must be in [", min, ", ", max, "], got ", value));
      return false;
    }
    out = value;
    return true;
  }

  const nlohmann::json* object_;
  std::string path_;
  absl::Status* status_;
  std::set<std::string> read_;
};

std::vector<std::string> Names(const char* const* begin, const char* const* end) {
  return std::vector<std::string>(begin, end);
}

void ReadTrain(ObjectReader r, TrainSpec& t) {
  r.Int("epochs", t.epochs, 0, 100000);
  r.Int("max_steps", t.max_steps, 0, std::numeric_limits<int>::max());
  r.Int("batch_size", t.batch_size, 1, 65536);
  r.Double("lr", t.lr, 1e-9, 10.0);
  r.Double("weight_decay", t.weight_decay, 0.0, 10.0, /*zero_is_value=*/true);
  r.Double("warmup_epochs", t.warmup_epochs, 0.0, 100000.0);
  r.Double("label_smoothing", t.label_smoothing, 0.0, 0.99, /*zero_is_value=*/true);
  r.Double("clip_grad_norm", t.clip_grad_norm, 0.0, 1e6, /*zero_is_value=*/true);
  r.Finish();
}

nlohmann::json TrainToJson(const TrainSpec& t) {
  return {{"epochs", t.epochs},
          {"max_steps", t.max_steps},
          {"batch_size", t.batch_size},
          {"lr", t.lr},
          {"weight_decay", t.weight_decay},
          {"warmup_epochs", t.warmup_epochs},
          {"label_smoothing", t.label_smoothing},
          {"clip_grad_norm", t.clip_grad_norm}};
}

bool IsHexSha256(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
         });
}

// Checks across fields, after every field was read.
void CheckConsistency(const JobSpec& s, ObjectReader& root) {
  if (s.model.has_config) {
    const SwinConfigSpec& c = s.model.config;
    const char* required[] = {"image_size", "in_channels", "patch_size", "embed_dim",
                              "window_size"};
    const int values[] = {c.image_size, c.in_channels, c.patch_size, c.embed_dim, c.window_size};
    for (int i = 0; i < 5; ++i) {
      if (values[i] <= 0)
        return root.Fail(absl::StrCat("spec.model.config.", required[i]),
                         "required when model.config is given");
    }
    if (c.depths.empty()) return root.Fail("spec.model.config.depths", "required");
    if (c.depths.size() != c.num_heads.size()) {
      return root.Fail("spec.model.config.num_heads",
                       absl::StrCat("must have one entry per stage (", c.depths.size(),
                                    " depths), got ", c.num_heads.size()));
    }
    if (c.image_size % c.patch_size != 0) {
      return root.Fail("spec.model.config.image_size",
                       absl::StrCat("must be a multiple of patch_size ", c.patch_size));
    }
  }
  {
    absl::StatusOr<pipeline::SwinConfig> config = ModelConfig(s);
    if (!config.ok()) {
      // ModelConfig's message is "FIELD: WHAT".
      const absl::string_view message = config.status().message();
      const size_t colon = message.find(": ");
      return root.Fail(std::string(message.substr(0, colon)), message.substr(colon + 2));
    }
    // A synthetic data set's class count is known now; another set's when it is read.
    const bool classes_given =
        s.model.num_classes > 0 || (s.model.has_config && s.model.config.num_classes > 0);
    if (s.dataset.format == "synthetic" && classes_given &&
        config->num_classes != s.dataset.synthetic_classes) {
      return root.Fail(
          s.model.num_classes > 0 ? "spec.model.num_classes" : "spec.model.config.num_classes",
          absl::StrCat("the model has ", config->num_classes, " classes, the synthetic data set ",
                       s.dataset.synthetic_classes, " (dataset.synthetic_classes)"));
    }
    if (s.dataset.image_size > 0 && s.dataset.image_size != config->image_size) {
      return root.Fail("spec.dataset.image_size",
                       absl::StrCat(s.dataset.image_size, " differs from the model's ",
                                    config->image_size, " (leave it out to use the model's)"));
    }
  }
  if (s.dataset.format.empty()) return root.Fail("spec.dataset.format", "required");
  if (s.dataset.format != "synthetic" && s.dataset.path.empty()) {
    return root.Fail("spec.dataset.path",
                     absl::StrCat("required for format '", s.dataset.format, "'"));
  }
  if (!s.teacher.checkpoint_path.empty() && !s.teacher.blob_sha256.empty()) {
    return root.Fail("spec.teacher.blob_sha256", "give either checkpoint_path or blob_sha256");
  }
  if (!s.teacher.blob_sha256.empty() && !IsHexSha256(s.teacher.blob_sha256)) {
    return root.Fail("spec.teacher.blob_sha256", "must be 64 lowercase hex digits");
  }
  if (!s.teacher.HasWeights() && !s.teacher.train.Trains()) {
    return root.Fail("spec.teacher",
                     "give checkpoint_path or blob_sha256, or train.epochs to train the teacher");
  }
  if (s.share.enabled && !s.share.train.Trains()) {
    return root.Fail("spec.share.train.epochs",
                     "the share stage needs epochs or max_steps for its weight distillation");
  }
  if (s.share.enabled &&
      s.share.logit_weight + s.share.attention_loss_weight + s.share.hidden_loss_weight <= 0) {
    return root.Fail("spec.share.logit_weight",
                     "the weight distillation needs at least one positive loss weight");
  }
  if (s.distill.enabled && !s.distill.train.Trains()) {
    return root.Fail("spec.distill.train.epochs", "required when distill is enabled");
  }
  const std::string& d = s.resources.device;
  absl::string_view index = d;
  int number = 0;
  const bool cuda_n = absl::ConsumePrefix(&index, "cuda:") && !index.empty() &&
                      std::all_of(index.begin(), index.end(), absl::ascii_isdigit) &&
                      absl::SimpleAtoi(index, &number);
  if (d != "auto" && d != "cpu" && d != "cuda" && !cuda_n) {
    return root.Fail("spec.resources.device",
                     absl::StrCat("unknown device '", d, "'; expected auto, cpu, cuda or cuda:N"));
  }
}

}  // namespace

absl::StatusOr<JobSpec> ParseJobSpecJson(const nlohmann::json& json) {
  absl::Status status;
  JobSpec s;
  ObjectReader root(&json, "spec", &status);
  if (!json.is_object()) return absl::InvalidArgumentError("spec: expected a JSON object");
  {
    ObjectReader m = root.Child("model");
    m.String("preset", s.model.preset, Names(std::begin(kModelPresets), std::end(kModelPresets)));
    if (m.Has("config")) {
      s.model.has_config = true;
      ObjectReader c = m.Child("config");
      SwinConfigSpec& k = s.model.config;
      c.Int("image_size", k.image_size, 1, 4096);
      c.Int("in_channels", k.in_channels, 1, 64);
      c.Int("num_classes", k.num_classes, 1, 100000);
      c.Int("patch_size", k.patch_size, 1, 64);
      c.Int("embed_dim", k.embed_dim, 1, 8192);
      c.IntList("depths", k.depths, 1, 64);
      c.IntList("num_heads", k.num_heads, 1, 256);
      c.Int("window_size", k.window_size, 1, 256);
      c.Double("mlp_ratio", k.mlp_ratio, 0.01, 64.0);
      c.Double("drop_path_rate", k.drop_path_rate, 0.0, 0.99);
      c.Finish();
    }
    m.Int("num_classes", s.model.num_classes, 1, 100000);
    m.Finish();
  }
  {
    ObjectReader d = root.Child("dataset");
    DatasetSpec& ds = s.dataset;
    d.String("format", ds.format, Names(std::begin(kDatasetFormats), std::end(kDatasetFormats)));
    d.String("path", ds.path);
    d.Int("image_size", ds.image_size, 1, 4096);
    d.Int("limit_train", ds.limit_train, 1, std::numeric_limits<int>::max());
    d.Int("limit_val", ds.limit_val, 1, std::numeric_limits<int>::max());
    d.Bool("augment", ds.augment);
    d.Bool("flip", ds.flip);
    d.Int("synthetic_train", ds.synthetic_train, 1, 10000000);
    d.Int("synthetic_val", ds.synthetic_val, 1, 10000000);
    d.Int("synthetic_classes", ds.synthetic_classes, 2, 100000);
    d.Finish();
  }
  {
    ObjectReader t = root.Child("teacher");
    t.String("checkpoint_path", s.teacher.checkpoint_path);
    t.String("blob_sha256", s.teacher.blob_sha256);
    t.String("naming", s.teacher.naming, {"auto", "timm", "microsoft", "torchvision"});
    ReadTrain(t.Child("train"), s.teacher.train);
    t.Finish();
  }
  {
    ObjectReader r = root.Child("share");
    r.Bool("enabled", s.share.enabled);
    r.IntList("group_size", s.share.group_size, 1, 64);
    r.Bool("attention_transform", s.share.attention_transform);
    r.Bool("mlp_transform", s.share.mlp_transform);
    r.String("init", s.share.init, {"first", "mean"});
    r.Double("temperature", s.share.temperature, 0.01, 100.0);
    r.Double("logit_weight", s.share.logit_weight, 0.0, 1e6, /*zero_is_value=*/true);
    r.Double("attention_loss_weight", s.share.attention_loss_weight, 0.0, 1e6,
             /*zero_is_value=*/true);
    r.Double("hidden_loss_weight", s.share.hidden_loss_weight, 0.0, 1e6, /*zero_is_value=*/true);
    ReadTrain(r.Child("train"), s.share.train);
    r.Finish();
  }
  {
    ObjectReader r = root.Child("prune");
    r.Bool("enabled", s.prune.enabled);
    double macs_target = 0.0;
    r.Double("target_macs_reduction", macs_target, 0.001, 0.95);
    r.Double("target_params_reduction", s.prune.target_params_reduction, 0.001, 0.95);
    if (macs_target != 0.0 && s.prune.target_params_reduction != 0.0) {
      r.Fail(r.Path("target_params_reduction"),
             "set target_macs_reduction or target_params_reduction, not both");
    }
    if (macs_target != 0.0) s.prune.target_macs_reduction = macs_target;
    r.String("importance", s.prune.importance, {"l2", "taylor"});
    r.Int("round_to", s.prune.round_to, 1, 1024);
    r.Int("iterative_steps", s.prune.iterative_steps, 1, 1000);
    r.String("ranking", s.prune.ranking, {"global", "local"});
    r.String("attention", s.prune.attention, {"heads", "head_dims"});
    r.Int("calibration_batches", s.prune.calibration_batches, 1, 100000);
    r.Finish();
  }
  {
    ObjectReader r = root.Child("distill");
    r.Bool("enabled", s.distill.enabled);
    ReadTrain(r.Child("train"), s.distill.train);
    r.Double("temperature", s.distill.temperature, 0.01, 100.0);
    r.Double("alpha", s.distill.alpha, 0.0, 1.0, /*zero_is_value=*/true);
    r.Double("attention_loss_weight", s.distill.attention_loss_weight, 0.0, 1e6);
    r.Double("hidden_loss_weight", s.distill.hidden_loss_weight, 0.0, 1e6);
    r.Bool("cache_teacher_logits", s.distill.cache_teacher_logits);
    r.Finish();
  }
  {
    ObjectReader r = root.Child("resources");
    r.String("device", s.resources.device);
    r.Int("threads", s.resources.threads, 1, 1024);
    r.Int64("time_limit_seconds", s.resources.time_limit_seconds, 1,
            std::numeric_limits<int64_t>::max());
    r.Int64("seed", s.resources.seed, std::numeric_limits<int64_t>::min(),
            std::numeric_limits<int64_t>::max());
    r.Finish();
  }
  root.Finish();
  if (status.ok()) CheckConsistency(s, root);
  if (!status.ok()) return status;
  return s;
}

namespace {

// Records the first key that an object of a JSON text names twice, as the field's path (nlohmann
// keeps the last value and drops the first silently).
class DuplicateKeyFinder {
 public:
  bool operator()(int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    switch (event) {
      case Event::object_start:
      case Event::array_start: {
        std::string path = "spec";
        if (!frames_.empty()) {
          const Frame& parent = frames_.back();
          path = parent.array ? absl::StrCat(parent.path, "[]")
                              : absl::StrCat(parent.path, ".", parent.key);
        }
        frames_.push_back({std::move(path), event == Event::array_start, {}, {}});
        break;
      }
      case Event::object_end:
      case Event::array_end:
        if (!frames_.empty()) frames_.pop_back();
        break;
      case Event::key:
        if (!frames_.empty() && parsed.is_string()) {
          Frame& frame = frames_.back();
          frame.key = parsed.get<std::string>();
          if (!frame.keys.insert(frame.key).second && !duplicate_.has_value()) {
            duplicate_ = absl::StrCat(frame.path, ".", frame.key);
          }
        }
        break;
      case Event::value:
        break;
    }
    return true;
  }

  const std::optional<std::string>& duplicate() const { return duplicate_; }

 private:
  struct Frame {
    std::string path;
    bool array = false;
    std::string key;  // the object's current key
    std::set<std::string> keys;
  };
  std::vector<Frame> frames_;
  std::optional<std::string> duplicate_;
};

}  // namespace

std::optional<std::string> FindDuplicateKey(absl::string_view json_text) {
  DuplicateKeyFinder finder;
  nlohmann::json::parser_callback_t callback = std::ref(finder);
  const nlohmann::json parsed = nlohmann::json::parse(json_text.begin(), json_text.end(), callback,
                                                      /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return std::nullopt;
  return finder.duplicate();
}

absl::StatusOr<JobSpec> ParseJobSpec(absl::string_view json_text) {
  nlohmann::json j;
  try {
    DuplicateKeyFinder finder;
    nlohmann::json::parser_callback_t callback = std::ref(finder);
    j = nlohmann::json::parse(json_text.begin(), json_text.end(), callback);
    if (finder.duplicate().has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(*finder.duplicate(), ": given twice (a JSON object names each key once)"));
    }
  } catch (const nlohmann::json::exception& e) {
    // A parse_error ("[json.exception.parse_error.N] parse error at line L, column C: ...") or
    // an out_of_range for a number beyond double's range ("... number overflow parsing '1e999'").
    std::string what = e.what();
    const size_t tag_end = what.find("] ");
    if (tag_end != std::string::npos) what = what.substr(tag_end + 2);
    return absl::InvalidArgumentError(absl::StrCat("spec: not valid JSON: ", what));
  }
  return ParseJobSpecJson(j);
}

nlohmann::json ToJson(const JobSpec& s) {
  nlohmann::json model = {{"preset", s.model.preset}, {"num_classes", s.model.num_classes}};
  if (s.model.has_config) {
    const SwinConfigSpec& c = s.model.config;
    model["config"] = {{"image_size", c.image_size},   {"in_channels", c.in_channels},
                       {"num_classes", c.num_classes}, {"patch_size", c.patch_size},
                       {"embed_dim", c.embed_dim},     {"depths", c.depths},
                       {"num_heads", c.num_heads},     {"window_size", c.window_size},
                       {"mlp_ratio", c.mlp_ratio},     {"drop_path_rate", c.drop_path_rate}};
  }
  const DatasetSpec& d = s.dataset;
  nlohmann::json out = {
      {"model", model},
      {"dataset",
       {{"format", d.format},
        {"path", d.path},
        {"image_size", d.image_size},
        {"limit_train", d.limit_train},
        {"limit_val", d.limit_val},
        {"augment", d.augment},
        {"flip", d.flip},
        {"synthetic_train", d.synthetic_train},
        {"synthetic_val", d.synthetic_val},
        {"synthetic_classes", d.synthetic_classes}}},
      {"teacher",
       {{"checkpoint_path", s.teacher.checkpoint_path},
        {"blob_sha256", s.teacher.blob_sha256},
        {"naming", s.teacher.naming},
        {"train", TrainToJson(s.teacher.train)}}},
      {"share",
       {{"enabled", s.share.enabled},
        {"group_size", s.share.group_size},
        {"attention_transform", s.share.attention_transform},
        {"mlp_transform", s.share.mlp_transform},
        {"init", s.share.init},
        {"temperature", s.share.temperature},
        {"logit_weight", s.share.logit_weight},
        {"attention_loss_weight", s.share.attention_loss_weight},
        {"hidden_loss_weight", s.share.hidden_loss_weight},
        {"train", TrainToJson(s.share.train)}}},
      {"prune",
       {{"enabled", s.prune.enabled},
        {"target_macs_reduction", s.prune.target_macs_reduction},
        {"target_params_reduction", s.prune.target_params_reduction},
        {"importance", s.prune.importance},
        {"round_to", s.prune.round_to},
        {"iterative_steps", s.prune.iterative_steps},
        {"ranking", s.prune.ranking},
        {"attention", s.prune.attention},
        {"calibration_batches", s.prune.calibration_batches}}},
      {"distill",
       {{"enabled", s.distill.enabled},
        {"train", TrainToJson(s.distill.train)},
        {"temperature", s.distill.temperature},
        {"alpha", s.distill.alpha},
        {"attention_loss_weight", s.distill.attention_loss_weight},
        {"hidden_loss_weight", s.distill.hidden_loss_weight},
        {"cache_teacher_logits", s.distill.cache_teacher_logits}}},
      {"resources",
       {{"device", s.resources.device},
        {"threads", s.resources.threads},
        {"time_limit_seconds", s.resources.time_limit_seconds},
        {"seed", s.resources.seed}}},
  };
  // One pruning target: a spec without the params target normalises as it did before the field
  // existed (so that work dirs of earlier runs still match their spec).
  out["prune"].erase(s.prune.target_params_reduction > 0.0 ? "target_macs_reduction"
                                                           : "target_params_reduction");
  return out;
}

absl::StatusOr<pipeline::SwinConfig> ModelConfig(const JobSpec& spec) {
  // The pipeline's messages start with "config: "; the spec's name the field instead.
  const auto named = [](const char* field, const absl::Status& status) {
    absl::string_view what = status.message();
    absl::ConsumePrefix(&what, "config: ");
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
  };
  absl::StatusOr<pipeline::SwinConfig> config;
  if (spec.model.has_config) {
    const SwinConfigSpec& c = spec.model.config;
    pipeline::UniformSwinOptions u;
    u.image_size = c.image_size;
    u.in_channels = c.in_channels;
    u.num_classes = c.num_classes > 0 ? c.num_classes : 10;
    u.patch_size = c.patch_size;
    u.window_size = c.window_size;
    u.embed_dim = c.embed_dim;
    u.depths = c.depths;
    u.num_heads = c.num_heads;
    u.mlp_ratio = c.mlp_ratio;
    u.drop_path_rate = c.drop_path_rate;
    config = pipeline::MakeUniformSwinConfig(u);
    if (!config.ok()) return named("spec.model.config", config.status());
  } else {
    config = pipeline::SwinPreset(spec.model.preset);
    if (!config.ok()) return named("spec.model.preset", config.status());
  }
  if (spec.model.num_classes > 0) config->num_classes = spec.model.num_classes;
  return config;
}

}  // namespace compress::spec
