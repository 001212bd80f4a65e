#include "worker/pipeline/data/image_folder_reader.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <limits>
#include <map>
#include <new>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "worker/pipeline/data/image_ops.h"
#include "worker/pipeline/data/jpeg_decoder.h"
#include "worker/pipeline/data/source_files.h"

namespace compress::pipeline {
namespace {

// Largest image or list file read. The size is checked before reading, so a huge or sparse file
// is refused instead of exhausting memory.
constexpr uint64_t kMaxImageFileBytes = uint64_t{64} << 20;

// Reads a whole image (or list) file; INVALID_ARGUMENT, before reading, for one over the cap.
absl::StatusOr<std::string> ReadCappedFile(const std::string& path, absl::string_view what) {
  absl::StatusOr<SourceFile> file = StatSourceFile(path, what);
  if (!file.ok()) return file.status();
  if (file->size > kMaxImageFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, " is ", file->size,
                                                   " bytes, more than the ", kMaxImageFileBytes,
                                                   " (64 MiB) accepted"));
  }
  return ReadFileBytes(path, what);
}

// Whether `name`, read from a list file, names an entry of one directory: not empty, not "." or
// "..", without '/' (or a NUL byte), so that the path built from it stays under the data root.
bool IsPlainName(absl::string_view name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(absl::string_view("/\0", 2)) == absl::string_view::npos;
}

// JPEG files of `dir`, as full paths. UNIMPLEMENTED for a PNG file (not decoded).
absl::StatusOr<std::vector<std::string>> JpegFilesIn(const std::string& dir) {
  absl::StatusOr<std::vector<std::string>> names = ListDirectory(dir, /*directories=*/false);
  if (!names.ok()) return names.status();
  std::vector<std::string> paths;
  for (const std::string& name : *names) {
    const std::string lower = absl::AsciiStrToLower(name);
    if (absl::EndsWith(lower, ".jpg") || absl::EndsWith(lower, ".jpeg")) {
      paths.push_back(JoinPath(dir, name));
    } else if (absl::EndsWith(lower, ".png")) {
      return absl::UnimplementedError(
          absl::StrCat("PNG images are not supported (only JPEG): ", JoinPath(dir, name)));
    }
  }
  return paths;
}

// Appends files of every class round-robin, at most `limit` in all (0 = all).
void Interleave(const std::vector<std::vector<std::string>>& per_class, int64_t limit,
                std::vector<std::string>& paths, std::vector<int64_t>& labels) {
  size_t longest = 0;
  for (const auto& files : per_class) longest = std::max(longest, files.size());
  for (size_t k = 0; k < longest; ++k) {
    for (size_t c = 0; c < per_class.size(); ++c) {
      if (k >= per_class[c].size()) continue;
      if (limit > 0 && static_cast<int64_t>(paths.size()) >= limit) return;
      paths.push_back(per_class[c][k]);
      labels.push_back(static_cast<int64_t>(c));
    }
  }
}

