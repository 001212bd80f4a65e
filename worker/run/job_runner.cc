#include "worker/run/job_runner.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "worker/events/durable_file.h"
#include "worker/events/sha256.h"
#include "worker/pipeline/checkpoint/model_io.h"
#include "worker/pipeline/checkpoint/naming.h"
#include "worker/pipeline/data/batch_loader.h"
#include "worker/pipeline/data/dataset.h"
#include "worker/pipeline/distill/distill_stage.h"
#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/model/torch_error.h"
#include "worker/pipeline/prune/pruner.h"
#include "worker/pipeline/prune/shared_pruner.h"
#include "worker/pipeline/share/share_from_teacher.h"
#include "worker/pipeline/share/share_stage.h"
#include "worker/pipeline/share/shared_cost.h"
#include "worker/pipeline/train/evaluation.h"
#include "worker/pipeline/train/teacher.h"
#include "worker/pipeline/train/trainer.h"
#include "worker/run/stage_model.h"
#include "worker/run/stage_options.h"
#include "worker/run/work_dir.h"

namespace compress::run {
namespace {

namespace pl = compress::pipeline;
using Clock = std::chrono::steady_clock;

// Inputs are scaled to [0, 1] and then to [-1, 1]; recorded in the report so that users of the
// checkpoint feed it the same way.
constexpr double kInputMean = 0.5;
constexpr double kInputStd = 0.5;
// Batch size of evaluation passes.
constexpr int64_t kEvalBatchSize = 256;
// Timed single-image forward passes for the latency figure (after as many warm-up passes).
constexpr int kLatencyRuns = 20;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

#define RETURN_IF_ERROR(expr)                 \
  do {                                        \
    if (absl::Status _s = (expr); !_s.ok()) { \
      return _s;                              \
    }                                         \
  } while (0)

// A CUDA device this process cannot use is UNAVAILABLE (retryable): the spec asked for a GPU
// (or the agent offered one), and another node, or this one once its driver is back, can run it.
absl::StatusOr<torch::Device> ResolveDevice(const std::string& name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name == "auto") {
    return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0)
                                       : torch::Device(torch::kCPU);
  }
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (name != "cuda" && !absl::SimpleAtoi(absl::string_view(name).substr(5), &index)) {
      return absl::InvalidArgumentError(absl::StrCat("--device: unknown device '", name,
                                                     "'; expected auto, cpu, cuda or cuda:N"));
    }
    if (!torch::cuda::is_available()) {
      return absl::UnavailableError(absl::StrCat(
          "device '", name,
          "' requested but CUDA is not available to this executor (a LibTorch build without "
          "CUDA, no driver, or CUDA_VISIBLE_DEVICES hides every GPU)"));
    }
    if (index < 0 || index >= static_cast<int>(torch::cuda::device_count())) {
      return absl::UnavailableError(absl::StrCat("device '", name, "': this executor sees only ",
                                                 torch::cuda::device_count(), " CUDA devices"));
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device: unknown device '", name, "'; expected auto, cpu, cuda or cuda:N"));
}

absl::StatusOr<pl::DatasetFormat> FormatOf(const std::string& name) {
  return pl::ParseDatasetFormat(name);
}

// The prune phase's target, in MACs or parameters, for a model of `current` cost pruned towards
// the spec's fraction of the teacher's.
struct PruneTarget {
  PruneTarget(const spec::PruneSpec& prune, const StageModel::Cost& teacher_cost,
              const StageModel::Cost& current_cost)
      : by_params(prune.target_params_reduction > 0.0),
        field(by_params ? "target_params_reduction" : "target_macs_reduction"),
        unit(by_params ? "parameters" : "MACs"),
        target(by_params ? prune.target_params_reduction : prune.target_macs_reduction),
        teacher(by_params ? teacher_cost.params : teacher_cost.macs),
        current(by_params ? current_cost.params : current_cost.macs) {}

  // The fraction of the current model to remove; FAILED_PRECONDITION when pruning cannot do it
  // (a target that sharing already met, or one past 95%).
  absl::StatusOr<double> Reduction() const {
    const double reduction = PhaseReduction(target, teacher, current);
    if (reduction <= 0.0 || reduction >= 0.95) {
      return absl::FailedPreconditionError(
          absl::StrCat("spec.prune.", field, ": ", target, " of the teacher's ", teacher, " ", unit,
                       " means removing ", reduction, " of the ", current, " ", unit,
                       " of the model the prune phase starts from, which pruning cannot do"));
    }
    return reduction;
  }

