// Trains a Swin classifier on Fashion-MNIST with the teacher phase (TrainClassifier) and prints
// one JSON object per metric point on stderr and a summary JSON object on stdout. The figures in
// bench/results/teacher_fashion_mnist.md come from this program; see that file for the command.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/train/swin_arch_flags.h"
#include "worker/pipeline/data/dataset.h"
#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/train/optimization.h"
#include "worker/pipeline/train/teacher.h"

ABSL_FLAG(std::string, data, "/usr/share/datasets/fashion-mnist", "Fashion-MNIST directory");
ABSL_FLAG(std::string, cache_dir, "", "decode cache directory (empty: none)");
ABSL_FLAG(int, patch_size, 0, "patch size (0: swin_micro's)");
ABSL_FLAG(int, window_size, 0, "window size (0: swin_micro's)");
ABSL_FLAG(int, embed_dim, 0, "stage-0 width (0: swin_micro's)");
ABSL_FLAG(std::string, depths, "", "blocks per stage, e.g. 2,2 (empty: swin_micro's)");
ABSL_FLAG(std::string, num_heads, "", "heads per stage, e.g. 2,4 (empty: swin_micro's)");
ABSL_FLAG(double, mlp_ratio, 0.0, "MLP ratio (0: 4)");
ABSL_FLAG(double, drop_path, -1.0, "drop path rate (< 0: swin_micro's)");
ABSL_FLAG(int, epochs, 3, "epochs");
ABSL_FLAG(int64_t, max_steps, 0, "optimizer steps (0: epochs only)");
ABSL_FLAG(int, batch_size, 128, "images per step");
ABSL_FLAG(double, lr, 2e-3, "peak learning rate");
ABSL_FLAG(double, min_lr, 1e-5, "final learning rate");
ABSL_FLAG(double, warmup_epochs, 0.2, "linear warm-up in epochs");
ABSL_FLAG(double, weight_decay, 0.05, "AdamW weight decay");
ABSL_FLAG(double, label_smoothing, 0.0, "label smoothing");
ABSL_FLAG(double, clip, 1.0, "gradient clipping max norm (<= 0: off)");
ABSL_FLAG(bool, crop, false, "random resized crop");
ABSL_FLAG(bool, flip, true, "horizontal flip");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(int, loader_workers, 1, "BatchLoader threads");
ABSL_FLAG(int, log_every, 100, "steps between metric points");
ABSL_FLAG(int64_t, limit_train, 0, "use only this many training images (0: all)");
ABSL_FLAG(uint64_t, seed, 0, "seed");
ABSL_FLAG(double, budget_seconds, 0.0,
          "if > 0: measure training images/s on random batches first and set max_steps so that "
          "training fits this many seconds (the cosine schedule then ends on time)");

namespace {

// Training images/s of a fresh model of `config` on random batches (forward, backward, AdamW),
// measured over `steps` steps after one warm-up step.
double ProbeImagesPerSecond(const compress::pipeline::SwinConfig& config, int batch_size,
                            int steps) {
  auto model = compress::pipeline::CreateSwinTransformer(config);
  if (!model.ok()) return 0.0;
  auto optimizer = compress::pipeline::MakeAdamW(**model, compress::pipeline::TrainerOptions());
  if (!optimizer.ok()) return 0.0;
  const torch::Tensor images =
      torch::randn({batch_size, config.in_channels, config.image_size, config.image_size});
  const torch::Tensor labels = torch::randint(0, config.num_classes, {batch_size}, torch::kLong);
  auto step = [&] {
    (*optimizer)->zero_grad();
    torch::nn::functional::cross_entropy((*model)->forward(images), labels).backward();
    (*optimizer)->step();
  };
  step();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(batch_size) * steps / seconds;
}

int Run() {
  using compress::pipeline::MetricPoint;
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  compress::bench::ArchOverrides arch;
  arch.patch_size = absl::GetFlag(FLAGS_patch_size);
  arch.window_size = absl::GetFlag(FLAGS_window_size);
  arch.embed_dim = absl::GetFlag(FLAGS_embed_dim);
  arch.depths = absl::GetFlag(FLAGS_depths);
  arch.num_heads = absl::GetFlag(FLAGS_num_heads);
  arch.mlp_ratio = absl::GetFlag(FLAGS_mlp_ratio);
  arch.drop_path_rate = absl::GetFlag(FLAGS_drop_path);
  absl::StatusOr<compress::pipeline::SwinConfig> config = compress::bench::MakeArch(arch);
  if (!config.ok()) {
    std::cerr << config.status() << "\n";
    return 2;
  }

  compress::pipeline::DatasetOptions data;
  data.format = compress::pipeline::DatasetFormat::kFashionMnist;
  data.path = absl::GetFlag(FLAGS_data);
  data.cache_dir = absl::GetFlag(FLAGS_cache_dir);
  data.limit_train = absl::GetFlag(FLAGS_limit_train);
  absl::StatusOr<compress::pipeline::DatasetSplits> splits = compress::pipeline::LoadDataset(data);
  if (!splits.ok()) {
    std::cerr << splits.status() << "\n";
    return 1;
  }

  torch::manual_seed(absl::GetFlag(FLAGS_seed));
  absl::StatusOr<compress::pipeline::SwinTransformer> model =
      compress::pipeline::CreateSwinTransformer(*config);
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 2;
  }

