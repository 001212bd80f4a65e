// The Swin model on CUDA gives the CPU's logits and gradients. Labelled `gpu`; skips without
// CUDA.
#include <gtest/gtest.h>

#include "worker/pipeline/model/cost.h"
#include "worker/pipeline/model/swin.h"

namespace compress::pipeline {
namespace {

TEST(SwinCudaTest, MatchesTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(0);
  SwinConfig config = *SwinPreset("swin_micro");
  config.stages[1].blocks[1] = {3, 20, 100};  // uneven widths too
  SwinTransformer cpu = *CreateSwinTransformer(config);
  SwinTransformer gpu = *CreateSwinTransformer(config);
  {
    torch::NoGradGuard no_grad;
    auto from = cpu->parameters();
    auto to = gpu->parameters();
    for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i]);
  }
  const torch::Device device(torch::kCUDA);
  gpu->to(device);
  cpu->eval();
  gpu->eval();
  const torch::Tensor images = torch::randn({4, 1, 28, 28});
  const torch::Tensor labels = torch::tensor({1, 2, 3, 4});
  const torch::Tensor cpu_logits = cpu->forward(images);
  const torch::Tensor gpu_logits = gpu->forward(images.to(device));
  EXPECT_LT((gpu_logits.cpu() - cpu_logits).abs().max().item<double>(), 1e-3);
  torch::nn::functional::cross_entropy(cpu_logits, labels).backward();
  torch::nn::functional::cross_entropy(gpu_logits, labels.to(device)).backward();
  EXPECT_TRUE(torch::allclose(gpu->head->fc->weight.grad().cpu(), cpu->head->fc->weight.grad(),
                              1e-3, 1e-3));
  // The counted cost does not depend on the device.
  MacCounter counter;
  torch::NoGradGuard no_grad;
  gpu->forward(images.to(device));
  EXPECT_EQ(counter.count().macs, 4 * AnalyzeSwinCost(config)->total.macs);
}

}  // namespace
}  // namespace compress::pipeline
