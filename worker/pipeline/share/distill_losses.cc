#include "worker/pipeline/share/distill_losses.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "worker/pipeline/model/counted_ops.h"

namespace compress::pipeline {
namespace {

// [windows, heads, N, d] -> [windows, parts, N, heads * d / parts].
torch::Tensor SplitHeads(const torch::Tensor& x, int parts) {
  const int64_t windows = x.size(0), heads = x.size(1), tokens = x.size(2), dim = x.size(3);
  if (parts <= 0 || parts == heads) return x;
  TORCH_CHECK((heads * dim) % parts == 0, "relation heads ", parts, " do not divide width ",
              heads * dim);
  return x.transpose(1, 2).reshape({windows, tokens, parts, heads * dim / parts}).transpose(1, 2);
}

// Row-wise log softmax(X X^T / sqrt(d)).
torch::Tensor LogRelation(const torch::Tensor& x) {
  const torch::Tensor f = x.to(torch::kFloat);
  return torch::log_softmax(
      torch::matmul(f, f.transpose(-2, -1)) / std::sqrt(static_cast<double>(f.size(-1))), -1);
}

}  // namespace

absl::Status ValidateWeightDistillOptions(const WeightDistillOptions& options,
                                          const SwinConfig& student, const SwinConfig& teacher,
                                          const std::string& field) {
  const std::pair<const char*, double> weights[] = {{"ce_weight", options.ce_weight},
                                                    {"logit_weight", options.logit_weight},
                                                    {"attention_weight", options.attention_weight},
                                                    {"hidden_weight", options.hidden_weight}};
  double total = 0.0;
  for (const auto& [name, value] : weights) {
    if (!(value >= 0.0) || !std::isfinite(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".", name, " is ", value, " but must be finite and >= 0"));
    }
    total += value;
  }
  if (total <= 0.0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": every loss weight is 0"));
  }
  if (!(options.temperature > 0.0) || !std::isfinite(options.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".temperature is ", options.temperature, " but must be > 0"));
  }
  if (options.relation_heads < 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".relation_heads must be >= 0"));
  }
  if (student.depths() != teacher.depths() || student.image_size != teacher.image_size ||
      student.patch_size != teacher.patch_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(field,
                     ": student and teacher differ in depths, image size or patch size, so "
                     "their blocks and tokens cannot be matched"));
  }
  if (student.num_classes != teacher.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": student has ", student.num_classes,
                                                   " classes but the teacher has ",
                                                   teacher.num_classes));
  }
  if (options.attention_weight <= 0.0) return absl::OkStatus();
  for (const auto& [s, b] : RelationBlocks(student, options.relation_on_all_blocks)) {
    if (student.stage_window(s) != teacher.stage_window(s)) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": stage ", s, " windows differ (", student.stage_window(s), " vs ",
          teacher.stage_window(s), "), so the attention relations have different token counts"));
    }
    const BlockWidths& sw = student.stages[s].blocks[b];
    const BlockWidths& tw = teacher.stages[s].blocks[b];
    const int parts = options.relation_heads;
    if (parts == 0 && sw.num_heads != tw.num_heads) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".relation_heads: block ", b, " of stage ", s, " has ", sw.num_heads,
          " heads in the student but ", tw.num_heads, " in the teacher; set relation_heads"));
    }
    if (parts > 0 && (sw.attn_dim() % parts != 0 || tw.attn_dim() % parts != 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".relation_heads: ", parts, " does not divide the attention widths (",
                       sw.attn_dim(), ", ", tw.attn_dim(), ") of block ", b, " of stage ", s));
    }
  }
  return absl::OkStatus();
}

std::vector<std::pair<int, int>> RelationBlocks(const SwinConfig& config, bool all_blocks) {
  std::vector<std::pair<int, int>> blocks;
  for (int s = 0; s < static_cast<int>(config.stages.size()); ++s) {
    const int depth = static_cast<int>(config.stages[s].blocks.size());
    for (int b = all_blocks ? 0 : depth - 1; b < depth; ++b) blocks.emplace_back(s, b);
  }
  return blocks;
}

