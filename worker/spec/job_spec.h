// The job specification as plain C++: parsing, defaults and validation of a spec's JSON form.
//
// The API carries a spec as the protobuf message compress.v1.JobSpec
// (proto/compress/v1/job_spec.proto); the server turns it into JSON with proto field names and
// validates it here at CreateJob, and the executor parses the same JSON here. One parser for
// both sides keeps them from disagreeing about defaults. No protobuf, no torch.
#ifndef COMPRESS_WORKER_SPEC_JOB_SPEC_H_
#define COMPRESS_WORKER_SPEC_JOB_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "worker/pipeline/model/swin_config.h"

namespace compress::spec {

// Field meanings and defaults are documented in proto/compress/v1/job_spec.proto.
struct SwinConfigSpec {
  int image_size = 0;
  int in_channels = 0;
  int num_classes = 0;
  int patch_size = 0;
  int embed_dim = 0;
  std::vector<int> depths;
  std::vector<int> num_heads;
  int window_size = 0;
  double mlp_ratio = 4.0;
  double drop_path_rate = 0.0;
};

struct ModelSpec {
  std::string preset = "swin_micro";
  bool has_config = false;  // true when `config` was given; it then overrides `preset`
  SwinConfigSpec config;
  int num_classes = 0;
};

struct DatasetSpec {
  std::string format;
  std::string path;
  int image_size = 0;
  int limit_train = 0;
  int limit_val = 0;
  bool augment = false;
  bool flip = false;
  int synthetic_train = 512;
  int synthetic_val = 128;
  int synthetic_classes = 10;
};

struct TrainSpec {
  int epochs = 0;
  int max_steps = 0;
  int batch_size = 64;
  double lr = 1e-3;
  double weight_decay = 0.05;
  double warmup_epochs = 0.0;
  double label_smoothing = 0.1;
  double clip_grad_norm = 5.0;

  // True when the stage would train at all.
  bool Trains() const { return epochs > 0 || max_steps > 0; }
};

struct TeacherSpec {
  std::string checkpoint_path;
  std::string blob_sha256;
  std::string naming = "auto";
  TrainSpec train;

  bool HasWeights() const { return !checkpoint_path.empty() || !blob_sha256.empty(); }
};

struct ShareSpec {
  bool enabled = false;
  std::vector<int> group_size;
  bool attention_transform = true;
  bool mlp_transform = true;
  // Shared weights start from each group's "first" block or the "mean" of its blocks.
  std::string init = "first";
  // Weight distillation: soft cross-entropy at `temperature`, attention and hidden relations.
  double temperature = 1.0;
  double logit_weight = 1.0;
  double attention_loss_weight = 1.0;
  double hidden_loss_weight = 0.1;
  TrainSpec train;
};

struct PruneSpec {
  bool enabled = false;
  double target_macs_reduction = 0.32;
  // > 0: prune to this fraction of the teacher's parameters instead of target_macs_reduction.
  double target_params_reduction = 0.0;
  std::string importance = "taylor";
  int round_to = 8;
  int iterative_steps = 5;
  // "global" (one ranking over all groups) or "local" (each group cut at a similar ratio).
  std::string ranking = "global";
  // Attention pruned by whole "heads" or by "head_dims".
  std::string attention = "heads";
  // Taylor importance: calibration batches of the training split.
  int calibration_batches = 8;
};

struct DistillSpec {
  bool enabled = false;
  TrainSpec train;
  double temperature = 4.0;
  double alpha = 0.5;
  double attention_loss_weight = 0.0;
  double hidden_loss_weight = 0.0;
  // Compute the teacher's logits of the training split once, before training, when nothing
  // else needs the teacher during training (no augmentation, no relation losses).
  bool cache_teacher_logits = true;
};

struct ResourceSpec {
  std::string device = "auto";
  int threads = 0;
  int64_t time_limit_seconds = 0;
  int64_t seed = 0;
};

struct JobSpec {
  ModelSpec model;
  DatasetSpec dataset;
  TeacherSpec teacher;
  ShareSpec share;
  PruneSpec prune;
  DistillSpec distill;
  ResourceSpec resources;
};

// Model presets the pipeline provides.
inline constexpr const char* kModelPresets[] = {"swin_t", "swin_micro"};
// Data set formats the pipeline reads.
inline constexpr const char* kDatasetFormats[] = {"fashion_mnist", "tiny_imagenet", "image_folder",
                                                  "cifar10", "synthetic"};

// Parses and validates a spec. Fields at their zero value (as protobuf's JSON printer omits them)
// take the defaults above; int64 fields may be JSON strings, as protobuf writes them; both
// snake_case and protobuf's lowerCamelCase names are accepted. Errors are INVALID_ARGUMENT and
// name the offending field by its path, e.g. "spec.prune.target_macs_reduction: must be in
// (0, 1), got 1.5".
absl::StatusOr<JobSpec> ParseJobSpecJson(const nlohmann::json& json);
absl::StatusOr<JobSpec> ParseJobSpec(absl::string_view json_text);

// The path of the first key that an object of `json_text` names twice
// ("spec.teacher.train.epochs"), or nullopt when there is none or the text is not JSON.
// ParseJobSpec refuses such a text; a client that reads a spec file through another JSON parser
// calls this first.
std::optional<std::string> FindDuplicateKey(absl::string_view json_text);

// The spec with every default filled in, as JSON with snake_case names. ParseJobSpecJson(ToJson(s))
// gives back `s`.
nlohmann::json ToJson(const JobSpec& spec);

// The teacher's architecture as the spec gives it: model.config, or else model.preset, with
// model.num_classes when set (model.config.num_classes, else 10, for an explicit config; the
// preset's own count otherwise). The executor replaces the class count by the data set's when
// the spec gives none. INVALID_ARGUMENT naming spec.model.config or spec.model.preset when no
// Swin Transformer has that shape; ParseJobSpec checks it, so a parsed spec always has one.
absl::StatusOr<pipeline::SwinConfig> ModelConfig(const JobSpec& spec);

}  // namespace compress::spec

#endif  // COMPRESS_WORKER_SPEC_JOB_SPEC_H_