  compress::pipeline::TeacherOptions options;
  options.trainer.epochs = absl::GetFlag(FLAGS_epochs);
  options.trainer.max_steps = absl::GetFlag(FLAGS_max_steps);
  options.trainer.lr = absl::GetFlag(FLAGS_lr);
  options.trainer.min_lr = absl::GetFlag(FLAGS_min_lr);
  options.trainer.warmup_epochs = absl::GetFlag(FLAGS_warmup_epochs);
  options.trainer.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  options.trainer.label_smoothing = absl::GetFlag(FLAGS_label_smoothing);
  options.trainer.clip_grad_norm = absl::GetFlag(FLAGS_clip);
  options.trainer.num_threads = absl::GetFlag(FLAGS_threads);
  options.trainer.log_every_steps = absl::GetFlag(FLAGS_log_every);
  options.trainer.seed = static_cast<int64_t>(absl::GetFlag(FLAGS_seed));
  options.trainer.checkpoint_at_end = false;
  options.loader.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.loader.seed = absl::GetFlag(FLAGS_seed);
  options.loader.random_resized_crop = absl::GetFlag(FLAGS_crop);
  options.loader.horizontal_flip = absl::GetFlag(FLAGS_flip);
  options.loader.mean = {0.286};  // Fashion-MNIST training-set pixel statistics
  options.loader.std = {0.353};
  options.loader.num_workers = absl::GetFlag(FLAGS_loader_workers);

  const double budget = absl::GetFlag(FLAGS_budget_seconds);
  if (budget > 0.0) {
    // 10% margin for data loading and load changes during the run.
    const double probe = ProbeImagesPerSecond(*config, options.loader.batch_size, 10);
    options.trainer.max_steps = std::max<int64_t>(
        1, static_cast<int64_t>(0.9 * budget * probe / options.loader.batch_size));
    options.trainer.epochs = 0;
    std::cerr << nlohmann::json(
                     {{"probe_images_per_s", probe}, {"max_steps", options.trainer.max_steps}})
                     .dump()
              << std::endl;
  }
  compress::pipeline::TrainerCallbacks callbacks;
  callbacks.on_metric = [](const MetricPoint& p) {
    nlohmann::json line = {{"kind", p.kind == MetricPoint::Kind::kTrain ? "train" : "eval"},
                           {"step", p.step},
                           {"epoch", p.epoch},
                           {"loss", p.loss}};
    if (p.kind == MetricPoint::Kind::kTrain) {
      line["lr"] = p.lr;
      line["grad_norm"] = p.grad_norm;
      line["images_per_s"] = p.images_per_second;
    } else {
      line["top1"] = p.eval->top1;
      line["top5"] = p.eval->top5;
    }
    std::cerr << line.dump() << std::endl;
  };
  absl::StatusOr<compress::pipeline::TrainResult> result =
      compress::pipeline::TrainClassifier(*model, *splits, options, callbacks);
  if (!result.ok()) {
    std::cerr << result.status() << "\n";
    return 1;
  }
  absl::StatusOr<compress::pipeline::SwinCost> cost = compress::pipeline::AnalyzeSwinCost(*config);
  nlohmann::json summary = {{"config", config->ToJson()},
                            {"params", cost.ok() ? cost->params : 0},
                            {"macs", cost.ok() ? cost->total.macs : 0},
                            {"steps", result->steps},
                            {"epochs", result->epochs},
                            {"batch_size", options.loader.batch_size},
                            {"train_seconds", result->train_seconds},
                            {"wall_seconds", result->wall_seconds},
                            {"images_per_s", result->images_per_second},
                            {"top1", result->final_eval ? result->final_eval->top1 : 0.0},
                            {"top5", result->final_eval ? result->final_eval->top5 : 0.0},
                            {"val_loss", result->final_eval ? result->final_eval->loss : 0.0}};
  std::cout << summary.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return Run();
}
