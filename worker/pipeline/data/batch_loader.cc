#include "worker/pipeline/data/batch_loader.h"

#include <ATen/Config.h>
#include <dlfcn.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <new>

#include "absl/strings/str_cat.h"
#include "worker/pipeline/data/rng.h"

namespace compress::pipeline {
namespace {

// Tags that keep the random streams of order and augmentation apart.
constexpr uint64_t kOrderStream = 0x6f72646572ULL;
constexpr uint64_t kAugmentStream = 0x6175676d656eULL;

// Makes LibTorch ops on the calling (worker) thread run single-threaded. OpenMP's thread count
// is a per-thread setting, so this leaves the trainer's threads alone, whereas
// at::set_num_threads would change the process-wide default. omp_set_num_threads is looked up
// in the process rather than linked, so that it is the OpenMP runtime LibTorch itself loaded
// (the system libgomp, or the renamed copy a PyTorch wheel bundles), never a second one.
void LimitIntraOpThreads() {
#if AT_PARALLEL_OPENMP
  using SetNumThreads = void (*)(int);
  static const auto set_num_threads =
      reinterpret_cast<SetNumThreads>(::dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set_num_threads == nullptr) return;
  // LibTorch initialises a thread's OpenMP thread count lazily at its first parallel op; do it
  // now so that it does not overwrite the setting below later.
  at::internal::lazy_init_num_threads();
  set_num_threads(1);
#endif
}

// A crop box in pixels.
struct Crop {
  double x0, y0, w, h;
};

// torchvision's RandomResizedCrop.get_params: ten tries at a random area and aspect ratio,
// then the whole image.
Crop SampleCrop(SplitMix64& rng, int64_t height, int64_t width, const BatchLoaderOptions& o) {
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(o.crop_ratio_min);
  const double log_hi = std::log(o.crop_ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.Uniform(o.crop_scale_min, o.crop_scale_max);
    const double ratio = std::exp(rng.Uniform(log_lo, log_hi));
    const double w = std::round(std::sqrt(target * ratio));
    const double h = std::round(std::sqrt(target / ratio));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      const double y0 = static_cast<double>(rng.Below(static_cast<uint64_t>(height - h) + 1));
      const double x0 = static_cast<double>(rng.Below(static_cast<uint64_t>(width - w) + 1));
      return {x0, y0, w, h};
    }
  }
  return {0.0, 0.0, static_cast<double>(width), static_cast<double>(height)};
}

}  // namespace

BatchLoaderOptions BatchLoaderOptions::ForEval() const {
  BatchLoaderOptions eval = *this;
  eval.shuffle = false;
  eval.drop_last = false;
  eval.random_resized_crop = false;
  eval.horizontal_flip = false;
  return eval;
}

absl::StatusOr<std::unique_ptr<BatchLoader>> BatchLoader::Create(
    torch::Tensor images, torch::Tensor labels, const BatchLoaderOptions& options) {
  if (!images.defined() || images.dim() != 4 || images.scalar_type() != torch::kUInt8 ||
      !images.device().is_cpu()) {
    return absl::InvalidArgumentError("BatchLoader images must be a CPU uint8 [N, C, H, W] tensor");
  }
  if (!labels.defined() || labels.dim() != 1 || labels.scalar_type() != torch::kInt64 ||
      labels.size(0) != images.size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BatchLoader labels must be an int64 [N] tensor matching ", images.size(0), " images"));
  }
  if (images.size(0) == 0) return absl::InvalidArgumentError("BatchLoader needs examples");
  const int64_t channels = images.size(1);
  if (options.batch_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size must be > 0, got ", options.batch_size));
  }
  if (options.num_workers < 0 || options.prefetch_depth < 1) {
    return absl::InvalidArgumentError("num_workers must be >= 0 and prefetch_depth >= 1");
  }
  if (options.random_resized_crop &&
      !(options.crop_scale_min > 0 && options.crop_scale_min <= options.crop_scale_max &&
        options.crop_scale_max <= 1.0 && options.crop_ratio_min > 0 &&
        options.crop_ratio_min <= options.crop_ratio_max)) {
    return absl::InvalidArgumentError(
        "crop scale must satisfy 0 < crop_scale_min <= crop_scale_max <= 1 and crop ratio "
        "0 < crop_ratio_min <= crop_ratio_max");
  }
  if (options.mean.size() != options.std.size() ||
      (!options.mean.empty() && options.mean.size() != 1 &&
       static_cast<int64_t>(options.mean.size()) != channels)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mean and std need the same number of values, 0, 1 or ", channels, " (one per channel)"));
  }
  for (double s : options.std) {
    if (!(s > 0)) return absl::InvalidArgumentError("std values must be > 0");
  }
  if (options.drop_last && images.size(0) < options.batch_size) {
    return absl::InvalidArgumentError(absl::StrCat("drop_last with batch_size ", options.batch_size,
                                                   " leaves no batch of ", images.size(0),
                                                   " examples"));
  }
  std::unique_ptr<BatchLoader> loader(
      new BatchLoader(std::move(images), std::move(labels), options));
  for (int i = 0; i < options.num_workers; ++i) {
    loader->workers_.emplace_back(&BatchLoader::WorkerLoop, loader.get());
  }
  return loader;
}