  bool by_params;
  const char* field;
  const char* unit;
  double target;
  int64_t teacher;
  int64_t current;
};

// Whether the teacher's class count comes from the data set: fresh weights and no count in
// the spec (model.num_classes, or model.config.num_classes).
bool ClassesFromData(const spec::JobSpec& spec) {
  return !spec.teacher.HasWeights() && spec.model.num_classes == 0 &&
         !(spec.model.has_config && spec.model.config.num_classes > 0);
}

nlohmann::json MetricsJson(const pl::EvalMetrics& m) {
  return {{"top1", m.top1}, {"top5", m.top5}, {"val_loss", m.loss}, {"val_samples", m.samples}};
}

}  // namespace

struct JobRunner::State {
  RunnerOptions options;
  torch::Device device = torch::kCPU;
  std::unique_ptr<WorkDir> work_dir;
  pl::DatasetSplits data;
  Clock::time_point start = Clock::now();
  nlohmann::json phases = nlohmann::json::array();

  events::EventWriter& events() { return *options.events; }
  void Log(const std::string& level, const std::string& message) {
    events().Write(events::Log(level, message));
  }

  // Training batches (shuffled, augmented as asked), or evaluation batches (in order, plain) of
  // the validation split or, with `train_split`, of the training split. A cancel stops every
  // loop over them (evaluation, teacher logits, calibration) within a batch, CANCELLED.
  absl::StatusOr<std::unique_ptr<pl::LoaderBatchSource>> Source(bool train, int64_t batch_size,
                                                                bool augment, bool flip,
                                                                bool train_split = false) {
    pl::BatchLoaderOptions o;
    o.batch_size = batch_size;
    o.seed = static_cast<uint64_t>(options.spec.resources.seed);
    o.mean = {kInputMean};
    o.std = {kInputStd};
    if (train) {
      o.shuffle = true;
      o.random_resized_crop = augment;
      o.horizontal_flip = flip;
    } else {
      o = o.ForEval();
      o.batch_size = batch_size;
    }
    absl::StatusOr<std::unique_ptr<pl::BatchLoader>> loader =
        train || train_split ? pl::BatchLoader::Create(data.train_images, data.train_labels, o)
                             : pl::BatchLoader::Create(data.val_images, data.val_labels, o);
    if (!loader.ok()) return loader.status();
    return std::make_unique<pl::LoaderBatchSource>(std::move(*loader), options.cancel);
  }

