#include "worker/pipeline/train/batch_source.h"

#include <ATen/CPUGeneratorImpl.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace compress::pipeline {
namespace {

// SplitMix64 (Steele et al., "Fast splittable pseudorandom number generators", 2014): spreads
// nearby (seed, epoch, batch) triples over unrelated generator seeds.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

torch::Generator MakeGenerator(uint64_t seed, int64_t epoch, int64_t batch) {
  const uint64_t mixed =
      Mix(Mix(Mix(seed) ^ static_cast<uint64_t>(epoch)) ^ static_cast<uint64_t>(batch + 1));
  return at::make_generator<at::CPUGeneratorImpl>(mixed);
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorBatchSource>> TensorBatchSource::Create(
    torch::Tensor inputs, torch::Tensor targets, const TensorBatchSourceOptions& options) {
  if (!inputs.defined() || !targets.defined()) {
    return absl::InvalidArgumentError("TensorBatchSource: inputs and targets must be defined");
  }
  if (inputs.dim() == 0 || inputs.size(0) == 0) {
    return absl::InvalidArgumentError("TensorBatchSource: inputs hold no samples");
  }
  if (targets.dim() != 1 || targets.size(0) != inputs.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("TensorBatchSource: targets must be 1-d with one entry per input; got ",
                     targets.dim(), "-d with ", targets.dim() > 0 ? targets.size(0) : 0,
                     " entries for ", inputs.size(0), " inputs"));
  }
  if (options.batch_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("TensorBatchSource: batch_size must be positive, got ", options.batch_size));
  }
  if (options.drop_last && inputs.size(0) < options.batch_size) {
    return absl::InvalidArgumentError(absl::StrCat("TensorBatchSource: drop_last with ",
                                                   inputs.size(0), " samples and batch_size ",
                                                   options.batch_size, " leaves no batch"));
  }
  return std::unique_ptr<TensorBatchSource>(
      new TensorBatchSource(std::move(inputs), std::move(targets), options));
}

TensorBatchSource::TensorBatchSource(torch::Tensor inputs, torch::Tensor targets,
                                     const TensorBatchSourceOptions& options)
    : inputs_(std::move(inputs)), targets_(std::move(targets)), options_(options) {}

int64_t TensorBatchSource::BatchesPerEpoch() const {
  const int64_t n = inputs_.size(0);
  return options_.drop_last ? n / options_.batch_size
                            : (n + options_.batch_size - 1) / options_.batch_size;
}

absl::Status TensorBatchSource::StartEpoch(int64_t epoch, int64_t first_batch) {
  if (epoch < 0 || first_batch < 0 || first_batch > BatchesPerEpoch()) {
    return absl::OutOfRangeError(absl::StrCat("TensorBatchSource: position (epoch ", epoch,
                                              ", batch ", first_batch, ") is out of range; ",
                                              BatchesPerEpoch(), " batches per epoch"));
  }
  epoch_ = epoch;
  next_batch_ = first_batch;
  const int64_t n = inputs_.size(0);
  if (options_.shuffle) {
    torch::Generator generator = MakeGenerator(options_.seed, epoch, /*batch=*/-1);
    order_ = torch::randperm(n, generator, torch::TensorOptions().dtype(torch::kLong));
  } else {
    order_ = torch::arange(n, torch::TensorOptions().dtype(torch::kLong));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<TrainBatch>> TensorBatchSource::Next() {
  if (!order_.defined()) {
    return absl::FailedPreconditionError("TensorBatchSource: Next() before StartEpoch()");
  }
  if (next_batch_ >= BatchesPerEpoch()) return std::optional<TrainBatch>();
  const int64_t n = inputs_.size(0);
  const int64_t begin = next_batch_ * options_.batch_size;
  const int64_t end = std::min(n, begin + options_.batch_size);
  const torch::Tensor index = order_.slice(0, begin, end).to(inputs_.device());
  TrainBatch batch{inputs_.index_select(0, index), targets_.index_select(0, index),
                   order_.slice(0, begin, end).to(torch::kCPU)};
  if (options_.transform) {
    torch::Generator generator = MakeGenerator(options_.seed, epoch_, next_batch_);
    batch = options_.transform(std::move(batch), generator);
  }
  ++next_batch_;
  return std::optional<TrainBatch>(std::move(batch));
}

}  // namespace compress::pipeline