torch::Tensor SoftCrossEntropy(const torch::Tensor& student_logits,
                               const torch::Tensor& teacher_logits, double temperature) {
  const torch::Tensor p_teacher =
      torch::softmax(teacher_logits.to(torch::kFloat) / temperature, -1);
  const torch::Tensor log_p_student =
      torch::log_softmax(student_logits.to(torch::kFloat) / temperature, -1);
  return -(p_teacher * log_p_student).sum(-1).mean() * (temperature * temperature);
}

torch::Tensor KdKlDivergence(const torch::Tensor& student_logits,
                             const torch::Tensor& teacher_logits, double temperature) {
  const torch::Tensor log_p_teacher =
      torch::log_softmax(teacher_logits.to(torch::kFloat) / temperature, -1);
  const torch::Tensor log_p_student =
      torch::log_softmax(student_logits.to(torch::kFloat) / temperature, -1);
  return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean() *
         (temperature * temperature);
}

torch::Tensor RelationKl(const torch::Tensor& student, const torch::Tensor& teacher,
                         int relation_heads) {
  TORCH_CHECK(student.size(0) == teacher.size(0) && student.size(2) == teacher.size(2),
              "relation loss: student windows x tokens ", student.size(0), "x", student.size(2),
              " differ from the teacher's ", teacher.size(0), "x", teacher.size(2));
  const torch::Tensor log_s = LogRelation(SplitHeads(student, relation_heads));
  const torch::Tensor log_t = LogRelation(SplitHeads(teacher, relation_heads));
  TORCH_CHECK(log_s.sizes() == log_t.sizes(), "relation loss: ", log_s.size(1),
              " student relation heads but ", log_t.size(1), " teacher ones");
  // Sum over the keys, mean over windows, heads and queries.
  return (log_t.exp() * (log_t - log_s)).sum(-1).mean();
}

torch::Tensor AttentionRelationLoss(const QkvTensors& student, const QkvTensors& teacher,
                                    int relation_heads) {
  return (RelationKl(student.q, teacher.q, relation_heads) +
          RelationKl(student.k, teacher.k, relation_heads) +
          RelationKl(student.v, teacher.v, relation_heads)) /
         3.0;
}

torch::Tensor HiddenRelationLoss(const torch::Tensor& student, const torch::Tensor& teacher) {
  auto gram = [](const torch::Tensor& h) {
    const torch::Tensor tokens = torch::nn::functional::normalize(
        h.to(torch::kFloat).flatten(1, 2),
        torch::nn::functional::NormalizeFuncOptions().dim(-1).eps(1e-12));
    return torch::matmul(tokens, tokens.transpose(-2, -1));
  };
  const torch::Tensor gs = gram(student), gt = gram(teacher);
  TORCH_CHECK(gs.sizes() == gt.sizes(), "hidden relation loss: student tokens ", gs.size(1),
              " differ from the teacher's ", gt.size(1));
  return torch::mse_loss(gs, gt);
}

TeacherTrace TraceTeacher(SwinTransformer& teacher, const torch::Tensor& images,
                          const std::vector<std::pair<int, int>>& qkv_blocks) {
  TeacherTrace trace;
  trace.qkv.resize(qkv_blocks.size());
  torch::Tensor x = teacher->patch_embed(images);
  for (int s = 0; s < teacher->num_stages(); ++s) {
    SwinStage stage = teacher->stage(s);
    if (stage->downsample) x = stage->downsample(x);
    for (int b = 0; b < static_cast<int>(stage->block_list.size()); ++b) {
      SwinBlock& block = stage->block_list[b];
      for (size_t i = 0; i < qkv_blocks.size(); ++i) {
        if (qkv_blocks[i] != std::make_pair(s, b)) continue;
        const int shift = block->geometry().shift;
        torch::Tensor h = block->norm1(x);
        if (shift > 0) h = torch::roll(h, {-shift, -shift}, {1, 2});
        trace.qkv[i] = ComputeQkv(PartitionWindows(h, block->geometry().window), block->attn->qkv,
                                  block->widths().num_heads, block->widths().head_dim);
      }
      x = block(x);
    }
    trace.stage_hidden.push_back(x);
  }
  x = ops::LayerNorm(x, teacher->norm);
  trace.logits = teacher->head(x.mean({1, 2}));
  return trace;
}

