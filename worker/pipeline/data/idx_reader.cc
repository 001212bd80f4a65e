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

// A gzip stream of an IDX file inflates to at most this many bytes: real data sets are a few GiB
// at most.
constexpr uint64_t kMaxInflatedBytes = uint64_t{8} << 30;
// Deflate codes a run of 258 bytes in no fewer than 2 bits, so a stream inflates to at most
// 1032 times its size (zlib's FAQ); the gzip header and trailer add some slack.
constexpr uint64_t kMaxDeflateRatio = 1032;
constexpr uint64_t kDeflateSlack = 4096;

bool IsGzip(const std::string& file) {
  return file.size() >= 2 && static_cast<unsigned char>(file[0]) == 0x1f &&
         static_cast<unsigned char>(file[1]) == 0x8b;
}

// Inflates a gzip stream in pieces into caller-given buffers.
class Inflater {
 public:
  Inflater(const std::string& file, const std::string& path) : file_(file), path_(path) {
    std::memset(&stream_, 0, sizeof(stream_));
  }
  ~Inflater() {
    if (initialised_) inflateEnd(&stream_);
  }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  absl::Status Init() {
    if (file_.size() > std::numeric_limits<uInt>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("gzip file ", path_, " is larger than 4 GiB compressed; store it inflated"));
    }
    if (inflateInit2(&stream_, 16 + MAX_WBITS) != Z_OK) {
      return absl::InternalError(absl::StrCat("zlib inflateInit2 failed for ", path_));
    }
    initialised_ = true;
    // zlib reads next_in without writing to it.
    stream_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(file_.data()));
    stream_.avail_in = static_cast<uInt>(file_.size());
    return absl::OkStatus();
  }

  // Inflates into [out, out + size) until it is full or the stream ends (`ended()`); returns the
  // bytes written. DATA_LOSS for a truncated or corrupt stream.
  absl::StatusOr<uint64_t> Fill(char* out, uint64_t size) {
    uint64_t written = 0;
    while (written < size && !ended_) {
      const uInt chunk =
          static_cast<uInt>(std::min<uint64_t>(size - written, std::numeric_limits<uInt>::max()));
      stream_.next_out = reinterpret_cast<Bytef*>(out + written);
      stream_.avail_out = chunk;
      const int rc = inflate(&stream_, Z_NO_FLUSH);
      written += chunk - stream_.avail_out;
      if (rc == Z_STREAM_END) {
        ended_ = true;
      } else if (rc == Z_OK || rc == Z_BUF_ERROR) {
        // inflate stops when its input is used up or its output is full: room left for output
        // means the input ended before the stream did.
        if (stream_.avail_out > 0) {
          return absl::DataLossError(absl::StrCat("truncated gzip stream in ", path_, " (",
                                                  file_.size(), " compressed bytes, ended after ",
                                                  stream_.total_out, " decompressed bytes)"));
        }
      } else {
        return absl::DataLossError(absl::StrCat("corrupt gzip data in ", path_,
                                                " at compressed offset ", stream_.total_in, ": ",
                                                stream_.msg != nullptr ? stream_.msg : zError(rc)));
      }
    }
    return written;
  }

  bool ended() const { return ended_; }

 private:
  const std::string& file_;
  const std::string& path_;
  z_stream stream_;
  bool initialised_ = false;
  bool ended_ = false;
};

std::string DimsText(const std::vector<uint32_t>& shape) {
  std::string text;
  for (size_t d = 0; d < shape.size(); ++d) absl::StrAppend(&text, d == 0 ? "" : " x ", shape[d]);
  return text;
}