BatchLoader::BatchLoader(torch::Tensor images, torch::Tensor labels,
                         const BatchLoaderOptions& options)
    : images_(images.contiguous()),
      labels_(labels.contiguous()),
      options_(options),
      num_examples_(images.size(0)),
      num_batches_(options.drop_last
                       ? images.size(0) / options.batch_size
                       : (images.size(0) + options.batch_size - 1) / options.batch_size) {
  const int64_t channels = images_.size(1);
  std::vector<float> scale(channels, 1.0f / 255.0f);
  std::vector<float> shift(channels, 0.0f);
  for (int64_t c = 0; c < channels && !options_.mean.empty(); ++c) {
    const size_t k = options_.mean.size() == 1 ? 0 : static_cast<size_t>(c);
    scale[c] = static_cast<float>(1.0 / (255.0 * options_.std[k]));
    shift[c] = static_cast<float>(-options_.mean[k] / options_.std[k]);
  }
  scale_ = torch::tensor(scale).view({1, channels, 1, 1});
  shift_ = torch::tensor(shift).view({1, channels, 1, 1});
}

BatchLoader::~BatchLoader() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& worker : workers_) worker.join();
}

torch::Tensor BatchLoader::MakeOrder(int64_t epoch) const {
  torch::Tensor order = torch::arange(num_examples_, torch::kInt64);
  if (!options_.shuffle) return order;
  // Fisher-Yates with our own generator, identical on every platform.
  SplitMix64 rng(SplitMix64::Mix({options_.seed, static_cast<uint64_t>(epoch), kOrderStream}));
  int64_t* p = order.data_ptr<int64_t>();
  for (int64_t i = num_examples_ - 1; i > 0; --i) {
    std::swap(p[i], p[rng.Below(static_cast<uint64_t>(i) + 1)]);
  }
  return order;
}

void BatchLoader::StartEpoch(int64_t epoch) {
  torch::Tensor order = MakeOrder(epoch);
  absl::MutexLock lock(&mu_);
  ++generation_;
  started_ = true;
  epoch_ = epoch;
  order_ = std::move(order);
  next_claim_ = 0;
  next_consume_ = 0;
  ready_.clear();
}

bool BatchLoader::WorkAvailableOrStopLocked() const {
  return stop_ || (started_ && next_claim_ < num_batches_ &&
                   next_claim_ < next_consume_ + options_.prefetch_depth);
}

bool BatchLoader::NextReadyLocked() const { return ready_.count(next_consume_) > 0; }

void BatchLoader::WorkerLoop() {
  LimitIntraOpThreads();
  while (true) {
    int64_t generation = 0;
    int64_t epoch = 0;
    int64_t index = 0;
    torch::Tensor order;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &BatchLoader::WorkAvailableOrStopLocked));
      if (stop_) return;
      generation = generation_;
      epoch = epoch_;
      index = next_claim_++;
      order = order_;
    }
    // Prepared without the lock: the consumer and other workers proceed meanwhile.
    absl::StatusOr<ImageBatch> batch = MakeBatch(epoch, index, order);
    absl::MutexLock lock(&mu_);
    if (generation == generation_) ready_.emplace(index, std::move(batch));
  }
}