StudentForwardFn PlainStudentForward(SwinTransformer student) {
  return [student](const torch::Tensor& images, const SharedForwardRequest& request) mutable {
    SharedSwinOutput out;
    if (!request.stage_hidden && request.qkv_blocks.empty()) {
      out.logits = student->forward(images);
      return out;
    }
    TeacherTrace trace = TraceTeacher(student, images, request.qkv_blocks);
    out.logits = std::move(trace.logits);
    if (request.stage_hidden) out.stage_hidden = std::move(trace.stage_hidden);
    out.qkv = std::move(trace.qkv);
    return out;
  };
}

StudentForwardFn SharedStudentForward(SharedSwin student) {
  return [student](const torch::Tensor& images, const SharedForwardRequest& request) mutable {
    return student->Forward(images, request);
  };
}

LossFn StudentDistillationLoss(StudentForwardFn student, const SwinConfig& student_config,
                               SwinTransformer teacher, const WeightDistillOptions& options,
                               TeacherLogitsFn cached_logits) {
  const std::vector<std::pair<int, int>> blocks =
      options.attention_weight > 0.0
          ? RelationBlocks(student_config, options.relation_on_all_blocks)
          : std::vector<std::pair<int, int>>{};
  const bool needs_teacher = options.attention_weight > 0.0 || options.hidden_weight > 0.0 ||
                             (options.logit_weight > 0.0 && !cached_logits);
  return [student = std::move(student), teacher, options, blocks, needs_teacher,
          cached_logits = std::move(cached_logits)](const TrainBatch& batch) mutable {
    TeacherTrace target;
    if (needs_teacher) {
      torch::NoGradGuard no_grad;
      target = TraceTeacher(teacher, batch.inputs, blocks);
    } else if (options.logit_weight > 0.0) {
      target.logits = cached_logits(batch);
    }
    SharedForwardRequest request;
    request.stage_hidden = options.hidden_weight > 0.0;
    request.qkv_blocks = blocks;
    SharedSwinOutput out = student(batch.inputs, request);

    LossOutput result;
    torch::Tensor total = torch::zeros({}, out.logits.options().dtype(torch::kFloat));
    auto add = [&](const char* name, double weight, const torch::Tensor& term) {
      total = total + weight * term;
      result.terms.emplace_back(name, term.detach());
    };
    if (options.ce_weight > 0.0) {
      add("ce", options.ce_weight,
          torch::nn::functional::cross_entropy(
              out.logits.to(torch::kFloat), batch.targets,
              torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(
                  options.label_smoothing)));
    }
    if (options.logit_weight > 0.0) {
      if (options.logit_kl) {
        add("kd_kl", options.logit_weight,
            KdKlDivergence(out.logits, target.logits, options.temperature));
      } else {
        add("soft_ce", options.logit_weight,
            SoftCrossEntropy(out.logits, target.logits, options.temperature));
      }
    }
    if (options.attention_weight > 0.0) {
      torch::Tensor relation = torch::zeros({}, total.options());
      for (size_t i = 0; i < blocks.size(); ++i) {
        relation =
            relation + AttentionRelationLoss(out.qkv[i], target.qkv[i], options.relation_heads);
      }
      add("attn_rel", options.attention_weight, relation / static_cast<double>(blocks.size()));
    }
    if (options.hidden_weight > 0.0) {
      torch::Tensor relation = torch::zeros({}, total.options());
      for (size_t s = 0; s < out.stage_hidden.size(); ++s) {
        relation = relation + HiddenRelationLoss(out.stage_hidden[s], target.stage_hidden[s]);
      }
      add("hidden_rel", options.hidden_weight,
          relation / static_cast<double>(out.stage_hidden.size()));
    }
    result.loss = total;
    return result;
  };
}

LossFn WeightDistillationLoss(SharedSwin student, SwinTransformer teacher,
                              const WeightDistillOptions& options) {
  const SwinConfig config = student->config().base;
  return StudentDistillationLoss(SharedStudentForward(std::move(student)), config,
                                 std::move(teacher), options);
}

}  // namespace compress::pipeline
