// Training and inference throughput of our Swin in LibTorch on random 28x28 batches: each
// repetition times `steps` training steps (forward, cross-entropy, backward, AdamW step) and
// `steps` inference forwards under NoGradGuard, after warm-up. Prints one JSON object per
// repetition on stdout. Driven by run_throughput.py, which runs PyTorch eager alongside.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/train/swin_arch_flags.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/train/optimization.h"

ABSL_FLAG(int, patch_size, 0, "patch size (0: swin_micro's)");
ABSL_FLAG(int, window_size, 0, "window size (0: swin_micro's)");
ABSL_FLAG(int, embed_dim, 0, "stage-0 width (0: swin_micro's)");
ABSL_FLAG(std::string, depths, "", "blocks per stage, e.g. 2,2 (empty: swin_micro's)");
ABSL_FLAG(std::string, num_heads, "", "heads per stage, e.g. 2,4 (empty: swin_micro's)");
ABSL_FLAG(int, batch_size, 128, "images per step");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(int, steps, 10, "timed steps per repetition");
ABSL_FLAG(int, warmup, 3, "untimed steps before the first repetition");
ABSL_FLAG(int, repetitions, 1, "repetitions");

namespace {

using Clock = std::chrono::steady_clock;

int Run() {
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  compress::bench::ArchOverrides arch;
  arch.patch_size = absl::GetFlag(FLAGS_patch_size);
  arch.window_size = absl::GetFlag(FLAGS_window_size);
  arch.embed_dim = absl::GetFlag(FLAGS_embed_dim);
  arch.depths = absl::GetFlag(FLAGS_depths);
  arch.num_heads = absl::GetFlag(FLAGS_num_heads);
  arch.drop_path_rate = 0.0;  // the PyTorch side has stochastic depth off as well
  absl::StatusOr<compress::pipeline::SwinConfig> config = compress::bench::MakeArch(arch);
  if (!config.ok()) {
    std::cerr << config.status() << "\n";
    return 2;
  }
  absl::StatusOr<compress::pipeline::SwinTransformer> model =
      compress::pipeline::CreateSwinTransformer(*config);
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 2;
  }
  compress::pipeline::TrainerOptions options;
  options.lr = 1e-3;
  auto optimizer = compress::pipeline::MakeAdamW(**model, options);
  if (!optimizer.ok()) {
    std::cerr << optimizer.status() << "\n";
    return 2;
  }
  const int batch = absl::GetFlag(FLAGS_batch_size);
  torch::manual_seed(0);
  const torch::Tensor images = torch::randn({batch, 1, 28, 28});
  const torch::Tensor labels = torch::randint(0, 10, {batch}, torch::kLong);
  std::vector<torch::Tensor> params = (*model)->parameters();

  auto train_step = [&] {
    for (torch::Tensor& p : params) p.mutable_grad().reset();
    torch::Tensor loss = torch::nn::functional::cross_entropy((*model)->forward(images), labels);
    loss.backward();
    compress::pipeline::ClipGradientNorm(params, 1.0);
    (*optimizer)->step();
  };
  auto infer_step = [&] {
    torch::NoGradGuard no_grad;
    (void)(*model)->forward(images).sum().item<float>();
  };
  (*model)->train();
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) train_step();
  (*model)->eval();
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) infer_step();

  const int steps = absl::GetFlag(FLAGS_steps);
  for (int r = 0; r < absl::GetFlag(FLAGS_repetitions); ++r) {
    (*model)->train();
    Clock::time_point start = Clock::now();
    for (int i = 0; i < steps; ++i) train_step();
    const double train_s = std::chrono::duration<double>(Clock::now() - start).count();
    (*model)->eval();
    start = Clock::now();
    for (int i = 0; i < steps; ++i) infer_step();
    const double infer_s = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf(
        "{\"impl\": \"libtorch\", \"train_images_per_s\": %.2f, "
        "\"infer_images_per_s\": %.2f}\n",
        batch * steps / train_s, batch * steps / infer_s);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return Run();
}
