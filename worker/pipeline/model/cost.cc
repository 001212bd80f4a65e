#include "worker/pipeline/model/cost.h"

namespace compress::pipeline {
namespace {

thread_local MacCounter* current_counter = nullptr;

// One block at feature side `resolution` with stage width `dim`.
OpCount BlockOps(const SwinConfig& config, int stage, int block) {
  const BlockWidths& widths = config.stages[stage].blocks[block];
  const int64_t resolution = config.stage_resolution(stage);
  const int64_t tokens = resolution * resolution;
  const int64_t dim = config.stages[stage].dim;
  const int64_t attn_dim = widths.attn_dim();
  const int64_t hidden = widths.mlp_hidden;
  const int64_t window = config.stage_window(stage);
  const int64_t window_tokens = window * window;
  const int64_t windows = tokens / window_tokens;
  // Attention logits of all windows and heads.
  const int64_t logits = windows * widths.num_heads * window_tokens * window_tokens;
  const bool shifted = config.block_shift(stage, block) > 0;

  OpCount ops;
  ops.macs += tokens * dim * 3 * attn_dim;                             // attn.qkv
  ops.macs += 2 * windows * window_tokens * window_tokens * attn_dim;  // Q*K^T and A*V
  ops.macs += tokens * attn_dim * dim;                                 // attn.proj
  ops.macs += tokens * dim * hidden + tokens * hidden * dim;           // mlp.fc1, mlp.fc2
  ops.elementwise += 2 * tokens * dim;                                 // norm1, norm2
  ops.elementwise += tokens * attn_dim;                                // query scaling
  ops.elementwise += logits * (shifted ? 3 : 2);  // bias add, [mask add,] softmax
  ops.elementwise += tokens * hidden;             // GELU
  ops.elementwise += 2 * tokens * dim;            // two residual adds
  return ops;
}

}  // namespace

int64_t BlockParams(const SwinConfig& config, int stage, int block) {
  const BlockWidths& widths = config.stages[stage].blocks[block];
  const int64_t dim = config.stages[stage].dim;
  const int64_t attn_dim = widths.attn_dim();
  const int64_t hidden = widths.mlp_hidden;
  const int64_t table_side = 2 * config.stage_window(stage) - 1;
  int64_t params = 0;
  params += 2 * dim;                                                    // norm1
  params += dim * 3 * attn_dim + (config.qkv_bias ? 3 * attn_dim : 0);  // attn.qkv
  params += attn_dim * dim + dim;                                       // attn.proj
  params += table_side * table_side * widths.num_heads;                 // relative position bias
  params += 2 * dim;                                                    // norm2
  params += dim * hidden + hidden + hidden * dim + dim;                 // mlp.fc1, mlp.fc2
  return params;
}

absl::StatusOr<SwinCost> AnalyzeSwinCost(const SwinConfig& config) {
  if (absl::Status status = config.Validate(); !status.ok()) return status;
  SwinCost cost;
  const int64_t patch = config.patch_size;
  const int64_t embed = config.embed_dim();
  const int64_t grid = config.stage_resolution(0);
  cost.patch_embed.macs = grid * grid * embed * config.in_channels * patch * patch;
  cost.patch_embed.elementwise = grid * grid * embed;  // patch_embed.norm
  cost.params += embed * config.in_channels * patch * patch + embed + 2 * embed;

  for (int s = 0; s < static_cast<int>(config.stages.size()); ++s) {
    OpCount merge;
    if (s > 0) {
      const int64_t in = 4 * static_cast<int64_t>(config.stages[s - 1].dim);
      const int64_t out = config.stages[s].dim;
      const int64_t side = config.stage_resolution(s);
      merge.elementwise = side * side * in;  // downsample.norm
      merge.macs = side * side * in * out;   // downsample.reduction
      cost.params += 2 * in + in * out;
    }
    cost.downsample.push_back(merge);
    cost.total += merge;
    std::vector<OpCount> blocks;
    for (int b = 0; b < static_cast<int>(config.stages[s].blocks.size()); ++b) {
      blocks.push_back(BlockOps(config, s, b));
      cost.total += blocks.back();
      cost.params += BlockParams(config, s, b);
    }
    cost.blocks.push_back(std::move(blocks));
  }

  const int64_t side = config.stage_resolution(static_cast<int>(config.stages.size()) - 1);
  const int64_t features = config.num_features();
  cost.head.elementwise = 2 * side * side * features;  // final norm, average pool
  cost.head.macs = features * config.num_classes;
  cost.params += 2 * features + features * config.num_classes + config.num_classes;

  cost.total += cost.patch_embed;
  cost.total += cost.head;
  return cost;
}

MacCounter::MacCounter() : outer_(current_counter) { current_counter = this; }

MacCounter::~MacCounter() {
  current_counter = outer_;
  if (outer_ != nullptr) outer_->count_ += count_;
}

void MacCounter::AddMacs(int64_t macs) {
  if (current_counter != nullptr) current_counter->count_.macs += macs;
}

void MacCounter::AddElementwise(int64_t ops) {
  if (current_counter != nullptr) current_counter->count_.elementwise += ops;
}

bool MacCounter::Active() { return current_counter != nullptr; }

}  // namespace compress::pipeline
