#include "worker/pipeline/data/cifar_reader.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "worker/pipeline/data/source_files.h"

namespace compress::pipeline {
namespace {

constexpr int kSide = 32;
constexpr int64_t kImageBytes = 3 * kSide * kSide;
constexpr int64_t kRecordBytes = 1 + kImageBytes;
constexpr int64_t kNumClasses = 10;

// Appends records of `path` to `out` until it holds `limit` (0 = no limit).
absl::Status AppendBatchFile(const std::string& path, int64_t limit, RawImages& out) {
  absl::StatusOr<std::string> bytes = ReadFileBytes(path, "CIFAR-10 batch file");
  if (!bytes.ok()) return bytes.status();
  return AppendCifarBatch(*bytes, path, limit, out);
}

absl::StatusOr<RawImages> ReadSplit(const std::vector<std::string>& paths, int64_t limit) {
  RawImages out;
  out.channels = 3;
  out.height = kSide;
  out.width = kSide;
  for (const std::string& path : paths) {
    if (limit > 0 && out.count >= limit) break;
    if (absl::Status s = AppendBatchFile(path, limit, out); !s.ok()) return s;
  }
  return out;
}

}  // namespace

absl::Status AppendCifarBatch(const std::string& batch, const std::string& path, int64_t limit,
                              RawImages& out) {
  const int64_t size = static_cast<int64_t>(batch.size());
  if (size == 0) {
    return absl::DataLossError(absl::StrCat("empty CIFAR-10 batch file ", path));
  }
  if (size % kRecordBytes != 0) {
    const int64_t record = size / kRecordBytes;
    return absl::DataLossError(absl::StrCat("truncated CIFAR-10 batch file ", path, ": ", size,
                                            " bytes is not a multiple of the ", kRecordBytes,
                                            "-byte record; record ", record, " at offset ",
                                            record * kRecordBytes, " is incomplete"));
  }
  int64_t records = size / kRecordBytes;
  if (limit > 0) records = std::min(records, limit - out.count);
  if (records <= 0) return absl::OkStatus();
  const auto* data = reinterpret_cast<const uint8_t*>(batch.data());
  // Every label is checked before anything is appended, so that `out` is left as it was on error.
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t label = data[r * kRecordBytes];
    if (label >= kNumClasses) {
      return absl::InvalidArgumentError(absl::StrCat("label ", int{label}, " out of range [0, ",
                                                     kNumClasses, ") in ", path, " at record ", r,
                                                     " (offset ", r * kRecordBytes, ")"));
    }
  }
  out.pixels.reserve(out.pixels.size() + records * kImageBytes);
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t* record = data + r * kRecordBytes;
    out.labels.push_back(record[0]);
    out.pixels.insert(out.pixels.end(), record + 1, record + kRecordBytes);
  }
  out.count += records;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ParseCifarClassNames(absl::string_view text,
                                                              const std::string& path) {
  std::vector<std::string> names;
  for (const std::string& line : SplitLines(text)) {
    std::string name(absl::StripAsciiWhitespace(line));
    if (!name.empty()) names.push_back(std::move(name));
  }
  if (static_cast<int64_t>(names.size()) != kNumClasses) {
    return absl::InvalidArgumentError(absl::StrCat("CIFAR-10 meta file ", path, " lists ",
                                                   names.size(), " class names, expected ",
                                                   kNumClasses));
  }
  return names;
}

absl::StatusOr<CifarFiles> LocateCifarFiles(const std::string& dir) {
  if (absl::Status s = CheckDirectory(dir, "CIFAR-10"); !s.ok()) return s;
  std::string root = dir;
  const std::string nested = JoinPath(dir, "cifar-10-batches-bin");
  if (!StatSourceFile(JoinPath(dir, "test_batch.bin"), "").ok() &&
      CheckDirectory(nested, "").ok()) {
    root = nested;
  }
  CifarFiles files;
  for (int i = 1; i <= 5; ++i) {
    const std::string path = JoinPath(root, absl::StrCat("data_batch_", i, ".bin"));
    if (absl::StatusOr<SourceFile> f = StatSourceFile(path, "CIFAR-10 batch file"); !f.ok()) {
      return f.status();
    }
    files.train.push_back(path);
  }
  files.val = JoinPath(root, "test_batch.bin");
  if (absl::StatusOr<SourceFile> f = StatSourceFile(files.val, "CIFAR-10 batch file"); !f.ok()) {
    return f.status();
  }
  const std::string meta = JoinPath(root, "batches.meta.txt");
  if (StatSourceFile(meta, "").ok()) files.meta = meta;
  return files;
}

absl::StatusOr<std::vector<SourceFile>> CifarSources(const CifarFiles& files) {
  std::vector<std::string> paths = files.train;
  paths.push_back(files.val);
  if (!files.meta.empty()) paths.push_back(files.meta);
  std::vector<SourceFile> sources;
  for (const std::string& path : paths) {
    absl::StatusOr<SourceFile> f = StatSourceFile(path, "CIFAR-10 file");
    if (!f.ok()) return f.status();
    sources.push_back(*std::move(f));
  }
  return sources;
}

absl::StatusOr<RawDataset> ReadCifarDataset(const CifarFiles& files, int64_t limit_train,
                                            int64_t limit_val) {
  RawDataset data;
  data.num_classes = kNumClasses;
  if (files.meta.empty()) {
    data.class_names = {"airplane", "automobile", "bird",  "cat",  "deer",
                        "dog",      "frog",       "horse", "ship", "truck"};
  } else {
    absl::StatusOr<std::string> text = ReadFileBytes(files.meta, "CIFAR-10 meta file");
    if (!text.ok()) return text.status();
    absl::StatusOr<std::vector<std::string>> names = ParseCifarClassNames(*text, files.meta);
    if (!names.ok()) return names.status();
    data.class_names = *std::move(names);
  }
  absl::StatusOr<RawImages> train = ReadSplit(files.train, limit_train);
  if (!train.ok()) return train.status();
  absl::StatusOr<RawImages> val = ReadSplit({files.val}, limit_val);
  if (!val.ok()) return val.status();
  data.train = *std::move(train);
  data.val = *std::move(val);
  return data;
}

}  // namespace compress::pipeline