  absl::Status LoadData(const pl::SwinConfig& config) {
    const spec::DatasetSpec& d = options.spec.dataset;
    if (d.image_size > 0 && d.image_size != config.image_size) {
      return absl::InvalidArgumentError(absl::StrCat("spec.dataset.image_size: ", d.image_size,
                                                     " differs from the model's ",
                                                     config.image_size));
    }
    pl::DatasetOptions o;
    absl::StatusOr<pl::DatasetFormat> format = FormatOf(d.format);
    if (!format.ok()) return format.status();
    o.format = *format;
    o.path = d.path;
    o.image_size = config.image_size;
    o.channels = config.in_channels;
    o.cache_dir = options.cache_dir.empty() ? work_dir->path() + "/cache" : options.cache_dir;
    o.limit_train = d.limit_train;
    o.limit_val = d.limit_val;
    o.cancel = options.cancel;
    o.synthetic_num_classes = d.synthetic_classes;
    o.synthetic_train_size = d.synthetic_train;
    o.synthetic_val_size = d.synthetic_val;
    o.synthetic_seed = static_cast<uint64_t>(options.spec.resources.seed);
    auto t0 = Clock::now();
    absl::StatusOr<pl::DatasetSplits> splits = pl::LoadDataset(o);
    if (!splits.ok()) return splits.status();
    for (const auto& [split, labels] :
         {std::pair<const char*, const torch::Tensor*>{"training", &splits->train_labels},
          {"validation", &splits->val_labels}}) {
      if (labels->size(0) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("spec.dataset: the ", split, " split of the ", d.format, " data set",
                         d.path.empty() ? "" : absl::StrCat(" at ", d.path),
                         " has no examples (after spec.dataset's limits)"));
      }
    }
    data = std::move(*splits);
    Log("info", absl::StrCat("data set ", d.format, ": ", data.train_labels.size(0), " train, ",
                             data.val_labels.size(0), " val, ", data.num_classes, " classes, ",
                             data.channels, "x", data.height, "x", data.width, " (loaded in ",
                             SecondsSince(t0), " s)"));
    return absl::OkStatus();
  }

  // Evaluation, size and speed of a model: the figures the report compares.
  absl::StatusOr<nlohmann::json> Measure(const StageModel& model) {
    absl::StatusOr<StageModel::Cost> cost = model.AnalyzeCost();
    if (!cost.ok()) return cost.status();
    absl::StatusOr<std::unique_ptr<pl::LoaderBatchSource>> val =
        Source(/*train=*/false, kEvalBatchSize, false, false);
    if (!val.ok()) return val.status();
    pl::LogitsFn logits = [&model](const torch::Tensor& x) { return model.forward(x); };
    absl::StatusOr<pl::EvalMetrics> metrics = pl::Evaluate(model.module(), logits, **val, device);
    if (!metrics.ok()) return metrics.status();
    nlohmann::json out = MetricsJson(*metrics);
    out["params"] = cost->params;
    out["macs"] = cost->macs;
    out["shared"] = model.is_shared();
    // Latency of one image: median of timed forward passes after warm-up.
    torch::NoGradGuard no_grad;
    model.module().eval();
    torch::Tensor image = data.val_images.index({torch::indexing::Slice(0, 1)})
                              .to(torch::kFloat)
                              .div(255.0)
                              .sub(kInputMean)
                              .div(kInputStd)
                              .to(device);
    std::vector<double> times;
    for (int i = 0; i < 2 * kLatencyRuns; ++i) {
      auto t0 = Clock::now();
      torch::Tensor y = model.forward(image);
      if (device.is_cuda()) torch::cuda::synchronize();
      if (i >= kLatencyRuns) times.push_back(SecondsSince(t0) * 1000.0);
    }
    std::sort(times.begin(), times.end());
    out["latency_ms_per_image"] = times[times.size() / 2];
    return out;
  }

  pl::TrainerOptions TrainOptions(const spec::TrainSpec& t, const std::string& checkpoint_dir) {
    pl::TrainerOptions o;
    o.epochs = t.epochs;
    o.max_steps = t.max_steps;
    o.lr = t.lr;
    o.min_lr = t.lr * 0.01;
    o.weight_decay = t.weight_decay;
    o.warmup_epochs = t.warmup_epochs;
    o.clip_grad_norm = t.clip_grad_norm;
    o.label_smoothing = t.label_smoothing;
    o.checkpoint_dir = checkpoint_dir;
    o.checkpoint_every_steps = 200;
    o.log_every_steps = 20;
    o.device = device;
    o.num_threads = options.threads;
    // The trainer reseeds a phase's first step only from a seed >= 0 (a negative one means "do
    // not reseed"); every job seed maps to one, so that a phase resumed in a new process draws
    // what an uninterrupted run draws.
    o.seed = static_cast<int64_t>(static_cast<uint64_t>(options.spec.resources.seed) &
                                  static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
    return o;
  }

  // Trainer callbacks that send a phase's metric points as events; `total` steps make 100%.
  pl::TrainerCallbacks Callbacks(const std::string& phase, int64_t total) {
    pl::TrainerCallbacks callbacks;
    callbacks.cancel_flag = options.cancel;
    callbacks.on_metric = [this, phase, total](const pl::MetricPoint& p) {
      std::map<std::string, double> values;
      if (p.kind == pl::MetricPoint::Kind::kTrain) {
        values["loss"] = p.loss;
        values["lr"] = p.lr;
        values["grad_norm"] = p.grad_norm;
        values["images_per_second"] = p.images_per_second;
        for (const auto& [name, value] : p.terms) values["loss_" + name] = value;
        if (p.device_memory_bytes) {
          values["device_memory_bytes"] = static_cast<double>(*p.device_memory_bytes);
        }
      } else if (p.eval) {
        values["top1"] = p.eval->top1;
        values["top5"] = p.eval->top5;
        values["val_loss"] = p.eval->loss;
      }
      double progress = total > 0 ? std::min(1.0, static_cast<double>(p.step) / total) : -1;
      events().Write(events::Metric(phase, p.step, p.epoch, progress, std::move(values)));
    };
    return callbacks;
  }

  // Optimizer steps of a phase of `t` over `source`.
  static int64_t TotalSteps(const spec::TrainSpec& t, const pl::BatchSource& source) {
    int64_t total = t.epochs > 0 ? t.epochs * source.BatchesPerEpoch() : t.max_steps;
    if (t.max_steps > 0) total = std::min<int64_t>(total, t.max_steps);
    return total;
  }

  // Trains `model` for one phase with plain classification loss, sending metric events.
  absl::StatusOr<pl::TrainResult> TrainClassifier(const std::string& phase,
                                                  pl::SwinTransformer& model,
                                                  const spec::TrainSpec& t,
                                                  const std::string& checkpoint_dir) {
    absl::StatusOr<std::unique_ptr<pl::LoaderBatchSource>> train = Source(
        /*train=*/true, t.batch_size, options.spec.dataset.augment, options.spec.dataset.flip);
    if (!train.ok()) return train.status();
    absl::StatusOr<std::unique_ptr<pl::LoaderBatchSource>> val =
        Source(/*train=*/false, kEvalBatchSize, false, false);
    if (!val.ok()) return val.status();
    pl::LogitsFn logits = [&model](const torch::Tensor& x) { return model->forward(x); };
    pl::TrainerOptions o = TrainOptions(t, checkpoint_dir);
    absl::StatusOr<std::unique_ptr<pl::Trainer>> trainer =
        pl::Trainer::Create(*model, pl::ClassificationLoss(logits, t.label_smoothing), logits, o);
    if (!trainer.ok()) return trainer.status();
    const int64_t total = TotalSteps(t, **train);
    pl::TrainerCallbacks callbacks = Callbacks(phase, total);
    return (*trainer)->Train(**train, val->get(), callbacks);
  }

  // Where the teacher's weights are: spec.teacher.checkpoint_path, or the uploaded blob the
  // agent fetched into DIR/blobs/<sha256>.
  std::string TeacherWeightsPath() const {
    const spec::TeacherSpec& t = options.spec.teacher;
    return t.blob_sha256.empty() ? t.checkpoint_path : work_dir->path() + "/blobs/" + t.blob_sha256;
  }

  // The teacher's starting point: a checkpoint directory (model.safetensors + config.json,
  // whose config wins), a safetensors file in any supported naming loaded into `config`, an
  // uploaded blob (fetched by the agent into DIR/blobs/<sha256>), or fresh weights.
  absl::StatusOr<pl::SwinTransformer> ObtainTeacher(const pl::SwinConfig& config) {
    const spec::TeacherSpec& t = options.spec.teacher;
    if (!t.HasWeights()) return pl::CreateSwinTransformer(config);
    const std::string path = TeacherWeightsPath();
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      absl::StatusOr<pl::LoadedModel> loaded = pl::LoadModel(path);
      if (!loaded.ok()) return loaded.status();
      // Its config wins over the spec's architecture, but must fit the job's data.
      const pl::SwinConfig& own = loaded->config;
      if (own.image_size != config.image_size || own.in_channels != config.in_channels ||
          own.num_classes != config.num_classes) {
        return absl::InvalidArgumentError(absl::StrCat(
            t.blob_sha256.empty() ? "spec.teacher.checkpoint_path: " : "spec.teacher.blob_sha256: ",
            path, "/config.json is a model of ", own.image_size, "x", own.image_size, "x",
            own.in_channels, " images and ", own.num_classes, " classes, but the job's data are ",
            config.image_size, "x", config.image_size, "x", config.in_channels, " with ",
            config.num_classes, " classes"));
      }
      Log("info", absl::StrCat("teacher loaded from checkpoint directory ", path));
      return loaded->model;
    }
    if (!std::filesystem::exists(path, ec)) {
      return absl::NotFoundError(absl::StrCat(
          t.blob_sha256.empty() ? "spec.teacher.checkpoint_path: " : "spec.teacher.blob_sha256: ",
          path, ": no such file or directory"));
    }
    absl::StatusOr<pl::Naming> naming = pl::ParseNaming(t.naming);
    if (!naming.ok()) return naming.status();
    absl::StatusOr<pl::SwinTransformer> model = pl::CreateSwinTransformer(config);
    if (!model.ok()) return model.status();
    RETURN_IF_ERROR(pl::LoadWeights(*model, path, *naming));
    Log("info", absl::StrCat("teacher weights loaded from ", path));
    return model;
  }

  absl::StatusOr<pl::SwinTransformer> TeacherPhase() {
    const std::string phase = "teacher";
    absl::StatusOr<std::string> dir = work_dir->PhaseDir(phase);
    if (!dir.ok()) return dir.status();
    const std::string model_dir = *dir + "/model";
    if (work_dir->Completed(phase)) {
      Log("info", "teacher phase completed in an earlier run; loading its model");
      absl::StatusOr<pl::LoadedModel> loaded = pl::LoadModel(model_dir);
      if (!loaded.ok()) return loaded.status();
      loaded->model->to(device);
      phases.push_back(work_dir->Result(phase));
      return loaded->model;
    }
    events().Write(events::PhaseStarted(phase));
    auto t0 = Clock::now();
    absl::StatusOr<pl::SwinConfig> config = spec::ModelConfig(options.spec);
    if (!config.ok()) return config.status();
    if (ClassesFromData(options.spec)) {
      config->num_classes = static_cast<int>(data.num_classes);
    }
    if (config->num_classes != data.num_classes) {
      const bool in_config = options.spec.model.num_classes == 0 && options.spec.model.has_config &&
                             options.spec.model.config.num_classes > 0;
      return absl::InvalidArgumentError(absl::StrCat(
          in_config ? "spec.model.config.num_classes" : "spec.model.num_classes",
          ": the model has ", config->num_classes, " classes, the data set ", data.num_classes));
    }
    absl::StatusOr<pl::SwinTransformer> model = ObtainTeacher(*config);
    if (!model.ok()) return model.status();
    (*model)->to(device);
    nlohmann::json result = {{"name", phase}};
    const spec::TrainSpec& t = options.spec.teacher.train;
    if (t.Trains()) {
      absl::StatusOr<pl::TrainResult> trained =
          TrainClassifier(phase, *model, t, *dir + "/trainer");
      if (!trained.ok()) return trained.status();
      result["trained_steps"] = trained->steps;
      result["trained_epochs"] = trained->epochs;
      result["train_images_per_second"] = trained->images_per_second;
    }
    RETURN_IF_ERROR(FinishPhase(phase, StageModel(*model), model_dir, t0, std::move(result)));
    return model;
  }

  // Measures and saves a phase's model, marks the phase completed and announces its end.
  absl::Status FinishPhase(const std::string& phase, const StageModel& model,
                           const std::string& model_dir, Clock::time_point t0,
                           nlohmann::json result) {
    absl::StatusOr<nlohmann::json> measured = Measure(model);
    if (!measured.ok()) return measured.status();
    result.update(*measured);
    RETURN_IF_ERROR(model.Save(model_dir));
    result["wall_seconds"] = SecondsSince(t0);
    RETURN_IF_ERROR(work_dir->MarkCompleted(phase, result));
    phases.push_back(result);
    events().Write(events::PhaseFinished(
        phase, SecondsSince(t0),
        {{"top1", result["top1"]}, {"params", result["params"]}, {"macs", result["macs"]}}));
    return absl::OkStatus();
  }

  // The model of `phase` when an earlier run completed it; nullopt when it must run.
  absl::StatusOr<std::optional<StageModel>> Completed(const std::string& phase,
                                                      const std::string& model_dir) {
    if (!work_dir->Completed(phase)) return std::optional<StageModel>();
    Log("info", absl::StrCat(phase, " phase completed in an earlier run; loading its model"));
    absl::StatusOr<StageModel> loaded = StageModel::Load(model_dir);
    if (!loaded.ok()) return loaded.status();
    loaded->module().to(device);
    loaded->module().eval();
    phases.push_back(work_dir->Result(phase));
    return std::optional<StageModel>(std::move(*loaded));
  }

  absl::Status CheckCancelled(const std::string& next_phase) {
    if (options.cancel != nullptr && options.cancel->load()) {
      return absl::CancelledError(absl::StrCat("cancelled before the ", next_phase, " phase"));
    }
    return absl::OkStatus();
  }

  // Where a compression phase stands: its directories, and its model when an earlier run
  // completed it. Otherwise the phase is announced as started (unless cancelled).
  struct PhaseStart {
    std::string dir;
    std::string model_dir;
    std::optional<StageModel> done;
    Clock::time_point t0;
  };
  absl::StatusOr<PhaseStart> StartPhase(const std::string& phase) {
    PhaseStart start;
    absl::StatusOr<std::string> dir = work_dir->PhaseDir(phase);
    if (!dir.ok()) return dir.status();
    start.dir = *dir;
    start.model_dir = *dir + "/model";
    absl::StatusOr<std::optional<StageModel>> done = Completed(phase, start.model_dir);
    if (!done.ok()) return done.status();
    start.done = std::move(*done);
    if (start.done.has_value()) return start;
    RETURN_IF_ERROR(CheckCancelled(phase));
    events().Write(events::PhaseStarted(phase));
    start.t0 = Clock::now();
    return start;
  }

  // Share: the teacher turned into a weight-shared model, trained by weight distillation.
  absl::StatusOr<StageModel> SharePhase(const pl::SwinTransformer& teacher) {
    const std::string phase = "share";
    absl::StatusOr<PhaseStart> start = StartPhase(phase);
    if (!start.ok()) return start.status();
    if (start->done.has_value()) return std::move(*start->done);
    const std::string& dir = start->dir;
    const std::string& model_dir = start->model_dir;
    const Clock::time_point t0 = start->t0;
    const spec::ShareSpec& share = options.spec.share;
    pl::ShareStageOptions o;
    absl::StatusOr<pl::SharingOptions> sharing = SharingOptionsFromSpec(share, teacher->config());
    if (!sharing.ok()) return sharing.status();
    o.sharing = *sharing;
    o.distill = ShareLossFromSpec(share);
    o.trainer = TrainOptions(share.train, dir + "/trainer");
    absl::StatusOr<std::unique_ptr<pl::LoaderBatchSource>> train = Source(
        /*train=*/true, share.train.batch_size, options.spec.dataset.augment,
        options.spec.dataset.flip);
    if (!train.ok()) return train.status();
    absl::StatusOr<std::unique_ptr<pl::LoaderBatchSource>> val =
        Source(/*train=*/false, kEvalBatchSize, false, false);
    if (!val.ok()) return val.status();
    absl::StatusOr<pl::ShareStageResult> shared = pl::RunShareStage(
        teacher, **train, val->get(), o, Callbacks(phase, TotalSteps(share.train, **train)));
    if (!shared.ok()) return shared.status();
    nlohmann::json result = {{"name", phase},
                             {"trained_steps", shared->train.steps},
                             {"trained_epochs", shared->train.epochs},
                             {"train_images_per_second", shared->train.images_per_second},
                             {"sharing", shared->model->config().ToJson()["sharing"]}};
    StageModel model(shared->model);
    RETURN_IF_ERROR(FinishPhase(phase, model, model_dir, t0, std::move(result)));
    return model;
  }

  // Prune: structured pruning of the current model to the spec's MAC (or parameter) target,
  // relative to the teacher. Writes the prune plan beside the model.
  absl::StatusOr<StageModel> PrunePhase(const StageModel& current,
                                        const StageModel::Cost& teacher_cost) {
    const std::string phase = "prune";
    absl::StatusOr<PhaseStart> start = StartPhase(phase);
    if (!start.ok()) return start.status();
    if (start->done.has_value()) return std::move(*start->done);
    const std::string& dir = start->dir;
    const std::string& model_dir = start->model_dir;
    const Clock::time_point t0 = start->t0;
    const spec::PruneSpec& prune = options.spec.prune;
    absl::StatusOr<StageModel::Cost> cost = current.AnalyzeCost();
    if (!cost.ok()) return cost.status();
    const PruneTarget t(prune, teacher_cost, *cost);
    absl::StatusOr<double> reduction_or = t.Reduction();
    if (!reduction_or.ok()) return reduction_or.status();
    const double reduction = *reduction_or;
    absl::StatusOr<pl::PruneOptions> o = PruneOptionsFromSpec(prune, reduction);
    if (!o.ok()) return o.status();
    o->importance.device = device;
    const int64_t calibration_batch =
        std::max(1, options.spec.distill.enabled ? options.spec.distill.train.batch_size : 64);
    absl::StatusOr<std::unique_ptr<pl::LoaderBatchSource>> calibration =
        Source(/*train=*/true, calibration_batch, false, false);
    if (!calibration.ok()) return calibration.status();
    Log("info",
        absl::StrCat("pruning ", reduction * 100.0, "% of the current model's ", t.current, " ",
                     t.unit, " (", t.target * 100.0, "% of the teacher's ", t.teacher, ")"));
    std::optional<StageModel> pruned;
    pl::PrunePlan plan;
    if (current.is_shared()) {
      absl::StatusOr<pl::SharedPruneResult> r =
          pl::PruneSharedSwin(current.shared(), *o, calibration->get());
      if (!r.ok()) return r.status();
      pruned.emplace(r->model);
      plan = std::move(r->plan);
    } else {
      absl::StatusOr<pl::PruneResult> r = pl::PruneSwin(current.plain(), *o, calibration->get());
      if (!r.ok()) return r.status();
      pruned.emplace(r->model);
      plan = std::move(r->plan);
    }
    pruned->module().to(device);
    pruned->module().eval();
    RETURN_IF_ERROR(WriteFileAtomically(dir + "/prune_plan.json", plan.ToJsonString() + "\n"));
    nlohmann::json result = {
        {"name", phase},
        {"criterion", prune.importance},
        {t.by_params ? "phase_params_reduction" : "phase_macs_reduction", reduction},
        {"prune_plan", dir + "/prune_plan.json"}};
    RETURN_IF_ERROR(FinishPhase(phase, *pruned, model_dir, t0, std::move(result)));
    return std::move(*pruned);
  }

  // Distill: knowledge distillation of the current model from the teacher.
  absl::StatusOr<StageModel> DistillPhase(const StageModel& current,
                                          const pl::SwinTransformer& teacher) {
    const std::string phase = "distill";
    absl::StatusOr<PhaseStart> start = StartPhase(phase);
    if (!start.ok()) return start.status();
    if (start->done.has_value()) return std::move(*start->done);
    const std::string& dir = start->dir;
    const std::string& model_dir = start->model_dir;
    const Clock::time_point t0 = start->t0;
    const spec::DistillSpec& distill = options.spec.distill;
    pl::DistillStageOptions o = DistillOptionsFromSpec(distill);
    o.trainer = TrainOptions(distill.train, dir + "/trainer");
    const bool augment = options.spec.dataset.augment || options.spec.dataset.flip;
    absl::StatusOr<std::unique_ptr<pl::LoaderBatchSource>> train =
        Source(/*train=*/true, distill.train.batch_size, options.spec.dataset.augment,
               options.spec.dataset.flip);
    if (!train.ok()) return train.status();
    absl::StatusOr<std::unique_ptr<pl::LoaderBatchSource>> val =
        Source(/*train=*/false, kEvalBatchSize, false, false);
    if (!val.ok()) return val.status();
    torch::Tensor teacher_logits;
    const bool cache = distill.cache_teacher_logits && !augment && pl::CanCacheTeacherLogits(o);
    if (cache) {
      auto c0 = Clock::now();
      absl::StatusOr<std::unique_ptr<pl::LoaderBatchSource>> ordered =
          Source(/*train=*/false, kEvalBatchSize, false, false, /*train_split=*/true);
      if (!ordered.ok()) return ordered.status();
      absl::StatusOr<torch::Tensor> table =
          pl::ComputeTeacherLogits(teacher, **ordered, data.train_labels.size(0), device);
      if (!table.ok()) return table.status();
      teacher_logits = *table;
      Log("info", absl::StrCat("teacher logits of ", data.train_labels.size(0),
                               " training examples computed in ", SecondsSince(c0), " s"));
    }
    StageModel student = current;
    if (!current.is_shared() && current.plain().ptr() == teacher.ptr()) {
      // Teacher -> distill: the student starts as the teacher's weights but must be a model of
      // its own, or training it would move the teacher (its traced attention and hidden states,
      // its logits when not cached) along with it.
      absl::StatusOr<std::string> teacher_dir = work_dir->PhaseDir("teacher");
      if (!teacher_dir.ok()) return teacher_dir.status();
      absl::StatusOr<pl::LoadedModel> copy = pl::LoadModel(*teacher_dir + "/model");
      if (!copy.ok()) return copy.status();
      student = StageModel(copy->model);
    }
    student.module().to(device);
    absl::StatusOr<pl::TrainResult> trained =
        pl::RunDistillStage(student.AsStudent(), teacher, **train, val->get(), teacher_logits, o,
                            Callbacks(phase, TotalSteps(distill.train, **train)));
    if (!trained.ok()) return trained.status();
    nlohmann::json result = {{"name", phase},
                             {"trained_steps", trained->steps},
                             {"trained_epochs", trained->epochs},
                             {"train_images_per_second", trained->images_per_second},
                             {"teacher_logits_cached", cache}};
    RETURN_IF_ERROR(FinishPhase(phase, student, model_dir, t0, std::move(result)));
    return student;
  }

  absl::Status Announce(const std::string& name, const std::string& path) {
    absl::StatusOr<FileDigest> digest = Sha256File(path);
    if (!digest.ok()) return digest.status();
    events().Write(events::ArtifactReady(name, path, digest->sha256, digest->size_bytes));
    return absl::OkStatus();
  }

  // A prune target the prune phase could not reach fails before anything is trained: the costs
  // of the teacher and of the model the prune phase receives (the teacher, or its shared form)
  // follow from the spec. A model the analysis refuses is left to the phases to report.
  absl::Status CheckPruneTarget(pl::SwinConfig config) const {
    const spec::JobSpec& s = options.spec;
    if (!s.prune.enabled) return absl::OkStatus();
    if (s.teacher.HasWeights()) {
      // A checkpoint directory's own config.json decides the teacher's architecture (see
      // ObtainTeacher): only the prune phase, with the loaded teacher, can check.
      std::error_code ec;
      if (std::filesystem::is_directory(TeacherWeightsPath(), ec)) return absl::OkStatus();
    }
    if (ClassesFromData(s)) {
      config.num_classes = static_cast<int>(data.num_classes);
    }
    absl::StatusOr<pl::SwinCost> teacher = pl::AnalyzeSwinCost(config);
    if (!teacher.ok()) return absl::OkStatus();
    const StageModel::Cost teacher_cost{teacher->params, teacher->total.macs};
    StageModel::Cost current = teacher_cost;
    if (s.share.enabled) {
      absl::StatusOr<pl::SharingOptions> sharing = SharingOptionsFromSpec(s.share, config);
      if (!sharing.ok()) return absl::OkStatus();
      absl::StatusOr<pl::SharingConfig> shared_config = pl::MakeSharingConfig(config, *sharing);
      if (!shared_config.ok()) return absl::OkStatus();
      absl::StatusOr<pl::SharedCost> shared = pl::AnalyzeSharedCost(*shared_config);
      if (!shared.ok()) return absl::OkStatus();
      current = {shared->params, shared->total.macs};
    }
    absl::StatusOr<double> reduction = PruneTarget(s.prune, teacher_cost, current).Reduction();
    if (!reduction.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat(reduction.status().message(), s.share.enabled ? " (the shared model)" : ""));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<nlohmann::json> RunUnchecked() {
    // Fresh weights (a teacher trained from scratch, transformation layers) come from LibTorch's
    // generator: seeded so that a job is reproducible.
    torch::manual_seed(static_cast<uint64_t>(options.spec.resources.seed));
    absl::StatusOr<pl::SwinConfig> config = spec::ModelConfig(options.spec);
    if (!config.ok()) return config.status();
    RETURN_IF_ERROR(LoadData(*config));
    RETURN_IF_ERROR(CheckPruneTarget(*config));
    absl::StatusOr<pl::SwinTransformer> teacher = TeacherPhase();
    if (!teacher.ok()) return teacher.status();
    (*teacher)->eval();
    const StageModel::Cost teacher_cost{phases.front()["params"].get<int64_t>(),
                                        phases.front()["macs"].get<int64_t>()};

    // Each stage takes the previous one's model: teacher -> share -> prune -> distill.
    StageModel current(*teacher);
    const spec::JobSpec& s = options.spec;
    if (s.share.enabled) {
      absl::StatusOr<StageModel> next = SharePhase(*teacher);
      if (!next.ok()) return next.status();
      current = std::move(*next);
    }
    if (s.prune.enabled) {
      absl::StatusOr<StageModel> next = PrunePhase(current, teacher_cost);
      if (!next.ok()) return next.status();
      current = std::move(*next);
    }
    if (s.distill.enabled) {
      absl::StatusOr<StageModel> next = DistillPhase(current, *teacher);
      if (!next.ok()) return next.status();
      current = std::move(*next);
    }
    const std::string result_dir = work_dir->path() + "/result";
    RETURN_IF_ERROR(current.Save(result_dir));
    const nlohmann::json& first = phases.front();
    const nlohmann::json& last = phases.back();
    nlohmann::json report = {
        {"device", device.str()},
        {"threads", torch::get_num_threads()},
        {"input", {{"scale", 1.0 / 255.0}, {"mean", kInputMean}, {"std", kInputStd}}},
        {"dataset",
         {{"format", options.spec.dataset.format},
          {"train_samples", data.train_labels.size(0)},
          {"val_samples", data.val_labels.size(0)},
          {"num_classes", data.num_classes}}},
        {"phases", phases},
        {"teacher", first},
        {"final", last},
        {"comparison",
         {{"macs_reduction", 1.0 - last["macs"].get<double>() / first["macs"].get<double>()},
          {"params_reduction", 1.0 - last["params"].get<double>() / first["params"].get<double>()},
          {"top1_delta", last["top1"].get<double>() - first["top1"].get<double>()}}},
        {"wall_seconds", SecondsSince(start)},
    };
    const std::string report_path = work_dir->path() + "/report.json";
    RETURN_IF_ERROR(WriteFileAtomically(report_path, report.dump(2) + "\n"));
    RETURN_IF_ERROR(Announce("model.safetensors", result_dir + "/model.safetensors"));
    RETURN_IF_ERROR(Announce("config.json", result_dir + "/config.json"));
    RETURN_IF_ERROR(Announce("report.json", report_path));
    if (s.prune.enabled) {
      RETURN_IF_ERROR(
          Announce("prune_plan.json", work_dir->path() + "/phases/prune/prune_plan.json"));
    }
    return report;
  }
};

