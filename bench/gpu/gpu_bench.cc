// gpu_bench: our side of bench/gpu/run.sh (and of reference.py on any machine).
//
//   gpu_bench --mode=parity --weights=W.safetensors --input=X.safetensors --output=Y.safetensors
//             [--naming=auto] [--bf16]
//     Builds the swin_t preset, loads W (timm, torchvision or Microsoft names), runs the
//     `input` tensor of X through it in eval mode (fp32, or under bf16 autocast on CUDA) and
//     writes the logits as `logits` (fp32) to Y.
//
//   gpu_bench --mode=distill [--batch=128] [--steps=20] [--warmup=5] [--student_mlp_ratio=1.875]
//     Times a distillation step at 224x224 on random images: teacher (swin_t) forward without
//     gradients, student (swin_t with MLP ratio 1.875: 32.8% fewer MACs) forward, soft cross-entropy
//     against the teacher (T 4) plus cross-entropy, backward, gradient clipping and AdamW, all
//     under bf16 autocast on CUDA. Prints one JSON line: images/s, MACs of both models, peak
//     device memory.
//
// --device picks the device (default: cuda when available, else cpu).
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/pipeline/checkpoint/model_io.h"
#include "worker/pipeline/checkpoint/safetensors.h"
#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/model/swin_config.h"
#include "worker/pipeline/train/autocast.h"
#include "worker/pipeline/train/optimization.h"

#ifdef COMPRESS_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

ABSL_FLAG(std::string, mode, "distill", "parity or distill");
ABSL_FLAG(std::string, device, "", "cpu or cuda (default: cuda when available)");
ABSL_FLAG(std::string, weights, "", "parity: the model's safetensors");
ABSL_FLAG(std::string, naming, "auto", "parity: auto, native (timm), torchvision, microsoft");
ABSL_FLAG(std::string, input, "", "parity: safetensors with a tensor named `input`");
ABSL_FLAG(std::string, output, "", "parity: where the logits go");
ABSL_FLAG(bool, bf16, false, "parity: run under bf16 autocast (CUDA)");
ABSL_FLAG(int, batch, 128, "distill: images per step");
ABSL_FLAG(int, steps, 20, "distill: timed steps");
ABSL_FLAG(int, warmup, 5, "distill: untimed steps first");
ABSL_FLAG(double, student_mlp_ratio, 1.875,
          "distill: the student's MLP ratio (teacher: 4; 1.875 removes 32.8% of the MACs)");
ABSL_FLAG(int, threads, 0, "CPU threads (0: LibTorch's default)");

namespace {

namespace pipeline = compress::pipeline;
using Clock = std::chrono::steady_clock;

absl::StatusOr<pipeline::Naming> ParseNaming(const std::string& name) {
  if (name == "auto") return pipeline::Naming::kAuto;
  if (name == "native" || name == "timm") return pipeline::Naming::kNative;
  if (name == "torchvision") return pipeline::Naming::kTorchvision;
  if (name == "microsoft") return pipeline::Naming::kMicrosoft;
  return absl::InvalidArgumentError(
      absl::StrCat("--naming: '", name, "' is not auto, native, torchvision or microsoft"));
}

void Synchronize(const torch::Device& device) {
#ifdef COMPRESS_TORCH_CUDA
  if (device.is_cuda()) torch::cuda::synchronize();
#else
  (void)device;
#endif
}

int64_t PeakDeviceBytes(const torch::Device& device) {
#ifdef COMPRESS_TORCH_CUDA
  if (device.is_cuda()) {
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index())
        .allocated_bytes[0]
        .peak;
  }
#else
  (void)device;
#endif
  return 0;
}

absl::Status Parity(const torch::Device& device) {
  absl::StatusOr<pipeline::Naming> naming = ParseNaming(absl::GetFlag(FLAGS_naming));
  if (!naming.ok()) return naming.status();
  absl::StatusOr<pipeline::SwinConfig> config = pipeline::SwinPreset("swin_t");
  if (!config.ok()) return config.status();
  config->drop_path_rate = 0.0;
  absl::StatusOr<pipeline::SwinTransformer> model = pipeline::CreateSwinTransformer(*config);
  if (!model.ok()) return model.status();
  if (absl::Status status = pipeline::LoadWeights(*model, absl::GetFlag(FLAGS_weights), *naming);
      !status.ok()) {
    return status;
  }
  absl::StatusOr<pipeline::SafetensorsContents> input =
      pipeline::ReadSafetensors(absl::GetFlag(FLAGS_input));
  if (!input.ok()) return input.status();
  torch::Tensor images;
  for (const auto& [name, tensor] : input->tensors) {
    if (name == "input") images = tensor;
  }
  if (!images.defined()) {
    return absl::InvalidArgumentError(
        absl::StrCat(absl::GetFlag(FLAGS_input), ": no tensor named 'input'"));
  }
  (*model)->to(device);
  (*model)->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor logits;
  {
    pipeline::CudaAutocastScope autocast(absl::GetFlag(FLAGS_bf16) && device.is_cuda());
    logits = (*model)->forward(images.to(device, torch::kFloat));
  }
  return pipeline::WriteSafetensors(absl::GetFlag(FLAGS_output),
                                    {{"logits", logits.to(torch::kFloat).cpu().contiguous()}});
}

