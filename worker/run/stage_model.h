// StageModel: the model a phase of the job hands to the next, plain (SwinTransformer) or
// weight-shared (SharedSwin), with what the executor needs of either: its module, logits, cost,
// and checkpoint directory (model.safetensors + config.json, whose "sharing" section tells the
// kinds apart).
#ifndef COMPRESS_WORKER_RUN_STAGE_MODEL_H_
#define COMPRESS_WORKER_RUN_STAGE_MODEL_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/pipeline/distill/distill_stage.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/share/shared_swin.h"

namespace compress::run {

class StageModel {
 public:
  explicit StageModel(pipeline::SwinTransformer plain) : plain_(std::move(plain)) {}
  explicit StageModel(pipeline::SharedSwin shared) : shared_(std::move(shared)) {}

  // Loads a checkpoint directory of either kind onto the CPU.
  static absl::StatusOr<StageModel> Load(const std::string& dir);
  absl::Status Save(const std::string& dir) const;

  bool is_shared() const { return !shared_.is_empty(); }
  const pipeline::SwinTransformer& plain() const { return plain_; }
  const pipeline::SharedSwin& shared() const { return shared_; }
  torch::nn::Module& module() const;
  // The unshared architecture (the plain model's, or a shared model's base).
  const pipeline::SwinConfig& config() const;
  torch::Tensor forward(const torch::Tensor& images) const;
  pipeline::DistillStudent AsStudent() const;

  struct Cost {
    int64_t params = 0;
    int64_t macs = 0;
  };
  absl::StatusOr<Cost> AnalyzeCost() const;

 private:
  pipeline::SwinTransformer plain_{nullptr};
  pipeline::SharedSwin shared_{nullptr};
};

}  // namespace compress::run

#endif  // COMPRESS_WORKER_RUN_STAGE_MODEL_H_
