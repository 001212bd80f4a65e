#include "worker/pipeline/data/dataset_cache.h"

#include <sys/stat.h>
#include <unistd.h>
// zlib declares a global function named compress, which clashes with our namespace.
#define compress zlib_compress
#include <zlib.h>
#undef compress

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "worker/events/durable_file.h"

namespace compress::pipeline {
namespace {

constexpr char kMagic[8] = {'C', 'M', 'P', 'D', 'S', 'C', '0', '1'};
// Upper bound for any single header field (class names, key text), against corrupt lengths.
constexpr uint64_t kMaxHeaderField = uint64_t{1} << 30;

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

// Sequential reader that tracks the CRC and the bytes left, so that no length read from a
// corrupt file can make it allocate or read past the end.
class CacheReader {
 public:
  CacheReader(std::FILE* file, uint64_t size, std::string path)
      : file_(file), left_(size), path_(std::move(path)) {}

  absl::Status Read(void* dst, uint64_t n, bool with_crc = true) {
    if (n > left_) {
      return absl::DataLossError(absl::StrCat("truncated cache file ", path_, " at offset ",
                                              offset_, ": need ", n, " more bytes, ", left_,
                                              " left"));
    }
    if (n > 0 && std::fread(dst, 1, n, file_) != n) {
      return absl::DataLossError(
          absl::StrCat("read error in cache file ", path_, " at offset ", offset_));
    }
    if (with_crc) crc_ = crc32_z(crc_, static_cast<const Bytef*>(dst), n);
    left_ -= n;
    offset_ += n;
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> ReadU64() {
    uint64_t v = 0;
    if (absl::Status s = Read(&v, sizeof(v)); !s.ok()) return s;
    return v;
  }

  absl::StatusOr<std::string> ReadString(absl::string_view what) {
    absl::StatusOr<uint64_t> n = ReadU64();
    if (!n.ok()) return n.status();
    if (*n > kMaxHeaderField || *n > left_) {
      return absl::DataLossError(absl::StrCat("corrupt ", what, " length ", *n, " in cache file ",
                                              path_, " at offset ", offset_ - 8));
    }
    std::string s(*n, '\0');
    if (absl::Status st = Read(s.data(), *n); !st.ok()) return st;
    return s;
  }

  uint64_t left() const { return left_; }
  uint64_t offset() const { return offset_; }
  uLong crc() const { return crc_; }
  const std::string& path() const { return path_; }

 private:
  std::FILE* file_;
  uint64_t left_;
  uint64_t offset_ = 0;
  uLong crc_ = crc32_z(0, nullptr, 0);
  std::string path_;
};

absl::Status ReadSplit(CacheReader& in, int64_t num_classes, torch::Tensor& images,
                       torch::Tensor& labels) {
  uint64_t dims[4];
  for (uint64_t& d : dims) {
    absl::StatusOr<uint64_t> v = in.ReadU64();
    if (!v.ok()) return v.status();
    d = *v;
  }
  const uint64_t count = dims[0];
  if (dims[1] == 0 || dims[1] > 4 || dims[2] == 0 || dims[2] > 65535 || dims[3] == 0 ||
      dims[3] > 65535) {
    return absl::DataLossError(absl::StrCat("corrupt image shape in cache file ", in.path(),
                                            " at offset ", in.offset() - 32));
  }
  const uint64_t image_bytes = dims[1] * dims[2] * dims[3];
  if (count > in.left() / (image_bytes + 8)) {
    return absl::DataLossError(absl::StrCat("cache file ", in.path(), " claims ", count,
                                            " images but has only ", in.left(), " bytes left"));
  }
  images = torch::empty({static_cast<int64_t>(count), static_cast<int64_t>(dims[1]),
                         static_cast<int64_t>(dims[2]), static_cast<int64_t>(dims[3])},
                        torch::kUInt8);
  labels = torch::empty({static_cast<int64_t>(count)}, torch::kInt64);
  if (absl::Status s = in.Read(images.data_ptr<uint8_t>(), count * image_bytes); !s.ok()) {
    return s;
  }
  if (absl::Status s = in.Read(labels.data_ptr<int64_t>(), count * 8); !s.ok()) return s;
  const int64_t* l = labels.data_ptr<int64_t>();
  for (uint64_t i = 0; i < count; ++i) {
    if (l[i] < 0 || l[i] >= num_classes) {
      return absl::DataLossError(absl::StrCat("label ", l[i], " out of range in cache file ",
                                              in.path(), " at record ", i));
    }
  }
  return absl::OkStatus();
}

class CacheWriter {
 public:
  explicit CacheWriter(std::FILE* file) : file_(file) {}
  bool Write(const void* src, uint64_t n) {
    crc_ = crc32_z(crc_, static_cast<const Bytef*>(src), n);
    return n == 0 || std::fwrite(src, 1, n, file_) == n;
  }
  bool WriteU64(uint64_t v) { return Write(&v, sizeof(v)); }
  bool WriteString(const std::string& s) { return WriteU64(s.size()) && Write(s.data(), s.size()); }
  uLong crc() const { return crc_; }