JobRunner::JobRunner(std::unique_ptr<State> state) : state_(std::move(state)) {}
JobRunner::~JobRunner() = default;

absl::StatusOr<std::unique_ptr<JobRunner>> JobRunner::Create(RunnerOptions options) {
  if (options.events == nullptr) return absl::InvalidArgumentError("no event writer");
  const spec::JobSpec& s = options.spec;
  auto state = std::make_unique<State>();
  absl::StatusOr<torch::Device> device =
      ResolveDevice(options.device == "auto" ? s.resources.device : options.device);
  if (!device.ok()) return device.status();
  state->device = *device;
  absl::StatusOr<WorkDir> work_dir = WorkDir::Open(options.workdir, spec::ToJson(s));
  if (!work_dir.ok()) return work_dir.status();
  state->work_dir = std::make_unique<WorkDir>(std::move(*work_dir));
  int threads = options.threads > 0 ? options.threads : s.resources.threads;
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  options.threads = threads;
  torch::set_num_threads(threads);
  state->options = std::move(options);
  return std::unique_ptr<JobRunner>(new JobRunner(std::move(state)));
}

absl::StatusOr<nlohmann::json> JobRunner::Run() {
  try {
    return state_->RunUnchecked();
  } catch (const c10::Error& e) {
    return pl::StatusFromTorchError(e, "running the job");
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("running the job: ", e.what()));
  }
}

}  // namespace compress::run
