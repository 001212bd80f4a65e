// Prunes a swin_micro Fashion-MNIST classifier to a MAC reduction with L2 and with Taylor
// importance and reports validation top-1 right after pruning, before any distillation. The
// teacher is loaded from --teacher_dir when it holds a checkpoint, otherwise trained briefly and
// saved there. Prints one JSON summary on stdout; writes each prune plan to --out_dir. The
// figures in bench/results/prune.md come from this program; see that file for the command.
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "worker/pipeline/checkpoint/model_io.h"
#include "worker/pipeline/data/batch_loader.h"
#include "worker/pipeline/data/dataset.h"
#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/prune/pruner.h"
#include "worker/pipeline/train/evaluation.h"
#include "worker/pipeline/train/teacher.h"

ABSL_FLAG(std::string, data, "/usr/share/datasets/fashion-mnist", "Fashion-MNIST directory");
ABSL_FLAG(std::string, teacher_dir, "/tmp/compress_prune_bench/teacher",
          "teacher checkpoint directory (loaded if present, else trained and saved)");
ABSL_FLAG(std::string, out_dir, "/tmp/compress_prune_bench", "where the prune plans go");
ABSL_FLAG(int64_t, teacher_steps, 300, "optimizer steps of the teacher when it is trained");
ABSL_FLAG(int, batch_size, 128, "images per teacher step");
ABSL_FLAG(double, target, 0.32, "MAC reduction");
ABSL_FLAG(int, steps, 4, "iterative pruning steps");
ABSL_FLAG(int, calibration_batches, 8, "Taylor calibration batches per step");
ABSL_FLAG(int, calibration_batch_size, 64, "images per calibration batch");
ABSL_FLAG(std::string, ranking, "global", "global or local");
ABSL_FLAG(std::string, attention, "heads", "heads or head_dims");
ABSL_FLAG(int, round_to, 8, "width multiple");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(uint64_t, seed, 0, "seed");

