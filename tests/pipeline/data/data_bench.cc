// Measures the data path on the installed Fashion-MNIST: load time without cache, with a cold
// cache (decode + write) and from the cache; BatchLoader throughput at batch 128 with random
// resized crop and normalisation on 28x28 images.
//
// Usage: data_bench [fashion_mnist_dir] [cache_dir] [workers]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "worker/pipeline/data/batch_loader.h"
#include "worker/pipeline/data/dataset.h"

namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  using compress::pipeline::BatchLoader;
  using compress::pipeline::BatchLoaderOptions;
  using compress::pipeline::DatasetOptions;
  using compress::pipeline::DatasetSplits;
  DatasetOptions o;
  o.format = compress::pipeline::DatasetFormat::kFashionMnist;
  o.path = argc > 1 ? argv[1] : "/usr/share/datasets/fashion-mnist";
  const std::string cache_dir =
      argc > 2 ? argv[2] : (std::filesystem::temp_directory_path() / "data_bench_cache").string();
  const int workers = argc > 3 ? std::stoi(argv[3]) : 2;
  std::filesystem::remove_all(cache_dir);

  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<DatasetSplits> d = compress::pipeline::LoadDataset(o);
  if (!d.ok()) {
    std::fprintf(stderr, "%s\n", d.status().ToString().c_str());
    return 1;
  }
  std::printf("load without cache:        %.3f s (%lld train, %lld val)\n", Seconds(start),
              static_cast<long long>(d->train_images.size(0)),
              static_cast<long long>(d->val_images.size(0)));
  o.cache_dir = cache_dir;
  start = std::chrono::steady_clock::now();
  d = compress::pipeline::LoadDataset(o);
  std::printf("load, cold cache (write):  %.3f s (outcome %d)\n", Seconds(start),
              static_cast<int>(d->cache_outcome));
  start = std::chrono::steady_clock::now();
  d = compress::pipeline::LoadDataset(o);
  std::printf("load from cache:           %.3f s (outcome %d, %.1f MB)\n", Seconds(start),
              static_cast<int>(d->cache_outcome), std::filesystem::file_size(d->cache_path) / 1e6);

  BatchLoaderOptions bo;
  bo.batch_size = 128;
  bo.random_resized_crop = true;
  bo.mean = {0.286};
  bo.std = {0.353};
  bo.num_workers = workers;
  absl::StatusOr<std::unique_ptr<BatchLoader>> loader =
      BatchLoader::Create(d->train_images, d->train_labels, bo);
  if (!loader.ok()) {
    std::fprintf(stderr, "%s\n", loader.status().ToString().c_str());
    return 1;
  }
  (*loader)->StartEpoch(0);
  start = std::chrono::steady_clock::now();
  int64_t images = 0;
  while (true) {
    absl::StatusOr<compress::pipeline::ImageBatch> b = (*loader)->Next();
    if (!b.ok()) break;
    images += b->images.size(0);
  }
  const double seconds = Seconds(start);
  std::printf(
      "BatchLoader, batch 128, crop+normalise, %d workers, torch threads %d: "
      "%.0f images/s (%lld images in %.2f s)\n",
      workers, torch::get_num_threads(), images / seconds, static_cast<long long>(images), seconds);
  std::filesystem::remove_all(cache_dir);
  return 0;
}
