#include "worker/pipeline/data/dataset.h"

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/pipeline/data/cifar_reader.h"
#include "worker/pipeline/data/dataset_cache.h"
#include "worker/pipeline/data/idx_reader.h"
#include "worker/pipeline/data/image_folder_reader.h"
#include "worker/pipeline/data/image_ops.h"
#include "worker/pipeline/data/source_files.h"
#include "worker/pipeline/data/synthetic_dataset.h"

namespace compress::pipeline {
namespace {

// `revision`: bumped when a format's reader starts refusing files it accepted (or reads them
// differently), so that cache files of that format are not reused and their sources are read
// again; other formats keep theirs. Revision 2 of fashion_mnist refuses IDX files longer than
// their headers announce.
constexpr struct {
  DatasetFormat format;
  absl::string_view name;
  int revision;
} kFormatNames[] = {
    {DatasetFormat::kFashionMnist, "fashion_mnist", 2},
    {DatasetFormat::kTinyImageNet, "tiny_imagenet", 1},
    {DatasetFormat::kImageFolder, "image_folder", 1},
    {DatasetFormat::kCifar10, "cifar10", 1},
    {DatasetFormat::kSynthetic, "synthetic", 1},
};

int ReaderRevision(DatasetFormat format) {
  for (const auto& entry : kFormatNames) {
    if (entry.format == format) return entry.revision;
  }
  return 1;
}

// Bump when the decoded output of any reader changes, so old cache files are not reused.
constexpr int kCacheFormatVersion = 1;

// What a format's reader found before decoding: its source files and how to decode them.
struct Plan {
  std::vector<SourceFile> sources;
  // The classes of a directory format, which a limited listing may not show in its files.
  std::vector<std::string> class_names;
  std::function<absl::StatusOr<RawDataset>()> decode;
  // Whether decode already resized (directory formats resize per image while decoding).
  bool resized_by_decoder = false;
};

absl::StatusOr<Plan> MakePlan(const DatasetOptions& o) {
  Plan plan;
  switch (o.format) {
    case DatasetFormat::kFashionMnist: {
      absl::StatusOr<IdxFiles> files = LocateIdxFiles(o.path);
      if (!files.ok()) return files.status();
      absl::StatusOr<std::vector<SourceFile>> sources = IdxSources(*files);
      if (!sources.ok()) return sources.status();
      plan.sources = *std::move(sources);
      plan.decode = [files = *files, &o] {
        return ReadIdxDataset(files, o.limit_train, o.limit_val);
      };
      return plan;
    }
    case DatasetFormat::kCifar10: {
      absl::StatusOr<CifarFiles> files = LocateCifarFiles(o.path);
      if (!files.ok()) return files.status();
      absl::StatusOr<std::vector<SourceFile>> sources = CifarSources(*files);
      if (!sources.ok()) return sources.status();
      plan.sources = *std::move(sources);
      plan.decode = [files = *files, &o] {
        return ReadCifarDataset(files, o.limit_train, o.limit_val);
      };
      return plan;
    }
    case DatasetFormat::kTinyImageNet:
    case DatasetFormat::kImageFolder: {
      absl::StatusOr<ImageListing> listing =
          o.format == DatasetFormat::kTinyImageNet
              ? ListTinyImageNet(o.path, o.limit_train, o.limit_val)
              : ListImageFolder(o.path, o.limit_train, o.limit_val);
      if (!listing.ok()) return listing.status();
      absl::StatusOr<std::vector<SourceFile>> sources = ListingSources(*listing);
      if (!sources.ok()) return sources.status();
      plan.sources = *std::move(sources);
      plan.class_names = listing->class_names;
      plan.resized_by_decoder = true;
      plan.decode = [listing = std::make_shared<ImageListing>(*std::move(listing)), &o] {
        return DecodeImageListing(*listing, o.image_size, o.channels, o.decode_threads, o.cancel);
      };
      return plan;
    }
    case DatasetFormat::kSynthetic: {
      SyntheticSpec spec;
      spec.num_classes = o.synthetic_num_classes;
      spec.channels = o.channels > 0 ? o.channels : 3;
      spec.image_size = o.image_size > 0 ? o.image_size : 32;
      spec.train_size = o.synthetic_train_size;
      spec.val_size = o.synthetic_val_size;
      if (o.limit_train > 0) spec.train_size = std::min(spec.train_size, o.limit_train);
      if (o.limit_val > 0) spec.val_size = std::min(spec.val_size, o.limit_val);
      spec.seed = o.synthetic_seed;
      plan.resized_by_decoder = true;
      plan.decode = [spec]() -> absl::StatusOr<RawDataset> { return MakeSyntheticDataset(spec); };
      return plan;
    }
  }
  return absl::InvalidArgumentError("unknown data set format");
}

// The full cache key: everything that determines the decoded tensors and the class list.
// Source files are named relative to the data set root, so a copy of the data set (with its
// mtimes) shares the cache.
std::string CacheKey(const DatasetOptions& o, const Plan& plan) {
  std::string key = absl::StrCat("compress-dataset-cache v", kCacheFormatVersion,
                                 "\nformat=", DatasetFormatName(o.format),
                                 "\nimage_size=", o.image_size, "\nchannels=", o.channels,
                                 "\nlimit_train=", o.limit_train, "\nlimit_val=", o.limit_val);
  // Revision 1 adds nothing, so that the keys of formats never revised stay as they were.
  if (const int revision = ReaderRevision(o.format); revision > 1) {
    absl::StrAppend(&key, "\nreader_revision=", revision);
  }
  if (o.format == DatasetFormat::kSynthetic) {
    absl::StrAppend(&key, "\nsynthetic=", o.synthetic_num_classes, ",", o.synthetic_train_size, ",",
                    o.synthetic_val_size, ",", o.synthetic_seed);
  }
  // A class added or removed where a limited listing takes no file from it still changes the
  // labels' range and names.
  if (!plan.class_names.empty()) {
    absl::StrAppend(&key, "\nclasses=", plan.class_names.size());
    for (const std::string& name : plan.class_names) absl::StrAppend(&key, "\nclass ", name);
  }
  for (const SourceFile& f : plan.sources) {
    absl::string_view name = f.path;
    if (absl::StartsWith(name, o.path)) {
      name.remove_prefix(o.path.size());
      while (!name.empty() && name.front() == '/') name.remove_prefix(1);
    }
    absl::StrAppend(&key, "\nfile ", name, " ", f.size, " ", f.mtime_ns);
  }
  return key;
}

// Moves the pixels of `raw` into a uint8 tensor without copying.
torch::Tensor ImagesToTensor(RawImages& raw) {
  const std::vector<int64_t> sizes = {raw.count, raw.channels, raw.height, raw.width};
  if (raw.count == 0) return torch::empty(sizes, torch::kUInt8);
  auto* owner = new std::vector<uint8_t>(std::move(raw.pixels));
  return torch::from_blob(
      owner->data(), sizes, [owner](void*) { delete owner; }, torch::kUInt8);
}

torch::Tensor LabelsToTensor(RawImages& raw) {
  if (raw.count == 0) return torch::empty({0}, torch::kInt64);
  auto* owner = new std::vector<int64_t>(std::move(raw.labels));
  return torch::from_blob(
      owner->data(), {raw.count}, [owner](void*) { delete owner; }, torch::kInt64);
}

absl::StatusOr<DatasetSplits> Decode(const DatasetOptions& o, const Plan& plan) {
  absl::StatusOr<RawDataset> raw = plan.decode();
  if (!raw.ok()) return raw.status();
  for (RawImages* split : {&raw->train, &raw->val}) {
    if (!plan.resized_by_decoder) ResizeRawImages(*split, o.image_size);
    ConvertChannels(*split, o.channels);
  }
  if (raw->train.count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("data set at ", o.path, " has no training examples"));
  }
  DatasetSplits splits;
  splits.num_classes = raw->num_classes;
  splits.class_names = raw->class_names;
  splits.channels = raw->train.channels;
  splits.height = raw->train.height;
  splits.width = raw->train.width;
  splits.train_images = ImagesToTensor(raw->train);
  splits.train_labels = LabelsToTensor(raw->train);
  splits.val_images = ImagesToTensor(raw->val);
  splits.val_labels = LabelsToTensor(raw->val);
  return splits;
}

absl::StatusOr<DatasetSplits> LoadUnchecked(const DatasetOptions& o) {
  absl::StatusOr<Plan> plan = MakePlan(o);
  if (!plan.ok()) return plan.status();
  if (o.cache_dir.empty()) return Decode(o, *plan);

  const std::string key = CacheKey(o, *plan);
  const std::string cache_path = JoinPath(
      o.cache_dir, absl::StrCat(DatasetFormatName(o.format), "-", StableHashHex(key), ".dscache"));
  absl::StatusOr<DatasetSplits> cached = ReadDatasetCache(cache_path, key);
  if (cached.ok()) {
    cached->cache_outcome = CacheOutcome::kHit;
    cached->cache_path = cache_path;
    return cached;
  }
  const bool existed = !absl::IsNotFound(cached.status());
  absl::StatusOr<DatasetSplits> splits = Decode(o, *plan);
  if (!splits.ok()) return splits.status();
  splits->cache_path = cache_path;
  if (absl::Status written = WriteDatasetCache(cache_path, key, *splits); !written.ok()) {
    splits->cache_outcome = CacheOutcome::kWriteFailed;
    splits->cache_detail = written.ToString();
  } else if (existed) {
    splits->cache_outcome = CacheOutcome::kRebuilt;
    splits->cache_detail = cached.status().ToString();
  } else {
    splits->cache_outcome = CacheOutcome::kWritten;
  }
  return splits;
}

}  // namespace