 private:
  std::FILE* file_;
  uLong crc_ = crc32_z(0, nullptr, 0);
};

bool WriteSplit(CacheWriter& out, const torch::Tensor& images, const torch::Tensor& labels) {
  const torch::Tensor img = images.contiguous();
  const torch::Tensor lab = labels.contiguous();
  for (int d = 0; d < 4; ++d) {
    if (!out.WriteU64(static_cast<uint64_t>(img.size(d)))) return false;
  }
  return out.Write(img.data_ptr<uint8_t>(), static_cast<uint64_t>(img.numel())) &&
         out.Write(lab.data_ptr<int64_t>(), static_cast<uint64_t>(lab.numel()) * 8);
}

}  // namespace

std::string StableHashHex(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return absl::StrCat(absl::Hex(h, absl::kZeroPad16));
}

absl::StatusOr<DatasetSplits> ReadDatasetCache(const std::string& path, const std::string& key) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("no cache file ", path));
  }
  File file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open cache file ", path, ": ", std::strerror(errno)));
  }
  CacheReader in(file.get(), static_cast<uint64_t>(st.st_size), path);
  char magic[8];
  if (absl::Status s = in.Read(magic, sizeof(magic), /*with_crc=*/false); !s.ok()) return s;
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError(absl::StrCat("bad magic in cache file ", path));
  }
  absl::StatusOr<std::string> stored_key = in.ReadString("key");
  if (!stored_key.ok()) return stored_key.status();
  if (*stored_key != key) {
    return absl::FailedPreconditionError(
        absl::StrCat("cache file ", path, " was written for different sources or options"));
  }
  DatasetSplits splits;
  absl::StatusOr<uint64_t> num_classes = in.ReadU64();
  if (!num_classes.ok()) return num_classes.status();
  absl::StatusOr<uint64_t> num_names = in.ReadU64();
  if (!num_names.ok()) return num_names.status();
  if (*num_classes == 0 || *num_classes > kMaxHeaderField || *num_names != *num_classes) {
    return absl::DataLossError(absl::StrCat("corrupt class count in cache file ", path));
  }
  splits.num_classes = static_cast<int64_t>(*num_classes);
  for (uint64_t i = 0; i < *num_names; ++i) {
    absl::StatusOr<std::string> name = in.ReadString("class name");
    if (!name.ok()) return name.status();
    splits.class_names.push_back(*std::move(name));
  }
  if (absl::Status s = ReadSplit(in, splits.num_classes, splits.train_images, splits.train_labels);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ReadSplit(in, splits.num_classes, splits.val_images, splits.val_labels);
      !s.ok()) {
    return s;
  }
  const uLong computed = in.crc();
  uint32_t stored_crc = 0;
  if (absl::Status s = in.Read(&stored_crc, sizeof(stored_crc), /*with_crc=*/false); !s.ok()) {
    return s;
  }
  if (in.left() != 0) {
    return absl::DataLossError(
        absl::StrCat("cache file ", path, " has ", in.left(), " unexpected trailing bytes"));
  }
  if (stored_crc != static_cast<uint32_t>(computed)) {
    return absl::DataLossError(absl::StrCat("CRC mismatch in cache file ", path));
  }
  for (int d = 1; d < 4; ++d) {
    if (splits.train_images.size(d) != splits.val_images.size(d)) {
      return absl::DataLossError(absl::StrCat("train and val shapes differ in cache file ", path));
    }
  }
  splits.channels = splits.train_images.size(1);
  splits.height = splits.train_images.size(2);
  splits.width = splits.train_images.size(3);
  return splits;
}

absl::Status WriteDatasetCache(const std::string& path, const std::string& key,
                               const DatasetSplits& splits) {
  const std::filesystem::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) {
    std::filesystem::create_directories(target.parent_path(), ec);
    if (ec) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot create cache directory ", target.parent_path().string(), ": ", ec.message()));
    }
  }
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = AtomicWriteTemporary(path, ::getpid(), counter++);
  File file(std::fopen(tmp.c_str(), "wb"));
  if (file == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create cache file ", tmp, ": ", std::strerror(errno)));
  }
  bool ok = std::fwrite(kMagic, 1, sizeof(kMagic), file.get()) == sizeof(kMagic);
  CacheWriter out(file.get());
  ok = ok && out.WriteString(key) && out.WriteU64(static_cast<uint64_t>(splits.num_classes)) &&
       out.WriteU64(splits.class_names.size());
  for (const std::string& name : splits.class_names) ok = ok && out.WriteString(name);
  ok = ok && WriteSplit(out, splits.train_images, splits.train_labels) &&
       WriteSplit(out, splits.val_images, splits.val_labels);
  const uint32_t crc = static_cast<uint32_t>(out.crc());
  ok = ok && std::fwrite(&crc, 1, sizeof(crc), file.get()) == sizeof(crc);
  ok = ok && std::fflush(file.get()) == 0 && ::fsync(::fileno(file.get())) == 0;
  const int saved_errno = errno;
  ok = (std::fclose(file.release()) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    return absl::DataLossError(
        absl::StrCat("cannot write cache file ", tmp, ": ", std::strerror(saved_errno)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    std::remove(tmp.c_str());
    return absl::FailedPreconditionError(
        absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(rename_errno)));
  }
  return absl::OkStatus();
}

}  // namespace compress::pipeline