// Decodes one split into `out` (already sized); returns the first failure by index.
absl::Status DecodeSplit(const std::vector<std::string>& paths, absl::string_view split, int size,
                         int height, int width, int channels, int threads,
                         const std::atomic<bool>* cancel, RawImages& out) {
  const int64_t count = static_cast<int64_t>(paths.size());
  auto cancelled_after = [&](int64_t decoded) {
    return absl::CancelledError(absl::StrCat("cancelled while decoding the ", split, " images (",
                                             decoded, " of ", count, " decoded)"));
  };
  if (cancel != nullptr && cancel->load()) return cancelled_after(0);
  const int out_h = size > 0 ? size : height;
  const int out_w = size > 0 ? size : width;
  const int64_t image_bytes = int64_t{channels} * out_h * out_w;
  out.count = count;
  out.channels = channels;
  out.height = out_h;
  out.width = out_w;
  out.pixels.assign(static_cast<size_t>(count * image_bytes), 0);

  std::vector<absl::Status> errors(count);
  // Lowest failing index so far; images after it are skipped, images before it are still
  // decoded, so the error reported is always the first bad file whatever the thread count.
  std::atomic<int64_t> first_error{std::numeric_limits<int64_t>::max()};
  std::atomic<bool> cancelled{false};
  std::atomic<int64_t> decoded{0};
  auto decode_one = [&](int64_t i) -> absl::Status {
    absl::StatusOr<std::string> bytes = ReadCappedFile(paths[i], "image file");
    if (!bytes.ok()) return bytes.status();
    absl::StatusOr<DecodedImage> image = DecodeJpeg(*bytes, paths[i], channels);
    if (!image.ok()) return image.status();
    uint8_t* dst = out.pixels.data() + i * image_bytes;
    if (size > 0) {
      ResizeImage(image->pixels.data(), image->height, image->width, channels,
                  /*row_stride=*/int64_t{image->width} * channels, /*pixel_stride=*/channels,
                  /*channel_stride=*/1, size, dst);
    } else {
      if (image->height != height || image->width != width) {
        return absl::InvalidArgumentError(absl::StrCat(
            "image ", paths[i], " is ", image->height, "x", image->width, " but the data set's ",
            "images are ", height, "x", width, "; set image_size to resize them"));
      }
      HwcToChw(image->pixels.data(), height, width, channels, dst);
    }
    return absl::OkStatus();
  };
  auto work = [&](int64_t start, int64_t step) {
    for (int64_t i = start; i < count; i += step) {
      if (i > first_error.load(std::memory_order_relaxed)) return;
      if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
        cancelled.store(true, std::memory_order_relaxed);
        return;
      }
      // An exception must not leave a worker thread (std::terminate): it becomes the file's error.
      absl::Status s;
      try {
        s = decode_one(i);
      } catch (const std::bad_alloc& e) {
        s = absl::ResourceExhaustedError(
            absl::StrCat("out of memory decoding image ", paths[i], ": ", e.what()));
      } catch (const std::exception& e) {
        s = absl::InternalError(absl::StrCat("cannot decode image ", paths[i], ": ", e.what()));
      } catch (...) {
        s = absl::InternalError(absl::StrCat("cannot decode image ", paths[i]));
      }
      if (s.ok()) decoded.fetch_add(1, std::memory_order_relaxed);
      if (!s.ok()) {
        errors[i] = std::move(s);
        int64_t seen = first_error.load();
        while (i < seen && !first_error.compare_exchange_weak(seen, i)) {
        }
        return;
      }
    }
  };
  const int n = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, count)));
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) pool.emplace_back(work, t, n);
  work(0, n);
  for (std::thread& th : pool) th.join();
  if (cancelled.load()) return cancelled_after(decoded.load());
  const int64_t bad = first_error.load();
  if (bad != std::numeric_limits<int64_t>::max()) return errors[bad];
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ImageListing> ListImageFolder(const std::string& dir, int64_t limit_train,
                                             int64_t limit_val) {
  if (absl::Status s = CheckDirectory(dir, "ImageFolder"); !s.ok()) return s;
  const std::string train_dir = JoinPath(dir, "train");
  const std::string val_dir = JoinPath(dir, "val");
  if (absl::Status s = CheckDirectory(train_dir, "ImageFolder train"); !s.ok()) return s;
  if (absl::Status s = CheckDirectory(val_dir, "ImageFolder val"); !s.ok()) return s;
  absl::StatusOr<std::vector<std::string>> classes = ListDirectory(train_dir, true);
  if (!classes.ok()) return classes.status();
  if (classes->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ImageFolder train directory has no class subdirectories: ", train_dir));
  }
  std::map<std::string, int64_t> label_of;
  for (size_t c = 0; c < classes->size(); ++c) label_of[(*classes)[c]] = static_cast<int64_t>(c);

  ImageListing listing;
  listing.class_names = *classes;
  std::vector<std::vector<std::string>> train_files;
  for (const std::string& name : *classes) {
    absl::StatusOr<std::vector<std::string>> files = JpegFilesIn(JoinPath(train_dir, name));
    if (!files.ok()) return files.status();
    if (files->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ImageFolder class has no JPEG images: ", JoinPath(train_dir, name)));
    }
    train_files.push_back(*std::move(files));
  }
  Interleave(train_files, limit_train, listing.train_paths, listing.train_labels);

  absl::StatusOr<std::vector<std::string>> val_classes = ListDirectory(val_dir, true);
  if (!val_classes.ok()) return val_classes.status();
  std::vector<std::vector<std::string>> val_files(classes->size());
  for (const std::string& name : *val_classes) {
    auto it = label_of.find(name);
    if (it == label_of.end()) {
      return absl::InvalidArgumentError(absl::StrCat("ImageFolder validation class ",
                                                     JoinPath(val_dir, name),
                                                     " has no counterpart in ", train_dir));
    }
    absl::StatusOr<std::vector<std::string>> files = JpegFilesIn(JoinPath(val_dir, name));
    if (!files.ok()) return files.status();
    val_files[it->second] = *std::move(files);
  }
  Interleave(val_files, limit_val, listing.val_paths, listing.val_labels);
  if (listing.val_paths.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ImageFolder validation directory has no JPEG images: ", val_dir));
  }
  return listing;
}

