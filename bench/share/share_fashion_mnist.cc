// The share stage on Fashion-MNIST: trains a swin_micro teacher briefly (or loads one saved by
// an earlier run), makes a shared model from it with first-block and with mean initialisation
// of the shared weights, trains each with the weight distillation for the same number of steps,
// and prints one summary JSON object on stdout (metric points go to stderr). The figures in
// bench/results/share.md come from this program; see that file for the command.
//
// It reads the uncompressed IDX files (gunzip the data set into --idx_dir first), normalises
// them once and feeds the Trainer through TensorBatchSource, so that it links only the share
// stage's libraries.
#include <torch/torch.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "worker/pipeline/checkpoint/model_io.h"
#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/share/share_stage.h"
#include "worker/pipeline/train/batch_source.h"
#include "worker/pipeline/train/evaluation.h"
#include "worker/pipeline/train/trainer.h"

ABSL_FLAG(std::string, idx_dir, "/tmp/fashion-mnist-idx",
          "directory with the uncompressed Fashion-MNIST IDX files");
ABSL_FLAG(std::string, teacher_dir, "",
          "checkpoint directory of the teacher: loaded when it holds one, else written after "
          "training (empty: train, do not save)");
ABSL_FLAG(int64_t, teacher_steps, 1000, "teacher optimizer steps");
ABSL_FLAG(int64_t, share_steps, 600, "weight-distillation optimizer steps per initialisation");
ABSL_FLAG(std::string, inits, "first,mean", "initialisations to run, comma-separated");
ABSL_FLAG(int, batch_size, 128, "images per step");
ABSL_FLAG(double, teacher_lr, 2e-3, "teacher peak learning rate");
ABSL_FLAG(double, share_lr, 1e-3, "weight-distillation peak learning rate");
ABSL_FLAG(double, ce_weight, 0.0, "hard-label cross-entropy weight");
ABSL_FLAG(double, logit_weight, 1.0, "soft cross-entropy weight");
ABSL_FLAG(double, temperature, 1.0, "soft cross-entropy temperature");
ABSL_FLAG(double, attention_weight, 1.0, "attention relation weight");
ABSL_FLAG(double, hidden_weight, 0.1, "hidden-state relation weight");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(int, log_every, 100, "steps between metric points");
ABSL_FLAG(uint64_t, seed, 0, "seed");

namespace {

namespace cp = compress::pipeline;

struct Split {
  torch::Tensor images;  // float [N, 1, 28, 28], normalised
  torch::Tensor labels;  // int64 [N]
};

// An IDX file (big-endian header: magic, dims) as a uint8 tensor of its dims.
absl::StatusOr<torch::Tensor> ReadIdx(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path);
  auto read_u32 = [&in]() {
    unsigned char b[4] = {0, 0, 0, 0};
    in.read(reinterpret_cast<char*>(b), 4);
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
  };
  const uint32_t magic = read_u32();
  if ((magic >> 8) != 0x08) return absl::DataLossError(path + ": not a uint8 IDX file");
  std::vector<int64_t> dims;
  int64_t count = 1;
  for (uint32_t d = 0; d < (magic & 0xff); ++d) {
    dims.push_back(read_u32());
    count *= dims.back();
  }
  torch::Tensor data = torch::empty(dims, torch::kUInt8);
  in.read(reinterpret_cast<char*>(data.data_ptr<uint8_t>()), count);
  if (!in) return absl::DataLossError(path + ": truncated");
  return data;
}

absl::StatusOr<Split> ReadSplit(const std::string& prefix) {
  const std::string dir = absl::GetFlag(FLAGS_idx_dir) + "/";
  absl::StatusOr<torch::Tensor> images = ReadIdx(dir + prefix + "-images-idx3-ubyte");
  absl::StatusOr<torch::Tensor> labels = ReadIdx(dir + prefix + "-labels-idx1-ubyte");
  if (!images.ok()) return images.status();
  if (!labels.ok()) return labels.status();
  // Fashion-MNIST training-set pixel statistics.
  return Split{((images->to(torch::kFloat) / 255.0 - 0.286) / 0.353).unsqueeze(1),
               labels->to(torch::kLong)};
}

