#include "worker/pipeline/data/idx_reader.h"

// zlib declares a global function named compress, which clashes with our namespace.
#define compress zlib_compress
#include <zlib.h>
#undef compress

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "worker/pipeline/data/source_files.h"

namespace compress::pipeline {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;  // unsigned byte, 3 dimensions
constexpr uint32_t kLabelsMagic = 0x00000801;  // unsigned byte, 1 dimension

uint32_t BigEndian32(absl::string_view bytes, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + offset);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// The contents of an IDX file from its bytes: `file` itself, or, when it carries the gzip magic,
// its inflated form, held in `inflated`. `path` names the file in messages.
absl::StatusOr<absl::string_view> MaybeGunzip(const std::string& file, const std::string& path,
                                              std::string& inflated) {
  if (file.size() < 2 || static_cast<unsigned char>(file[0]) != 0x1f ||
      static_cast<unsigned char>(file[1]) != 0x8b) {
    return absl::string_view(file);
  }
  // An IDX file of a real data set inflates to a few GiB at most; a gzip stream can claim a
  // thousand times its size.
  constexpr size_t kMaxInflatedBytes = size_t{8} << 30;
  if (file.size() > std::numeric_limits<uInt>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("gzip file ", path, " is larger than 4 GiB compressed; store it inflated"));
  }
  z_stream stream;
  std::memset(&stream, 0, sizeof(stream));
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) {
    return absl::InternalError(absl::StrCat("zlib inflateInit2 failed for ", path));
  }
  std::string& out = inflated;
  out.resize(file.size() * 4 + 4096);
  // zlib reads next_in without writing to it.
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(file.data()));
  stream.avail_in = static_cast<uInt>(file.size());
  int rc = Z_OK;
  while (true) {
    if (stream.total_out == out.size()) {
      if (out.size() >= kMaxInflatedBytes) {
        inflateEnd(&stream);
        return absl::InvalidArgumentError(absl::StrCat(
            "gzip file ", path, " inflates to more than ", kMaxInflatedBytes >> 30, " GiB"));
      }
      out.resize(std::min(out.size() * 2, kMaxInflatedBytes));
    }
    stream.next_out = reinterpret_cast<Bytef*>(out.data() + stream.total_out);
    stream.avail_out = static_cast<uInt>(
        std::min<size_t>(out.size() - stream.total_out, std::numeric_limits<uInt>::max()));
    rc = inflate(&stream, Z_NO_FLUSH);
    if (rc == Z_STREAM_END) break;
    if (rc == Z_BUF_ERROR && stream.avail_in == 0) break;  // input ended early
    if (rc != Z_OK && rc != Z_BUF_ERROR) break;
  }
  const uLong consumed = stream.total_in;
  const std::string zmsg = stream.msg != nullptr ? stream.msg : "";
  out.resize(stream.total_out);
  inflateEnd(&stream);
  if (rc != Z_STREAM_END) {
    if (rc == Z_BUF_ERROR || rc == Z_OK) {
      return absl::DataLossError(absl::StrCat("truncated gzip stream in ", path, " (", file.size(),
                                              " compressed bytes, ended after ", out.size(),
                                              " decompressed bytes)"));
    }
    return absl::DataLossError(absl::StrCat("corrupt gzip data in ", path, " at compressed offset ",
                                            consumed, ": ", zmsg));
  }
  return absl::string_view(out);
}

// The contents of an IDX file from its bytes (see MaybeGunzip), after checking its magic number
// and reading its header's `dims` sizes into `shape`.
absl::StatusOr<absl::string_view> ParseIdxHeader(const std::string& file, const std::string& path,
                                                 uint32_t magic, size_t dims,
                                                 std::vector<uint32_t>& shape,
                                                 std::string& inflated) {
  absl::StatusOr<absl::string_view> bytes = MaybeGunzip(file, path, inflated);
  if (!bytes.ok()) return bytes.status();
  const size_t header = 4 + 4 * dims;
  if (bytes->size() < header) {
    return absl::DataLossError(absl::StrCat("truncated IDX header in ", path, ": ", bytes->size(),
                                            " bytes, need ", header));
  }
  const uint32_t found = BigEndian32(*bytes, 0);
  if (found != magic) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad IDX magic number in ", path, ": 0x", absl::Hex(found, absl::kZeroPad8),
                     ", expected 0x", absl::Hex(magic, absl::kZeroPad8)));
  }
  shape.clear();
  for (size_t d = 0; d < dims; ++d) shape.push_back(BigEndian32(*bytes, 4 + 4 * d));
  return bytes;
}

}  // namespace

absl::StatusOr<IdxFiles> LocateIdxFiles(const std::string& dir) {
  if (absl::Status s = CheckDirectory(dir, "Fashion-MNIST"); !s.ok()) return s;
  auto locate = [&](const char* base) -> absl::StatusOr<std::string> {
    for (const std::string& name : {absl::StrCat(base, ".gz"), std::string(base)}) {
      const std::string path = JoinPath(dir, name);
      if (StatSourceFile(path, "IDX file").ok()) return path;
    }
    return absl::NotFoundError(absl::StrCat("IDX file not found: ", JoinPath(dir, base), "[.gz]"));
  };
  IdxFiles files;
  absl::StatusOr<std::string> path = locate("train-images-idx3-ubyte");
  if (!path.ok()) return path.status();
  files.train_images = *path;
  if (path = locate("train-labels-idx1-ubyte"); !path.ok()) return path.status();
  files.train_labels = *path;
  if (path = locate("t10k-images-idx3-ubyte"); !path.ok()) return path.status();
  files.val_images = *path;
  if (path = locate("t10k-labels-idx1-ubyte"); !path.ok()) return path.status();
  files.val_labels = *path;
  return files;
}