absl::StatusOr<ImageListing> ListTinyImageNet(const std::string& dir, int64_t limit_train,
                                              int64_t limit_val) {
  if (absl::Status s = CheckDirectory(dir, "Tiny-ImageNet"); !s.ok()) return s;
  ImageListing listing;
  listing.default_channels = 3;  // a few Tiny-ImageNet images are greyscale
  const std::string wnids_path = JoinPath(dir, "wnids.txt");
  absl::StatusOr<std::string> wnids_text = ReadCappedFile(wnids_path, "Tiny-ImageNet class list");
  if (!wnids_text.ok()) return wnids_text.status();
  listing.index_files.push_back(wnids_path);
  std::vector<std::string> wnids;
  std::map<std::string, int64_t> label_of;
  int wnid_line = 0;
  for (const std::string& line : SplitLines(*wnids_text)) {
    ++wnid_line;
    const std::string wnid(absl::StripAsciiWhitespace(line));
    if (wnid.empty()) continue;
    if (!IsPlainName(wnid)) {
      return absl::InvalidArgumentError(absl::StrCat("class id \"", absl::CHexEscape(wnid),
                                                     "\" at line ", wnid_line, " of ", wnids_path,
                                                     " is not a plain directory name"));
    }
    if (!label_of.emplace(wnid, static_cast<int64_t>(wnids.size())).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("duplicate class id ", wnid, " in ", wnids_path));
    }
    wnids.push_back(wnid);
  }
  if (wnids.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no class ids in ", wnids_path));
  }

  // Class names from words.txt when present.
  listing.class_names = wnids;
  const std::string words_path = JoinPath(dir, "words.txt");
  if (StatSourceFile(words_path, "").ok()) {
    absl::StatusOr<std::string> words = ReadCappedFile(words_path, "Tiny-ImageNet words file");
    if (!words.ok()) return words.status();
    listing.index_files.push_back(words_path);
    for (const std::string& line : SplitLines(*words)) {
      std::vector<std::string> fields = absl::StrSplit(line, absl::MaxSplits('\t', 1));
      if (fields.size() != 2) continue;
      auto it = label_of.find(std::string(absl::StripAsciiWhitespace(fields[0])));
      if (it != label_of.end()) {
        listing.class_names[it->second] = std::string(absl::StripAsciiWhitespace(fields[1]));
      }
    }
  }

  const std::string train_dir = JoinPath(dir, "train");
  if (absl::Status s = CheckDirectory(train_dir, "Tiny-ImageNet train"); !s.ok()) return s;
  std::vector<std::vector<std::string>> train_files;
  for (const std::string& wnid : wnids) {
    const std::string images_dir = JoinPath(JoinPath(train_dir, wnid), "images");
    if (absl::Status s = CheckDirectory(images_dir, "Tiny-ImageNet class"); !s.ok()) return s;
    absl::StatusOr<std::vector<std::string>> files = JpegFilesIn(images_dir);
    if (!files.ok()) return files.status();
    if (files->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Tiny-ImageNet class has no JPEG images: ", images_dir));
    }
    train_files.push_back(*std::move(files));
  }
  Interleave(train_files, limit_train, listing.train_paths, listing.train_labels);

  const std::string val_dir = JoinPath(dir, "val");
  const std::string annotations_path = JoinPath(val_dir, "val_annotations.txt");
  absl::StatusOr<std::string> annotations =
      ReadCappedFile(annotations_path, "Tiny-ImageNet validation annotations");
  if (!annotations.ok()) return annotations.status();
  listing.index_files.push_back(annotations_path);
  const std::string val_images = JoinPath(val_dir, "images");
  if (absl::Status s = CheckDirectory(val_images, "Tiny-ImageNet validation images"); !s.ok()) {
    return s;
  }
  int line_number = 0;
  for (const std::string& line : SplitLines(*annotations)) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    std::vector<std::string> fields = absl::StrSplit(line, '\t');
    if (fields.size() < 2 || fields[0].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("malformed line ", line_number, " in ",
                                                     annotations_path,
                                                     ": expected file<TAB>wnid<TAB>box"));
    }
    if (!IsPlainName(fields[0])) {
      return absl::InvalidArgumentError(
          absl::StrCat("image name \"", absl::CHexEscape(fields[0]), "\" at line ", line_number,
                       " of ", annotations_path, " is not a plain file name"));
    }
    auto it = label_of.find(fields[1]);
    if (it == label_of.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown class id ", fields[1], " at line ",
                                                     line_number, " of ", annotations_path,
                                                     " (not in ", wnids_path, ")"));
    }
    if (limit_val > 0 && static_cast<int64_t>(listing.val_paths.size()) >= limit_val) break;
    listing.val_paths.push_back(JoinPath(val_images, fields[0]));
    listing.val_labels.push_back(it->second);
  }
  if (listing.val_paths.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no validation images listed in ", annotations_path));
  }
  return listing;
}