absl::string_view DatasetFormatName(DatasetFormat format) {
  for (const auto& entry : kFormatNames) {
    if (entry.format == format) return entry.name;
  }
  return "unknown";
}

absl::StatusOr<DatasetFormat> ParseDatasetFormat(absl::string_view name) {
  std::vector<absl::string_view> names;
  for (const auto& entry : kFormatNames) {
    if (entry.name == name) return entry.format;
    names.push_back(entry.name);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown data set format \"", name, "\"; expected one of ", absl::StrJoin(names, ", ")));
}

absl::Status ValidateDatasetOptions(const DatasetOptions& o) {
  if (o.format != DatasetFormat::kSynthetic && o.path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset.path must name the data set directory for format ", DatasetFormatName(o.format)));
  }
  if (o.image_size < 0 || o.image_size > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset.image_size must be in [0, 4096], got ", o.image_size));
  }
  if (o.channels != 0 && o.channels != 1 && o.channels != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset.channels must be 0, 1 or 3, got ", o.channels));
  }
  if (o.limit_train < 0 || o.limit_val < 0) {
    return absl::InvalidArgumentError("dataset.limit_train and dataset.limit_val must be >= 0");
  }
  if (o.decode_threads < 0) {
    return absl::InvalidArgumentError("dataset.decode_threads must be >= 0");
  }
  if (o.format == DatasetFormat::kSynthetic) {
    if (o.synthetic_num_classes <= 0 || o.synthetic_num_classes > 100000) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dataset.synthetic_num_classes must be in [1, 100000], got ", o.synthetic_num_classes));
    }
    if (o.synthetic_train_size <= 0 || o.synthetic_val_size < 0) {
      return absl::InvalidArgumentError(
          "dataset.synthetic_train_size must be > 0 and dataset.synthetic_val_size >= 0");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DatasetSplits> LoadDataset(const DatasetOptions& options) {
  if (absl::Status s = ValidateDatasetOptions(options); !s.ok()) return s;
  try {
    return LoadUnchecked(options);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory loading data set ", options.path));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LibTorch error loading data set ", options.path, ": ",
                                            e.what_without_backtrace()));
  }
}

}  // namespace compress::pipeline