namespace {

namespace cp = compress::pipeline;

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

cp::BatchLoaderOptions LoaderOptions() {
  cp::BatchLoaderOptions loader;
  loader.batch_size = absl::GetFlag(FLAGS_batch_size);
  loader.seed = absl::GetFlag(FLAGS_seed);
  loader.horizontal_flip = true;
  loader.mean = {0.286};  // Fashion-MNIST training-set pixel statistics, as the teacher bench.
  loader.std = {0.353};
  loader.num_workers = 1;
  return loader;
}

absl::StatusOr<cp::EvalMetrics> EvaluateModel(cp::SwinTransformer model,
                                              const cp::DatasetSplits& splits) {
  absl::StatusOr<std::unique_ptr<cp::BatchLoader>> loader =
      cp::BatchLoader::Create(splits.val_images, splits.val_labels, LoaderOptions().ForEval());
  if (!loader.ok()) return loader.status();
  cp::LoaderBatchSource source(*std::move(loader));
  return cp::Evaluate(
      *model, [model](const torch::Tensor& x) mutable { return model->forward(x); }, source,
      torch::kCPU);
}

absl::StatusOr<cp::SwinTransformer> Teacher(const cp::DatasetSplits& splits, nlohmann::json& out) {
  const std::string dir = absl::GetFlag(FLAGS_teacher_dir);
  if (std::filesystem::exists(std::filesystem::path(dir) / cp::kConfigFileName)) {
    absl::StatusOr<cp::LoadedModel> loaded = cp::LoadModel(dir);
    if (!loaded.ok()) return loaded.status();
    out["teacher_source"] = "loaded";
    return loaded->model;
  }
  absl::StatusOr<cp::SwinConfig> config = cp::SwinPreset("swin_micro");
  if (!config.ok()) return config.status();
  torch::manual_seed(absl::GetFlag(FLAGS_seed));
  absl::StatusOr<cp::SwinTransformer> model = cp::CreateSwinTransformer(*config);
  if (!model.ok()) return model.status();
  cp::TeacherOptions options;
  options.trainer.epochs = 0;
  options.trainer.max_steps = absl::GetFlag(FLAGS_teacher_steps);
  options.trainer.lr = 2e-3;
  options.trainer.warmup_steps = options.trainer.max_steps / 10;
  options.trainer.num_threads = absl::GetFlag(FLAGS_threads);
  options.trainer.log_every_steps = 100;
  options.trainer.checkpoint_at_end = false;
  options.trainer.seed = static_cast<int64_t>(absl::GetFlag(FLAGS_seed));
  options.loader = LoaderOptions();
  cp::DatasetSplits train_only = splits;
  train_only.val_images = splits.val_images.slice(0, 0, 0);
  train_only.val_labels = splits.val_labels.slice(0, 0, 0);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<cp::TrainResult> result = cp::TrainClassifier(*model, train_only, options);
  if (!result.ok()) return result.status();
  out["teacher_source"] = "trained";
  out["teacher_train_steps"] = result->steps;
  out["teacher_train_seconds"] = Seconds(start);
  if (absl::Status status = cp::SaveModel(dir, *model); !status.ok()) return status;
  return *model;
}

int Run() {
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  const auto start = std::chrono::steady_clock::now();
  cp::DatasetOptions data;
  data.format = cp::DatasetFormat::kFashionMnist;
  data.path = absl::GetFlag(FLAGS_data);
  absl::StatusOr<cp::DatasetSplits> splits = cp::LoadDataset(data);
  if (!splits.ok()) {
    std::cerr << splits.status() << "\n";
    return 1;
  }
  nlohmann::json summary;
  absl::StatusOr<cp::SwinTransformer> teacher = Teacher(*splits, summary);
  if (!teacher.ok()) {
    std::cerr << teacher.status() << "\n";
    return 1;
  }
  absl::StatusOr<cp::EvalMetrics> teacher_eval = EvaluateModel(*teacher, *splits);
  if (!teacher_eval.ok()) {
    std::cerr << teacher_eval.status() << "\n";
    return 1;
  }
  summary["teacher_top1"] = teacher_eval->top1;
  summary["val_samples"] = teacher_eval->samples;

  // Calibration batches for Taylor: training images, no augmentation.
  cp::BatchLoaderOptions calibration_options = LoaderOptions().ForEval();
  calibration_options.batch_size = absl::GetFlag(FLAGS_calibration_batch_size);
  calibration_options.shuffle = true;
  absl::StatusOr<std::unique_ptr<cp::BatchLoader>> calibration_loader =
      cp::BatchLoader::Create(splits->train_images, splits->train_labels, calibration_options);
  if (!calibration_loader.ok()) {
    std::cerr << calibration_loader.status() << "\n";
    return 1;
  }
  cp::LoaderBatchSource calibration(*std::move(calibration_loader));

  std::filesystem::create_directories(absl::GetFlag(FLAGS_out_dir));
  for (cp::ImportanceCriterion criterion :
       {cp::ImportanceCriterion::kL2, cp::ImportanceCriterion::kTaylor}) {
    cp::PruneOptions options;
    options.target_reduction = absl::GetFlag(FLAGS_target);
    options.steps = absl::GetFlag(FLAGS_steps);
    options.importance.criterion = criterion;
    options.importance.calibration_batches = absl::GetFlag(FLAGS_calibration_batches);
    options.ranking = absl::GetFlag(FLAGS_ranking) == "local" ? cp::PruneRanking::kLocal
                                                              : cp::PruneRanking::kGlobal;
    options.attention = absl::GetFlag(FLAGS_attention) == "head_dims"
                            ? cp::AttentionGranularity::kHeadDims
                            : cp::AttentionGranularity::kHeads;
    options.round_to = absl::GetFlag(FLAGS_round_to);
    const auto prune_start = std::chrono::steady_clock::now();
    absl::StatusOr<cp::PruneResult> pruned = cp::PruneSwin(*teacher, options, &calibration);
    if (!pruned.ok()) {
      std::cerr << pruned.status() << "\n";
      return 1;
    }
    const double prune_seconds = Seconds(prune_start);
    absl::StatusOr<cp::EvalMetrics> eval = EvaluateModel(pruned->model, *splits);
    if (!eval.ok()) {
      std::cerr << eval.status() << "\n";
      return 1;
    }
    const std::string name = cp::ImportanceCriterionName(criterion);
    std::ofstream(std::filesystem::path(absl::GetFlag(FLAGS_out_dir)) / ("plan_" + name + ".json"))
        << pruned->plan.ToJsonString();
    summary[name] = {{"top1", eval->top1},
                     {"top5", eval->top5},
                     {"val_loss", eval->loss},
                     {"macs_before", pruned->plan.macs_before},
                     {"macs_after", pruned->plan.macs_after},
                     {"params_before", pruned->plan.params_before},
                     {"params_after", pruned->plan.params_after},
                     {"achieved_reduction", pruned->plan.achieved_reduction},
                     {"prune_seconds", prune_seconds},
                     {"config", pruned->config.ToJson()}};
    std::cerr << name << ": top1 " << eval->top1 << " after " << prune_seconds << " s" << std::endl;
  }
  summary["settings"] = {{"target", absl::GetFlag(FLAGS_target)},
                         {"steps", absl::GetFlag(FLAGS_steps)},
                         {"calibration_batches", absl::GetFlag(FLAGS_calibration_batches)},
                         {"calibration_batch_size", absl::GetFlag(FLAGS_calibration_batch_size)},
                         {"ranking", absl::GetFlag(FLAGS_ranking)},
                         {"attention", absl::GetFlag(FLAGS_attention)},
                         {"round_to", absl::GetFlag(FLAGS_round_to)},
                         {"threads", absl::GetFlag(FLAGS_threads)}};
  summary["wall_seconds"] = Seconds(start);
  std::cout << summary.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return Run();
}