absl::StatusOr<std::vector<SourceFile>> ListingSources(const ImageListing& listing) {
  std::vector<SourceFile> sources;
  sources.reserve(listing.index_files.size() + listing.train_paths.size() +
                  listing.val_paths.size());
  for (const auto* paths : {&listing.index_files, &listing.train_paths, &listing.val_paths}) {
    for (const std::string& path : *paths) {
      absl::StatusOr<SourceFile> file = StatSourceFile(path, "image file");
      if (!file.ok()) return file.status();
      sources.push_back(*std::move(file));
    }
  }
  return sources;
}

absl::StatusOr<RawDataset> DecodeImageListing(const ImageListing& listing, int image_size,
                                              int channels, int threads,
                                              const std::atomic<bool>* cancel) {
  if (listing.train_paths.empty()) {
    return absl::InvalidArgumentError("image listing has no training images");
  }
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // The first training image fixes the channel count (when not forced) and, without resizing,
  // the image size.
  int height = 0;
  int width = 0;
  if (channels == 0) channels = listing.default_channels;
  if (channels == 0 || image_size == 0) {
    const std::string& first = listing.train_paths.front();
    absl::StatusOr<std::string> bytes = ReadCappedFile(first, "image file");
    if (!bytes.ok()) return bytes.status();
    absl::StatusOr<JpegInfo> info = ReadJpegInfo(*bytes, first);
    if (!info.ok()) return info.status();
    if (channels == 0) channels = info->channels;
    height = info->height;
    width = info->width;
  }
  RawDataset data;
  data.num_classes = static_cast<int64_t>(listing.class_names.size());
  data.class_names = listing.class_names;
  if (absl::Status s = DecodeSplit(listing.train_paths, "training", image_size, height, width,
                                   channels, threads, cancel, data.train);
      !s.ok()) {
    return s;
  }
  data.train.labels = listing.train_labels;
  if (absl::Status s =
          DecodeSplit(listing.val_paths, "validation", image_size, height, width, channels,
                      threads, cancel, data.val);
      !s.ok()) {
    return s;
  }
  data.val.labels = listing.val_labels;
  return data;
}

}  // namespace compress::pipeline
