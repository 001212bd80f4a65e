// Cost of a Swin Transformer: parameters and operations of one forward pass, computed two ways.
//
// 1. Analytically from a SwinConfig (AnalyzeSwinCost), in the Torch-Pruning / fvcore convention:
//    MACs (multiply-accumulates) of
//      - the patch embedding convolution: out_h * out_w * C * in_channels * patch^2;
//      - every Linear: tokens * in * out (biases not counted), i.e. attn.qkv, attn.proj,
//        mlp.fc1, mlp.fc2, the merging reductions and the head;
//      - attention: Q*K^T and A*V, each N^2 * head_dim per window and head (N = window^2).
//    Elementwise operations, kept apart from the MACs, one per output element of
//      - every LayerNorm (patch_embed.norm, norm1, norm2, downsample.norm, norm);
//      - GELU, the softmax, the query scaling (q * head_dim^-0.5);
//      - the relative position bias add and, in shifted blocks, the shift-mask add;
//      - the two residual adds of every block and the global average pool (one per input).
//    Not counted: biases of Linear/Conv, drop path, dropout, rolls, reshapes and copies.
//    Swin-T at 224 comes to 4.49 GMACs (torchvision lists 4.49 GFLOPS for swin_t).
//
// 2. By counting the operations actually run: the model routes its conv, linear, matmul and
//    counted elementwise calls through counted_ops.h, which add to the innermost MacCounter
//    active on the calling thread. The counts then come from runtime tensor shapes, for the
//    whole batch. Tests check that both ways agree.
//
// This header is free of LibTorch.
#ifndef COMPRESS_WORKER_PIPELINE_MODEL_COST_H_
#define COMPRESS_WORKER_PIPELINE_MODEL_COST_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipeline/model/swin_config.h"

namespace compress::pipeline {

// Operations of a forward pass (or of one part of it).
struct OpCount {
  int64_t macs = 0;         // Multiply-accumulates of conv, linear and attention matmuls.
  int64_t elementwise = 0;  // Elementwise operations as listed in the file comment.

  OpCount& operator+=(const OpCount& other) {
    macs += other.macs;
    elementwise += other.elementwise;
    return *this;
  }
  bool operator==(const OpCount& other) const {
    return macs == other.macs && elementwise == other.elementwise;
  }
};

// Analytic cost of one image through the model described by a config.
struct SwinCost {
  int64_t params = 0;  // Trainable parameters (buffers excluded).
  OpCount total;       // The whole forward pass of one image.
  OpCount patch_embed;
  // downsample[s]: the patch merging at the start of stage s (zero for stage 0).
  std::vector<OpCount> downsample;
  // blocks[s][b]: block b of stage s.
  std::vector<std::vector<OpCount>> blocks;
  OpCount head;  // Final norm, average pool and classifier.
};

// INVALID_ARGUMENT if the config does not validate.
absl::StatusOr<SwinCost> AnalyzeSwinCost(const SwinConfig& config);

// Trainable parameters of block b of stage s (norms, attention with its bias table, MLP).
int64_t BlockParams(const SwinConfig& config, int stage, int block);

// Counts the operations run on this thread while it is alive. Counters nest: a counter's
// counts are added to the enclosing counter when it ends, so an outer scope sees everything.
// Not thread-safe by design: each thread has its own stack of counters and work run on other
// threads (e.g. inside intra-op parallel kernels) is counted by the thread that issued it.
class MacCounter {
 public:
  MacCounter();
  ~MacCounter();
  MacCounter(const MacCounter&) = delete;
  MacCounter& operator=(const MacCounter&) = delete;

  const OpCount& count() const { return count_; }

  // Adds to the innermost counter of this thread; does nothing when none is active.
  static void AddMacs(int64_t macs);
  static void AddElementwise(int64_t ops);
  static bool Active();

 private:
  OpCount count_;
  MacCounter* outer_;  // The counter that was innermost before this one, or null.
};

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_MODEL_COST_H_
