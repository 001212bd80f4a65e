#include "worker/pipeline/distill/distill_stage.h"

#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/pipeline/model/torch_error.h"
#include "worker/pipeline/train/trainer.h"

namespace compress::pipeline {

DistillStudent MakeDistillStudent(SwinTransformer student) {
  DistillStudent out;
  out.module = student.get();
  out.config = student->config();
  out.forward = PlainStudentForward(student);
  out.logits = [student](const torch::Tensor& x) mutable { return student->forward(x); };
  return out;
}

DistillStudent MakeDistillStudent(SharedSwin student) {
  DistillStudent out;
  out.module = student.get();
  out.config = student->config().base;
  out.forward = SharedStudentForward(student);
  out.logits = [student](const torch::Tensor& x) mutable { return student->forward(x); };
  return out;
}

absl::StatusOr<WeightDistillOptions> ResolveDistillLoss(const DistillStageOptions& options,
                                                        const SwinConfig& student,
                                                        const SwinConfig& teacher) {
  if (!(options.alpha >= 0.0 && options.alpha <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("distill.alpha is ", options.alpha, " but must be in [0, 1]"));
  }
  if (!(options.label_smoothing >= 0.0 && options.label_smoothing < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "distill.label_smoothing is ", options.label_smoothing, " but must be in [0, 1)"));
  }
  if (options.relation_heads < -1) {
    return absl::InvalidArgumentError("distill.relation_heads must be >= -1");
  }
  WeightDistillOptions loss;
  loss.ce_weight = options.alpha;
  loss.logit_weight = 1.0 - options.alpha;
  loss.logit_kl = true;
  loss.temperature = options.temperature;
  loss.label_smoothing = options.label_smoothing;
  loss.attention_weight = options.attention_weight;
  loss.hidden_weight = options.hidden_weight;
  loss.relation_on_all_blocks = false;
  loss.relation_heads = options.relation_heads;
  if (loss.relation_heads == -1) {
    loss.relation_heads = 0;
    if (student.depths() == teacher.depths()) {
      for (const auto& [s, b] : RelationBlocks(student, false)) {
        if (student.stages[s].blocks[b].num_heads != teacher.stages[s].blocks[b].num_heads) {
          loss.relation_heads = 1;
        }
      }
    }
  }
  if (absl::Status status = ValidateWeightDistillOptions(loss, student, teacher, "distill");
      !status.ok()) {
    return status;
  }
  return loss;
}

bool CanCacheTeacherLogits(const DistillStageOptions& options) {
  return options.attention_weight <= 0.0 && options.hidden_weight <= 0.0;
}

absl::StatusOr<torch::Tensor> ComputeTeacherLogits(SwinTransformer teacher, BatchSource& source,
                                                   int64_t num_examples, torch::Device device) {
  if (num_examples <= 0) {
    return absl::InvalidArgumentError("teacher logits: the split has no examples");
  }
  try {
    torch::NoGradGuard no_grad;
    teacher->to(device);
    teacher->eval();
    if (absl::Status status = source.StartEpoch(0, 0); !status.ok()) return status;
    torch::Tensor table = torch::zeros({num_examples, teacher->config().num_classes});
    torch::Tensor seen = torch::zeros({num_examples}, torch::kBool);
    while (true) {
      absl::StatusOr<std::optional<TrainBatch>> batch = source.Next();
      if (!batch.ok()) return batch.status();
      if (!batch->has_value()) break;
      const torch::Tensor& ids = (*batch)->sample_ids;
      if (!ids.defined()) {
        return absl::InvalidArgumentError(
            "teacher logits: the batches carry no sample ids to key the logits by");
      }
      const torch::Tensor cpu_ids = ids.to(torch::kCPU, torch::kInt64);
      if (cpu_ids.numel() > 0 &&
          (cpu_ids.min().item<int64_t>() < 0 || cpu_ids.max().item<int64_t>() >= num_examples)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "teacher logits: a sample id lies outside the split's ", num_examples, " examples"));
      }
      torch::Tensor logits = teacher->forward((*batch)->inputs.to(device)).to(torch::kFloat);
      table.index_copy_(0, cpu_ids, logits.to(torch::kCPU));
      seen.index_fill_(0, cpu_ids, true);
    }
    const int64_t missing = num_examples - seen.sum().item<int64_t>();
    if (missing > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("teacher logits: one pass over the split left ", missing, " of ",
                       num_examples, " examples without logits"));
    }
    return table;
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, "computing the teacher's logits");
  }
}

absl::StatusOr<TrainResult> RunDistillStage(const DistillStudent& student, SwinTransformer teacher,
                                            BatchSource& train, BatchSource* validation,
                                            const torch::Tensor& teacher_logits,
                                            const DistillStageOptions& options,
                                            const TrainerCallbacks& callbacks) {
  if (student.module == nullptr || !student.forward || !student.logits) {
    return absl::InvalidArgumentError("distill: the student is incomplete");
  }
  absl::StatusOr<WeightDistillOptions> loss =
      ResolveDistillLoss(options, student.config, teacher->config());
  if (!loss.ok()) return loss.status();
  TeacherLogitsFn cached;
  if (teacher_logits.defined()) {
    if (!CanCacheTeacherLogits(options)) {
      return absl::InvalidArgumentError(
          "distill: precomputed teacher logits cannot serve the relation losses");
    }
    if (teacher_logits.dim() != 2 || teacher_logits.size(1) != student.config.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "distill: the teacher logits table is not [examples, ", student.config.num_classes, "]"));
    }
    const torch::Device device = options.trainer.device;
    cached = [table = teacher_logits, device](const TrainBatch& batch) {
      TORCH_CHECK(batch.sample_ids.defined(),
                  "distill: a training batch carries no sample ids to look its logits up by");
      return table.index_select(0, batch.sample_ids.to(torch::kCPU, torch::kInt64)).to(device);
    };
  }
  try {
    teacher->to(options.trainer.device);
    teacher->eval();
    student.module->train();
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, "moving the teacher to the device");
  }
  absl::StatusOr<std::unique_ptr<Trainer>> trainer = Trainer::Create(
      *student.module,
      StudentDistillationLoss(student.forward, student.config, teacher, *loss, std::move(cached)),
      student.logits, options.trainer);
  if (!trainer.ok()) return trainer.status();
  absl::StatusOr<TrainResult> trained = (*trainer)->Train(train, validation, callbacks);
  student.module->eval();
  return trained;
}

}  // namespace compress::pipeline
