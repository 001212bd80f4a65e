// Weight distillation of a shared Swin from the model it was made from (MiniViT, Zhang et al.,
// CVPR 2022, section 3.3): the student (SharedSwin) learns from the teacher (SwinTransformer)
//   - soft cross-entropy on the logits with a temperature T, scaled by T^2 (Hinton et al., 2015);
//   - the self-attention relation loss: for X in {Q, K, V} of a matched block, per window and
//     head, R(X) = softmax_rows(X X^T / sqrt(d)), and KL(R_teacher || R_student) averaged over
//     rows, heads and windows; the three averaged (MiniLM-v2's multi-head relations, as MiniViT);
//   - the hidden-state relation loss: per stage output H [B, tokens, C] normalised per token,
//     G = H H^T, the mean squared error between the students' and the teacher's G;
//   - optionally the hard-label cross-entropy.
// Student and teacher widths (heads, head dims, channels) may differ: relations compare tokens
// with tokens, so only the token counts must match. When head counts differ, the relation heads
// are formed by splitting each side's concatenated heads into `relation_heads` equal parts.
// The teacher's q/k/v and hidden states come from running its public submodules block by block
// (TraceTeacher), recomputing q/k/v from each matched block's norm1 and attn.qkv.
#ifndef COMPRESS_WORKER_PIPELINE_SHARE_DISTILL_LOSSES_H_
#define COMPRESS_WORKER_PIPELINE_SHARE_DISTILL_LOSSES_H_

#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/share/shared_swin.h"
#include "worker/pipeline/train/training_types.h"

namespace compress::pipeline {

// Weights and settings of the weight-distillation loss; a weight of 0 skips its term.
struct WeightDistillOptions {
  // Hard-label cross-entropy against the batch targets.
  double ce_weight = 0.0;
  // Soft cross-entropy against the teacher's logits.
  double logit_weight = 1.0;
  // Temperature of the soft cross-entropy (> 0).
  double temperature = 1.0;
  // Self-attention relation loss (Q, K, V relations of the matched blocks).
  double attention_weight = 1.0;
  // Hidden-state relation loss (every stage output).
  double hidden_weight = 0.1;
  // Match every block for the attention relations; otherwise the last block of each stage
  // (MiniViT matches the last layer).
  bool relation_on_all_blocks = false;
  // Relation heads: 0 uses each block's own heads (the head counts must then match); otherwise
  // both sides' concatenated heads are split into this many parts.
  int relation_heads = 0;  // Label smoothing of the hard-label cross-entropy.
  double label_smoothing = 0.0;
  // The logit term as T^2 * KL(teacher || student) ("kd_kl") instead of the soft cross-entropy
  // ("soft_ce"): the two differ by the teacher's entropy, so their gradients are the same.
  bool logit_kl = false;
};

// INVALID_ARGUMENT naming the option: negative weights, non-positive temperature, no positive
// weight, or relation heads that do not fit the matched blocks of `student` and `teacher`.
// `field` prefixes the option names in messages (the spec section the options come from).
absl::Status ValidateWeightDistillOptions(const WeightDistillOptions& options,
                                          const SwinConfig& student, const SwinConfig& teacher,
                                          const std::string& field = "share.distill");

// The (stage, block) pairs the attention relation loss compares.
std::vector<std::pair<int, int>> RelationBlocks(const SwinConfig& config, bool all_blocks);

// T^2 * mean over the batch of -sum_c softmax(teacher/T)_c * log_softmax(student/T)_c.
torch::Tensor SoftCrossEntropy(const torch::Tensor& student_logits,
                               const torch::Tensor& teacher_logits, double temperature);

// T^2 * mean over the batch of KL(softmax(teacher/T) || softmax(student/T)).
torch::Tensor KdKlDivergence(const torch::Tensor& student_logits,
                             const torch::Tensor& teacher_logits, double temperature);

// KL(R_teacher || R_student) of one of Q, K or V, both [windows, heads, N, d] (head counts and
// dims may differ when relation_heads > 0 divides both widths), averaged over windows, relation
// heads and rows.
torch::Tensor RelationKl(const torch::Tensor& student, const torch::Tensor& teacher,
                         int relation_heads);

// The mean of RelationKl over Q, K and V.
torch::Tensor AttentionRelationLoss(const QkvTensors& student, const QkvTensors& teacher,
                                    int relation_heads);

// MSE between the token-normalised Gram matrices of [B, H, W, C] hidden states (C may differ).
torch::Tensor HiddenRelationLoss(const torch::Tensor& student, const torch::Tensor& teacher);

// The teacher's logits, stage outputs and the q/k/v of `qkv_blocks` (request order), computed
// through its submodules exactly as its forward computes them.
struct TeacherTrace {
  torch::Tensor logits;
  std::vector<torch::Tensor> stage_hidden;
  std::vector<QkvTensors> qkv;
};
TeacherTrace TraceTeacher(SwinTransformer& teacher, const torch::Tensor& images,
                          const std::vector<std::pair<int, int>>& qkv_blocks);

// A student's forward pass with what the relation losses need (logits always; stage outputs and
// q/k/v when requested). Plain and shared students both give it.
using StudentForwardFn =
    std::function<SharedSwinOutput(const torch::Tensor& images, const SharedForwardRequest&)>;
StudentForwardFn PlainStudentForward(SwinTransformer student);
StudentForwardFn SharedStudentForward(SharedSwin student);

// Precomputed teacher logits of a batch (keyed by its sample_ids), used instead of running the
// teacher when no relation loss needs it.
using TeacherLogitsFn = std::function<torch::Tensor(const TrainBatch& batch)>;

// Distillation of any student of architecture `student_config` from `teacher`: the weighted sum
// of the terms "ce", "soft_ce" or "kd_kl", "attn_rel", "hidden_rel" (those with a positive
// weight). With `cached_logits` and no relation term the teacher is not run. The teacher should
// be in eval mode. Options must have been validated.
LossFn StudentDistillationLoss(StudentForwardFn student, const SwinConfig& student_config,
                               SwinTransformer teacher, const WeightDistillOptions& options,
                               TeacherLogitsFn cached_logits = {});

// The training loss of the share stage: runs the teacher (no gradients) and the student on the
// batch and returns the weighted sum with terms "ce", "soft_ce", "attn_rel", "hidden_rel" (those
// with a positive weight). The teacher should be in eval mode. Options must have been validated.
LossFn WeightDistillationLoss(SharedSwin student, SwinTransformer teacher,
                              const WeightDistillOptions& options);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_SHARE_DISTILL_LOSSES_H_
