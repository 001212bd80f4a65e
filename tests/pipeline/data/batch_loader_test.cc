// Tests of BatchLoader: coverage of every example per epoch, determinism across seeds and
// thread counts, augmentation geometry, normalisation, and shutdown while prefetching.
#include "worker/pipeline/data/batch_loader.h"

#include <torch/torch.h>

#include <vector>

#include "gtest/gtest.h"

namespace compress::pipeline {
namespace {

// N examples of C x H x W whose pixels encode the example index (i % 256 plus position), with
// label = index, so a batch reveals exactly which examples it holds.
struct IndexedData {
  torch::Tensor images;
  torch::Tensor labels;
};

IndexedData MakeIndexed(int64_t n, int64_t c = 1, int64_t h = 8, int64_t w = 8) {
  const torch::Tensor base = torch::arange(n, torch::kInt64).remainder(200).view({n, 1, 1, 1});
  const torch::Tensor ramp = torch::arange(w, torch::kInt64).view({1, 1, 1, w}) * 3 +
                             torch::arange(h, torch::kInt64).view({1, 1, h, 1}) +
                             torch::arange(c, torch::kInt64).view({1, c, 1, 1}) * 10;
  return {(base + ramp).clamp(0, 255).to(torch::kUInt8).contiguous(),
          torch::arange(n, torch::kInt64)};
}

std::unique_ptr<BatchLoader> MustCreate(const IndexedData& d, const BatchLoaderOptions& o) {
  absl::StatusOr<std::unique_ptr<BatchLoader>> loader = BatchLoader::Create(d.images, d.labels, o);
  EXPECT_TRUE(loader.ok()) << loader.status();
  return loader.ok() ? *std::move(loader) : nullptr;
}

std::vector<ImageBatch> Epoch(BatchLoader& loader, int64_t epoch) {
  loader.StartEpoch(epoch);
  std::vector<ImageBatch> batches;
  while (true) {
    absl::StatusOr<ImageBatch> b = loader.Next();
    if (!b.ok()) {
      EXPECT_EQ(b.status().code(), absl::StatusCode::kOutOfRange) << b.status();
      break;
    }
    batches.push_back(*std::move(b));
  }
  return batches;
}

TEST(BatchLoaderTest, CoversEveryExampleOncePerEpoch) {
  const IndexedData d = MakeIndexed(103);
  BatchLoaderOptions o;
  o.batch_size = 10;
  o.seed = 3;
  std::unique_ptr<BatchLoader> loader = MustCreate(d, o);
  ASSERT_NE(loader, nullptr);
  EXPECT_EQ(loader->BatchesPerEpoch(), 11);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const std::vector<ImageBatch> batches = Epoch(*loader, epoch);
    ASSERT_EQ(batches.size(), 11u);
    std::vector<torch::Tensor> labels;
    for (size_t i = 0; i < batches.size(); ++i) {
      EXPECT_EQ(batches[i].index, static_cast<int64_t>(i));
      EXPECT_EQ(batches[i].epoch, epoch);
      EXPECT_EQ(batches[i].images.size(0), i + 1 < batches.size() ? 10 : 3);
      EXPECT_EQ(batches[i].images.scalar_type(), torch::kFloat);
      // Images travel with their labels.
      const torch::Tensor expected =
          d.images.index_select(0, batches[i].labels).to(torch::kFloat) / 255.0;
      EXPECT_TRUE(torch::allclose(batches[i].images, expected));
      labels.push_back(batches[i].labels);
    }
    const torch::Tensor all = torch::cat(labels);
    EXPECT_TRUE(torch::equal(std::get<0>(all.sort()), d.labels));
    EXPECT_FALSE(torch::equal(all, d.labels)) << "shuffled order expected";
  }
}

TEST(BatchLoaderTest, DropLastAndEvalOrder) {
  const IndexedData d = MakeIndexed(25);
  BatchLoaderOptions o;
  o.batch_size = 4;
  o.drop_last = true;
  o.random_resized_crop = true;
  o.horizontal_flip = true;
  std::unique_ptr<BatchLoader> train = MustCreate(d, o);
  ASSERT_NE(train, nullptr);
  EXPECT_EQ(train->BatchesPerEpoch(), 6);
  for (const ImageBatch& b : Epoch(*train, 0)) EXPECT_EQ(b.images.size(0), 4);

  std::unique_ptr<BatchLoader> eval = MustCreate(d, o.ForEval());
  ASSERT_NE(eval, nullptr);
  EXPECT_EQ(eval->BatchesPerEpoch(), 7);
  std::vector<torch::Tensor> labels;
  for (const ImageBatch& b : Epoch(*eval, 5)) {
    labels.push_back(b.labels);
    EXPECT_TRUE(
        torch::allclose(b.images, d.images.index_select(0, b.labels).to(torch::kFloat) / 255.0));
  }
  EXPECT_TRUE(torch::equal(torch::cat(labels), d.labels));
}

TEST(BatchLoaderTest, DeterministicForSeedWhateverTheThreads) {
  const IndexedData d = MakeIndexed(70, 3, 12, 12);
  BatchLoaderOptions o;
  o.batch_size = 16;
  o.seed = 11;
  o.random_resized_crop = true;
  o.horizontal_flip = true;
  o.mean = {0.5, 0.4, 0.3};
  o.std = {0.2, 0.25, 0.3};
  std::vector<std::vector<ImageBatch>> runs;
  for (int workers : {0, 1, 3}) {
    o.num_workers = workers;
    o.prefetch_depth = workers == 3 ? 2 : 4;
    std::unique_ptr<BatchLoader> loader = MustCreate(d, o);
    ASSERT_NE(loader, nullptr);
    runs.push_back(Epoch(*loader, 2));
  }
  for (size_t r = 1; r < runs.size(); ++r) {
    ASSERT_EQ(runs[r].size(), runs[0].size());
    for (size_t i = 0; i < runs[0].size(); ++i) {
      EXPECT_TRUE(torch::equal(runs[r][i].labels, runs[0][i].labels));
      EXPECT_TRUE(torch::equal(runs[r][i].images, runs[0][i].images)) << "run " << r;
    }
  }
  o.num_workers = 2;
  std::unique_ptr<BatchLoader> loader = MustCreate(d, o);
  ASSERT_NE(loader, nullptr);
  // Another epoch gives another order and other crops.
  const std::vector<ImageBatch> epoch3 = Epoch(*loader, 3);
  EXPECT_FALSE(torch::equal(epoch3[0].labels, runs[0][0].labels));
  // Another seed, too.
  o.seed = 12;
  std::unique_ptr<BatchLoader> other = MustCreate(d, o);
  ASSERT_NE(other, nullptr);
  EXPECT_FALSE(torch::equal(Epoch(*other, 2)[0].labels, runs[0][0].labels));
}

TEST(BatchLoaderTest, NormalisesPerChannel) {
  const torch::Tensor images = torch::full({6, 3, 4, 4}, 255, torch::kUInt8);
  images.select(1, 1).fill_(0);
  images.select(1, 2).fill_(51);
  BatchLoaderOptions o;
  o.batch_size = 6;
  o.mean = {0.5, 0.5, 0.1};
  o.std = {0.25, 0.5, 0.1};
  absl::StatusOr<std::unique_ptr<BatchLoader>> loader =
      BatchLoader::Create(images, torch::zeros({6}, torch::kInt64), o);
  ASSERT_TRUE(loader.ok()) << loader.status();
  (*loader)->StartEpoch(0);
  absl::StatusOr<ImageBatch> b = (*loader)->Next();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(b->images.sizes(), (std::vector<int64_t>{6, 3, 4, 4}));
  EXPECT_TRUE(torch::allclose(b->images.select(1, 0), torch::full({6, 4, 4}, 2.0f)));
  EXPECT_TRUE(torch::allclose(b->images.select(1, 1), torch::full({6, 4, 4}, -1.0f)));
  EXPECT_TRUE(torch::allclose(b->images.select(1, 2), torch::full({6, 4, 4}, 1.0f), 1e-5, 1e-5));
}

TEST(BatchLoaderTest, FullCropIsIdentityOrMirror) {
  const IndexedData d = MakeIndexed(40, 2, 6, 10);
  BatchLoaderOptions o;
  o.batch_size = 40;
  o.random_resized_crop = true;
  o.crop_scale_min = o.crop_scale_max = 1.0;
  o.crop_ratio_min = o.crop_ratio_max = 10.0 / 6.0;
  o.horizontal_flip = true;
  std::unique_ptr<BatchLoader> loader = MustCreate(d, o);
  ASSERT_NE(loader, nullptr);
  const std::vector<ImageBatch> batches = Epoch(*loader, 0);
  ASSERT_EQ(batches.size(), 1u);
  int flipped = 0;
  for (int64_t i = 0; i < 40; ++i) {
    const torch::Tensor source =
        d.images[batches[0].labels[i].item<int64_t>()].to(torch::kFloat) / 255.0;
    const torch::Tensor got = batches[0].images[i];
    if (torch::allclose(got, source, 1e-5, 1e-5)) continue;
    EXPECT_TRUE(torch::allclose(got, source.flip({2}), 1e-5, 1e-5)) << "example " << i;
    ++flipped;
  }
  EXPECT_GT(flipped, 5);
  EXPECT_LT(flipped, 35);
}

TEST(BatchLoaderTest, CropsStayWithinTheImageRange) {
  const IndexedData d = MakeIndexed(64, 1, 28, 28);
  BatchLoaderOptions o;
  o.batch_size = 32;
  o.random_resized_crop = true;
  o.crop_scale_min = 0.2;
  std::unique_ptr<BatchLoader> loader = MustCreate(d, o);
  ASSERT_NE(loader, nullptr);
  for (const ImageBatch& b : Epoch(*loader, 0)) {
    ASSERT_EQ(b.images.sizes(), (std::vector<int64_t>{32, 1, 28, 28}));
    // Crops lie inside the image, so no zero padding enters and values stay in range.
    EXPECT_GE(b.images.min().item<float>(), 0.0f);
    EXPECT_LE(b.images.max().item<float>(), 1.0f + 1e-6f);
    const torch::Tensor source = d.images.index_select(0, b.labels).to(torch::kFloat) / 255.0;
    EXPECT_FALSE(torch::allclose(b.images, source));
    EXPECT_GE(b.images.min().item<float>(), source.min().item<float>() - 1e-5f);
  }
}

TEST(BatchLoaderTest, EarlyDestructionWhilePrefetching) {
  const IndexedData d = MakeIndexed(4000, 1, 28, 28);
  BatchLoaderOptions o;
  o.batch_size = 32;
  o.num_workers = 3;
  o.prefetch_depth = 8;
  o.random_resized_crop = true;
  for (int consumed : {0, 1, 5}) {
    std::unique_ptr<BatchLoader> loader = MustCreate(d, o);
    ASSERT_NE(loader, nullptr);
    loader->StartEpoch(0);
    for (int i = 0; i < consumed; ++i) ASSERT_TRUE(loader->Next().ok());
    // Restart mid-epoch: the new epoch starts at batch 0.
    loader->StartEpoch(1);
    absl::StatusOr<ImageBatch> b = loader->Next();
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->epoch, 1);
    EXPECT_EQ(b->index, 0);
    loader.reset();  // joins the workers with batches in flight
  }
  // Never started.
  std::unique_ptr<BatchLoader> idle = MustCreate(d, o);
  ASSERT_NE(idle, nullptr);
  EXPECT_EQ(idle->Next().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(BatchLoaderTest, RejectsBadInputs) {
  const IndexedData d = MakeIndexed(10);
  BatchLoaderOptions o;
  o.batch_size = 0;
  EXPECT_EQ(BatchLoader::Create(d.images, d.labels, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.batch_size = 4;
  o.mean = {0.5, 0.5};
  o.std = {0.5, 0.5};
  EXPECT_EQ(BatchLoader::Create(d.images, d.labels, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.mean.clear();
  o.std.clear();
  EXPECT_EQ(BatchLoader::Create(d.images.to(torch::kFloat), d.labels, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BatchLoader::Create(d.images, d.labels.slice(0, 0, 5), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.drop_last = true;
  o.batch_size = 11;
  EXPECT_EQ(BatchLoader::Create(d.images, d.labels, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace compress::pipeline