// The contents of an IDX file from its bytes, after checking its magic number and reading its
// header's `dims` sizes into `shape`: `file` itself, or, when it carries the gzip magic, its
// inflated form, held in `inflated`. A gzip stream is inflated header first; the rest goes into
// a buffer of exactly the size the header announces (one byte per element), and a stream that
// inflates to more or less is DATA_LOSS, so that a small file cannot take more memory than its
// header claims. `path` names the file in messages.
absl::StatusOr<absl::string_view> ParseIdxHeader(const std::string& file, const std::string& path,
                                                 uint32_t magic, size_t dims,
                                                 std::vector<uint32_t>& shape,
                                                 std::string& inflated) {
  const size_t header = 4 + 4 * dims;
  const bool gzip = IsGzip(file);
  Inflater inflater(file, path);
  char header_bytes[4 + 4 * 4];
  absl::string_view head(file);
  if (gzip) {
    if (absl::Status status = inflater.Init(); !status.ok()) return status;
    absl::StatusOr<uint64_t> got = inflater.Fill(header_bytes, header);
    if (!got.ok()) return got.status();
    head = absl::string_view(header_bytes, *got);
  }
  if (head.size() < header) {
    return absl::DataLossError(
        absl::StrCat("truncated IDX header in ", path, ": ", head.size(), " bytes, need ", header));
  }
  const uint32_t found = BigEndian32(head, 0);
  if (found != magic) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad IDX magic number in ", path, ": 0x", absl::Hex(found, absl::kZeroPad8),
                     ", expected 0x", absl::Hex(magic, absl::kZeroPad8)));
  }
  shape.clear();
  for (size_t d = 0; d < dims; ++d) shape.push_back(BigEndian32(head, 4 + 4 * d));
  if (!gzip) return head;

  // The size the header announces, checked against the cap before it is multiplied out.
  const bool empty = std::find(shape.begin(), shape.end(), 0u) != shape.end();
  uint64_t elements = empty ? 0 : 1;
  for (size_t d = 0; d < dims && !empty; ++d) {
    if (elements > (kMaxInflatedBytes - header) / shape[d]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "gzip file ", path, ": its IDX header announces ", header, " + ", DimsText(shape),
          " bytes, more than the ", kMaxInflatedBytes >> 30, " GiB limit"));
    }
    elements *= shape[d];
  }
  const uint64_t expected = header + elements;
  const uint64_t most = kMaxDeflateRatio * file.size() + kDeflateSlack;
  if (expected > most) {
    return absl::DataLossError(
        absl::StrCat("gzip file ", path, ": its IDX header announces ", expected, " bytes (",
                     header, " + ", DimsText(shape), "), more than its ", file.size(),
                     " compressed bytes can inflate to (", most, "); truncated?"));
  }
  inflated.resize(expected);
  std::memcpy(inflated.data(), header_bytes, header);
  absl::StatusOr<uint64_t> got = inflater.Fill(inflated.data() + header, expected - header);
  if (!got.ok()) return got.status();
  uint64_t total = header + *got;
  if (inflater.ended() && total < expected) {
    return absl::DataLossError(absl::StrCat("gzip file ", path, " inflates to ", total,
                                            " bytes but its IDX header announces ", expected, " (",
                                            header, " + ", DimsText(shape), ")"));
  }
  // Full: the stream must end here. What it holds beyond is counted in a small buffer, up to a
  // bound, to say how much more there is.
  constexpr uint64_t kCountBeyond = uint64_t{64} << 20;
  char scratch[64 * 1024];
  while (!inflater.ended() && total < expected + kCountBeyond) {
    got = inflater.Fill(scratch, sizeof(scratch));
    if (!got.ok()) return got.status();
    total += *got;
  }
  if (total > expected) {
    return absl::DataLossError(absl::StrCat("gzip file ", path, " inflates to ",
                                            inflater.ended() ? "" : "at least ", total,
                                            " bytes but its IDX header announces ", expected, " (",
                                            header, " + ", DimsText(shape), ")"));
  }
  return absl::string_view(inflated);
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
  // Bytes past the last record mean the file is not what its header says (two files run
  // together, a wrong header): refused like a gzip stream that inflates to more.
  const int64_t images_size = image_header + count * image_bytes;
  if (static_cast<int64_t>(images->size()) > images_size) {
    return absl::DataLossError(absl::StrCat(
        "IDX images file ", images_path, " has ", images->size(), " bytes but its header announces ",
        images_size, " (", image_header, " + ", count, " x ", rows, " x ", cols, ")"));
  }
  if (have_labels > count) {
    return absl::DataLossError(absl::StrCat("IDX labels file ", labels_path, " has ",
                                            labels->size(), " bytes but its header announces ",
                                            label_header + count, " (", label_header, " + ", count,
                                            ")"));
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