absl::StatusOr<ImageBatch> BatchLoader::Next() {
  int64_t epoch = 0;
  int64_t index = 0;
  torch::Tensor order;
  {
    absl::MutexLock lock(&mu_);
    if (!started_) return absl::FailedPreconditionError("BatchLoader::Next before StartEpoch");
    if (next_consume_ >= num_batches_) {
      return absl::OutOfRangeError(absl::StrCat("end of epoch ", epoch_));
    }
    if (!workers_.empty()) {
      mu_.Await(absl::Condition(this, &BatchLoader::NextReadyLocked));
      auto node = ready_.extract(next_consume_);
      ++next_consume_;
      return std::move(node.mapped());
    }
    epoch = epoch_;
    index = next_consume_++;
    order = order_;
  }
  return MakeBatch(epoch, index, order);
}

absl::StatusOr<ImageBatch> BatchLoader::MakeBatch(int64_t epoch, int64_t index,
                                             const torch::Tensor& order) const {
  try {
    torch::NoGradGuard no_grad;
    const int64_t start = index * options_.batch_size;
    const int64_t end = std::min(num_examples_, start + options_.batch_size);
    const torch::Tensor ids = order.slice(0, start, end);
    ImageBatch batch;
    batch.epoch = epoch;
    batch.index = index;
    batch.labels = labels_.index_select(0, ids);
    batch.sample_ids = ids.clone();
    torch::Tensor x = images_.index_select(0, ids).to(torch::kFloat);
    const int64_t b = x.size(0);
    const int64_t height = x.size(2);
    const int64_t width = x.size(3);
    if (options_.random_resized_crop || options_.horizontal_flip) {
      SplitMix64 rng(SplitMix64::Mix({options_.seed, static_cast<uint64_t>(epoch),
                                      static_cast<uint64_t>(index), kAugmentStream}));
      if (options_.random_resized_crop) {
        // One affine sampling grid per example maps the output onto its crop box (normalised
        // coordinates, align_corners=false); a negative x scale mirrors it.
        torch::Tensor theta = torch::zeros({b, 2, 3}, torch::kFloat);
        float* t = theta.data_ptr<float>();
        for (int64_t i = 0; i < b; ++i) {
          const Crop crop = SampleCrop(rng, height, width, options_);
          const bool flip = options_.horizontal_flip && (rng.Next() & 1) != 0;
          t[i * 6 + 0] = static_cast<float>((flip ? -1.0 : 1.0) * crop.w / width);
          t[i * 6 + 2] = static_cast<float>((crop.x0 + crop.w / 2.0) / width * 2.0 - 1.0);
          t[i * 6 + 4] = static_cast<float>(crop.h / height);
          t[i * 6 + 5] = static_cast<float>((crop.y0 + crop.h / 2.0) / height * 2.0 - 1.0);
        }
        const torch::Tensor grid =
            torch::affine_grid_generator(theta, x.sizes(), /*align_corners=*/false);
        x = torch::grid_sampler(x, grid, /*interpolation_mode=*/0, /*padding_mode=*/0,
                                /*align_corners=*/false);
      } else {
        torch::Tensor flip = torch::empty({b}, torch::kBool);
        bool* f = flip.data_ptr<bool>();
        for (int64_t i = 0; i < b; ++i) f[i] = (rng.Next() & 1) != 0;
        x = torch::where(flip.view({b, 1, 1, 1}), x.flip({3}), x);
      }
    }
    batch.images = x.mul_(scale_).add_(shift_).contiguous();
    return batch;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("preparing batch ", index, " of epoch ", epoch,
                                            " failed: ", e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory preparing batch ", index, " of epoch ", epoch));
  }
}

}  // namespace compress::pipeline