std::unique_ptr<cp::TensorBatchSource> Source(const Split& split, bool train) {
  cp::TensorBatchSourceOptions options;
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.shuffle = train;
  options.seed = absl::GetFlag(FLAGS_seed);
  if (train) {  // horizontal flip with probability 1/2
    options.transform = [](cp::TrainBatch batch, torch::Generator& generator) {
      const torch::Tensor flip =
          torch::rand({batch.inputs.size(0), 1, 1, 1}, generator, torch::kFloat) < 0.5;
      batch.inputs = torch::where(flip, batch.inputs.flip({3}), batch.inputs);
      return batch;
    };
  }
  return *cp::TensorBatchSource::Create(split.images, split.labels, options);
}

cp::TrainerOptions TrainerOptions(int64_t steps, double lr) {
  cp::TrainerOptions options;
  options.epochs = 0;
  options.max_steps = steps;
  options.lr = lr;
  options.warmup_steps = steps / 20;
  options.num_threads = absl::GetFlag(FLAGS_threads);
  options.log_every_steps = absl::GetFlag(FLAGS_log_every);
  options.seed = static_cast<int64_t>(absl::GetFlag(FLAGS_seed));
  options.checkpoint_at_end = false;
  return options;
}

void PrintMetric(const std::string& phase, const cp::MetricPoint& p) {
  nlohmann::json line = {{"phase", phase},
                         {"kind", p.kind == cp::MetricPoint::Kind::kTrain ? "train" : "eval"},
                         {"step", p.step},
                         {"loss", p.loss}};
  for (const auto& [name, value] : p.terms) line[name] = value;
  if (p.kind == cp::MetricPoint::Kind::kTrain) {
    line["images_per_s"] = p.images_per_second;
  } else {
    line["top1"] = p.eval->top1;
  }
  std::cerr << line.dump() << std::endl;
}

absl::StatusOr<double> Top1(torch::nn::Module& module, const cp::LogitsFn& logits_fn,
                            const Split& val) {
  std::unique_ptr<cp::TensorBatchSource> source = Source(val, /*train=*/false);
  absl::StatusOr<cp::EvalMetrics> metrics = cp::Evaluate(module, logits_fn, *source, torch::kCPU);
  if (!metrics.ok()) return metrics.status();
  return metrics->top1;
}

absl::StatusOr<cp::SwinTransformer> Teacher(const Split& train, nlohmann::json& summary) {
  const std::string dir = absl::GetFlag(FLAGS_teacher_dir);
  if (!dir.empty()) {
    absl::StatusOr<cp::LoadedModel> loaded = cp::LoadModel(dir);
    if (loaded.ok()) {
      summary["teacher_loaded_from"] = dir;
      return loaded->model;
    }
  }
  absl::StatusOr<cp::SwinConfig> config = cp::SwinPreset("swin_micro");
  if (!config.ok()) return config.status();
  torch::manual_seed(absl::GetFlag(FLAGS_seed));
  absl::StatusOr<cp::SwinTransformer> model = cp::CreateSwinTransformer(*config);
  if (!model.ok()) return model.status();
  cp::SwinTransformer m = *model;
  absl::StatusOr<std::unique_ptr<cp::Trainer>> trainer = cp::Trainer::Create(
      *m,
      cp::ClassificationLoss([m](const torch::Tensor& x) mutable { return m->forward(x); }, 0.0),
      nullptr, TrainerOptions(absl::GetFlag(FLAGS_teacher_steps), absl::GetFlag(FLAGS_teacher_lr)));
  if (!trainer.ok()) return trainer.status();
  std::unique_ptr<cp::TensorBatchSource> source = Source(train, /*train=*/true);
  cp::TrainerCallbacks callbacks;
  callbacks.on_metric = [](const cp::MetricPoint& p) { PrintMetric("teacher", p); };
  absl::StatusOr<cp::TrainResult> result = (*trainer)->Train(*source, nullptr, callbacks);
  if (!result.ok()) return result.status();
  summary["teacher_steps"] = result->steps;
  summary["teacher_train_seconds"] = result->train_seconds;
  if (!dir.empty()) {
    if (absl::Status status = cp::SaveModel(dir, m); !status.ok()) return status;
  }
  return m;
}