absl::Status Distill(const torch::Device& device) {
  absl::StatusOr<pipeline::SwinConfig> teacher_config = pipeline::SwinPreset("swin_t");
  if (!teacher_config.ok()) return teacher_config.status();
  teacher_config->drop_path_rate = 0.0;
  pipeline::UniformSwinOptions student_options;
  student_options.mlp_ratio = absl::GetFlag(FLAGS_student_mlp_ratio);
  student_options.drop_path_rate = 0.0;
  absl::StatusOr<pipeline::SwinConfig> student_config =
      pipeline::MakeUniformSwinConfig(student_options);
  if (!student_config.ok()) return student_config.status();
  absl::StatusOr<pipeline::SwinTransformer> teacher =
      pipeline::CreateSwinTransformer(*teacher_config);
  if (!teacher.ok()) return teacher.status();
  absl::StatusOr<pipeline::SwinTransformer> student =
      pipeline::CreateSwinTransformer(*student_config);
  if (!student.ok()) return student.status();
  (*teacher)->to(device);
  (*teacher)->eval();
  (*student)->to(device);
  (*student)->train();
  pipeline::TrainerOptions options;
  options.lr = 1e-4;
  auto optimizer = pipeline::MakeAdamW(**student, options);
  if (!optimizer.ok()) return optimizer.status();
  std::vector<torch::Tensor> params = (*student)->parameters();

  const int batch = absl::GetFlag(FLAGS_batch);
  torch::manual_seed(0);
  const torch::Tensor images = torch::randn({batch, 3, 224, 224}).to(device);
  const torch::Tensor labels = torch::randint(0, 1000, {batch}, torch::kLong).to(device);
  const double temperature = 4.0;
  const bool autocast = device.is_cuda();
  auto step = [&] {
    for (torch::Tensor& p : params) p.mutable_grad().reset();
    torch::Tensor loss;
    {
      pipeline::CudaAutocastScope scope(autocast);
      torch::Tensor teacher_logits;
      {
        torch::NoGradGuard no_grad;
        teacher_logits = (*teacher)->forward(images);
      }
      const torch::Tensor logits = (*student)->forward(images).to(torch::kFloat);
      const torch::Tensor soft_targets =
          torch::softmax(teacher_logits.to(torch::kFloat) / temperature, -1);
      const torch::Tensor soft =
          -(soft_targets * torch::log_softmax(logits / temperature, -1)).sum(-1).mean() *
          (temperature * temperature);
      loss = 0.5 * torch::nn::functional::cross_entropy(logits, labels) + 0.5 * soft;
    }
    loss.backward();
    pipeline::ClipGradientNormOnDevice(params, 1.0);
    (*optimizer)->step();
  };
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) step();
  Synchronize(device);
  const int steps = absl::GetFlag(FLAGS_steps);
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < steps; ++i) step();
  Synchronize(device);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  absl::StatusOr<pipeline::SwinCost> teacher_cost = pipeline::AnalyzeSwinCost(*teacher_config);
  absl::StatusOr<pipeline::SwinCost> student_cost = pipeline::AnalyzeSwinCost(*student_config);
  if (!teacher_cost.ok()) return teacher_cost.status();
  if (!student_cost.ok()) return student_cost.status();
  nlohmann::json result = {
      {"images_per_second", batch * steps / seconds},
      {"batch", batch},
      {"steps", steps},
      {"device", device.str()},
      {"teacher_macs", teacher_cost->total.macs},
      {"student_macs", student_cost->total.macs},
      {"peak_device_bytes", PeakDeviceBytes(device)},
  };
  std::cout << result.dump() << std::endl;
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_threads) > 0) torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  std::string device_name = absl::GetFlag(FLAGS_device);
  if (device_name.empty()) device_name = torch::cuda::is_available() ? "cuda" : "cpu";
  const torch::Device device(device_name);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  // TF32 for the timing, as the trainer has it; parity stays in full fp32, like the reference.
  if (device.is_cuda() && mode == "distill") {
    at::globalContext().setAllowTF32CuBLAS(true);
    at::globalContext().setAllowTF32CuDNN(true);
  }
  absl::Status status = mode == "parity"    ? Parity(device)
                        : mode == "distill" ? Distill(device)
                                            : absl::InvalidArgumentError(absl::StrCat(
                                                  "--mode: '", mode, "' is not parity or distill"));
  if (!status.ok()) {
    std::cerr << "gpu_bench: " << status << "\n";
    return 1;
  }
  return 0;
}