absl::StatusOr<std::vector<SourceFile>> IdxSources(const IdxFiles& files) {
  std::vector<SourceFile> sources;
  for (const std::string* path :
       {&files.train_images, &files.train_labels, &files.val_images, &files.val_labels}) {
    absl::StatusOr<SourceFile> file = StatSourceFile(*path, "IDX file");
    if (!file.ok()) return file.status();
    sources.push_back(*std::move(file));
  }
  return sources;
}

absl::StatusOr<RawImages> ReadIdxSplit(const std::string& images_path,
                                       const std::string& labels_path, int64_t limit,
                                       int64_t num_classes) {
  absl::StatusOr<std::string> images = ReadFileBytes(images_path, "IDX file");
  if (!images.ok()) return images.status();
  absl::StatusOr<std::string> labels = ReadFileBytes(labels_path, "IDX file");
  if (!labels.ok()) return labels.status();
  return ParseIdxSplit(*images, images_path, *labels, labels_path, limit, num_classes);
}

absl::StatusOr<RawImages> ParseIdxSplit(const std::string& images_file,
                                        const std::string& images_path,
                                        const std::string& labels_file,
                                        const std::string& labels_path, int64_t limit,
                                        int64_t num_classes) {
  std::vector<uint32_t> image_shape;
  std::string inflated_images;
  absl::StatusOr<absl::string_view> images =
      ParseIdxHeader(images_file, images_path, kImagesMagic, 3, image_shape, inflated_images);
  if (!images.ok()) return images.status();
  std::vector<uint32_t> label_shape;
  std::string inflated_labels;
  absl::StatusOr<absl::string_view> labels =
      ParseIdxHeader(labels_file, labels_path, kLabelsMagic, 1, label_shape, inflated_labels);
  if (!labels.ok()) return labels.status();

  const int64_t count = image_shape[0];
  const int64_t rows = image_shape[1];
  const int64_t cols = image_shape[2];
  if (rows == 0 || cols == 0 || rows > 65535 || cols > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("implausible image size ", rows, "x", cols, " in ", images_path));
  }
  if (label_shape[0] != count) {
    return absl::InvalidArgumentError(absl::StrCat("mismatched counts: ", images_path, " has ",
                                                   count, " images but ", labels_path, " has ",
                                                   label_shape[0], " labels"));
  }
  const int64_t image_bytes = rows * cols;
  const int64_t image_header = 16;
  const int64_t label_header = 8;
  const int64_t have_images = (static_cast<int64_t>(images->size()) - image_header) / image_bytes;
  if (have_images < count) {
    return absl::DataLossError(
        absl::StrCat("truncated IDX images file ", images_path, ": header says ", count,
                     " images of ", rows, "x", cols, " but record ", have_images, " at offset ",
                     image_header + have_images * image_bytes, " is incomplete (file has ",
                     images->size(), " bytes)"));
  }
  const int64_t have_labels = static_cast<int64_t>(labels->size()) - label_header;
  if (have_labels < count) {
    return absl::DataLossError(absl::StrCat(
        "truncated IDX labels file ", labels_path, ": header says ", count, " labels but record ",
        have_labels, " at offset ", label_header + have_labels, " is missing"));
  }

  RawImages out;
  out.count = (limit > 0 && limit < count) ? limit : count;
  out.channels = 1;
  out.height = static_cast<int>(rows);
  out.width = static_cast<int>(cols);
  out.labels.resize(out.count);
  for (int64_t i = 0; i < out.count; ++i) {
    const int64_t label = static_cast<unsigned char>((*labels)[label_header + i]);
    if (label >= num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("label ", label, " out of range [0, ", num_classes, ") in ", labels_path,
                       " at record ", i, " (offset ", label_header + i, ")"));
    }
    out.labels[i] = label;
  }
  const auto* first = reinterpret_cast<const uint8_t*>(images->data()) + image_header;
  out.pixels.assign(first, first + out.count * image_bytes);
  return out;
}

absl::StatusOr<RawDataset> ReadIdxDataset(const IdxFiles& files, int64_t limit_train,
                                          int64_t limit_val) {
  RawDataset data;
  data.num_classes = 10;
  data.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  absl::StatusOr<RawImages> train =
      ReadIdxSplit(files.train_images, files.train_labels, limit_train, data.num_classes);
  if (!train.ok()) return train.status();
  absl::StatusOr<RawImages> val =
      ReadIdxSplit(files.val_images, files.val_labels, limit_val, data.num_classes);
  if (!val.ok()) return val.status();
  if (train->height != val->height || train->width != val->width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train images (", files.train_images, ") are ", train->height, "x", train->width,
        " but validation images (", files.val_images, ") are ", val->height, "x", val->width));
  }
  data.train = *std::move(train);
  data.val = *std::move(val);
  return data;
}

}  // namespace compress::pipeline