int Run() {
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  absl::StatusOr<Split> train = ReadSplit("train");
  absl::StatusOr<Split> val = ReadSplit("t10k");
  if (!train.ok() || !val.ok()) {
    std::cerr << train.status() << " " << val.status() << "\n";
    return 1;
  }
  nlohmann::json summary;
  absl::StatusOr<cp::SwinTransformer> teacher = Teacher(*train, summary);
  if (!teacher.ok()) {
    std::cerr << teacher.status() << "\n";
    return 1;
  }
  cp::SwinTransformer t = *teacher;
  absl::StatusOr<double> teacher_top1 = Top1(
      *t, [t](const torch::Tensor& x) mutable { return t->forward(x); }, *val);
  absl::StatusOr<cp::SwinCost> teacher_cost = cp::AnalyzeSwinCost(t->config());
  if (!teacher_top1.ok() || !teacher_cost.ok()) {
    std::cerr << teacher_top1.status() << " " << teacher_cost.status() << "\n";
    return 1;
  }
  summary["teacher"] = {{"top1", *teacher_top1},
                        {"params", teacher_cost->params},
                        {"macs", teacher_cost->total.macs}};
  std::cerr << summary.dump() << std::endl;

  for (const char* init_name : {"first", "mean"}) {
    if (absl::GetFlag(FLAGS_inits).find(init_name) == std::string::npos) continue;
    cp::ShareStageOptions options;
    options.sharing.init = *cp::ParseSharedInit(init_name);
    options.distill.ce_weight = absl::GetFlag(FLAGS_ce_weight);
    options.distill.logit_weight = absl::GetFlag(FLAGS_logit_weight);
    options.distill.temperature = absl::GetFlag(FLAGS_temperature);
    options.distill.attention_weight = absl::GetFlag(FLAGS_attention_weight);
    options.distill.hidden_weight = absl::GetFlag(FLAGS_hidden_weight);
    options.trainer =
        TrainerOptions(absl::GetFlag(FLAGS_share_steps), absl::GetFlag(FLAGS_share_lr));

    // Top-1 right after sharing, before any training.
    absl::StatusOr<cp::SharedSwin> initial = cp::ShareFromTeacher(t, options.sharing);
    if (!initial.ok()) {
      std::cerr << initial.status() << "\n";
      return 1;
    }
    cp::SharedSwin s0 = *initial;
    absl::StatusOr<double> initial_top1 = Top1(
        *s0, [s0](const torch::Tensor& x) mutable { return s0->forward(x); }, *val);
    if (!initial_top1.ok()) {
      std::cerr << initial_top1.status() << "\n";
      return 1;
    }
    std::unique_ptr<cp::TensorBatchSource> train_source = Source(*train, /*train=*/true);
    std::unique_ptr<cp::TensorBatchSource> val_source = Source(*val, /*train=*/false);
    cp::TrainerCallbacks callbacks;
    callbacks.on_metric = [init_name](const cp::MetricPoint& p) {
      PrintMetric(std::string("share_") + init_name, p);
    };
    absl::StatusOr<cp::ShareStageResult> result =
        cp::RunShareStage(t, *train_source, val_source.get(), options, callbacks);
    if (!result.ok()) {
      std::cerr << result.status() << "\n";
      return 1;
    }
    const double top1 = result->train.final_eval->top1;
    summary[init_name] = {
        {"top1_after_sharing", *initial_top1},
        {"top1", top1},
        {"top1_drop_points", 100.0 * (*teacher_top1 - top1)},
        {"params", result->cost.params},
        {"param_reduction", 1.0 - static_cast<double>(result->cost.params) /
                                      static_cast<double>(result->cost.base_params)},
        {"macs", result->cost.total.macs},
        {"steps", result->train.steps},
        {"train_seconds", result->train.train_seconds},
        {"images_per_s", result->train.images_per_second}};
    std::cerr << summary.dump() << std::endl;
  }
  std::cout << summary.dump(2) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return Run();
}
