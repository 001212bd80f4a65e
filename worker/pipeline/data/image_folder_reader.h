// Readers for data sets stored as directories of JPEG files.
//
// ImageFolder:        <dir>/train/<class>/*.jpg|*.jpeg and <dir>/val/<class>/*.jpg|*.jpeg
//                     (extension case-insensitive; classes = sorted train subdirectories; other
//                     files are ignored, PNG files are refused as unsupported).
// Tiny-ImageNet-200:  <dir>/wnids.txt (one class id per line, label = line number),
//                     <dir>/words.txt (optional, "wnid<TAB>names", used for class names),
//                     <dir>/train/<wnid>/images/*.JPEG,
//                     <dir>/val/images/*.JPEG with <dir>/val/val_annotations.txt
//                     ("file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1" per line).
//
// Listing and decoding are separate steps so that the listing's files can key the decode cache
// before anything is decoded.
#ifndef COMPRESS_WORKER_PIPELINE_DATA_IMAGE_FOLDER_READER_H_
#define COMPRESS_WORKER_PIPELINE_DATA_IMAGE_FOLDER_READER_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipeline/data/raw_dataset.h"

namespace compress::pipeline {

// Image files with their labels, and the index files the listing read.
struct ImageListing {
  std::vector<std::string> train_paths;
  std::vector<int64_t> train_labels;
  std::vector<std::string> val_paths;
  std::vector<int64_t> val_labels;
  std::vector<std::string> class_names;
  // Index files (wnids.txt, val_annotations.txt, ...) that belong in the cache key.
  std::vector<std::string> index_files;
  // Channels to decode to when the caller does not force a count (0 = as the first image).
  int default_channels = 0;
};

// Lists an ImageFolder tree. With a limit (0 = all), files are taken round-robin over the
// classes (class 0's first file, class 1's first file, ...), so that a limited split still
// covers every class.
absl::StatusOr<ImageListing> ListImageFolder(const std::string& dir, int64_t limit_train,
                                             int64_t limit_val);

// Lists a Tiny-ImageNet-200 tree. Limits as for ListImageFolder on train; val keeps the order of
// val_annotations.txt.
absl::StatusOr<ImageListing> ListTinyImageNet(const std::string& dir, int64_t limit_train,
                                              int64_t limit_val);

// Size and mtime of every listed file, for the cache key. NOT_FOUND names a missing image.
absl::StatusOr<std::vector<SourceFile>> ListingSources(const ImageListing& listing);

// Decodes every listed image with `threads` threads (0 = hardware concurrency). image_size > 0
// resizes each image to image_size x image_size (centre crop + area/bilinear resize);
// image_size == 0 requires all images to share the first one's size. channels: 1 or 3 forces
// grey or RGB, 0 uses listing.default_channels or else the first training image's.
// A non-null `cancel` is checked before every image: once it is true the threads stop after
// the image they are decoding and the call returns CANCELLED.
absl::StatusOr<RawDataset> DecodeImageListing(const ImageListing& listing, int image_size,
                                              int channels, int threads,
                                              const std::atomic<bool>* cancel = nullptr);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_IMAGE_FOLDER_READER_H_
