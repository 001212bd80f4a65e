// Torch-free per-image operations applied once at load time: centre-square crop plus resize
// (area averaging when shrinking, bilinear when enlarging) and channel-count conversion.
#ifndef COMPRESS_WORKER_PIPELINE_DATA_IMAGE_OPS_H_
#define COMPRESS_WORKER_PIPELINE_DATA_IMAGE_OPS_H_

#include <cstdint>

#include "worker/pipeline/data/raw_dataset.h"

namespace compress::pipeline {

// Resizes one image to size x size. The source is addressed as src[y * row_stride +
// x * pixel_stride + ch * channel_stride], so both HWC (decoder output) and CHW (binary formats)
// sources work. A non-square source is centre-cropped to a square first (as torchvision's
// Resize(size) followed by CenterCrop(size)). The output is CHW: dst[ch * size * size + y * size
// + x]. Shrinking averages the covered source area (with fractional edge weights); enlarging
// interpolates bilinearly with half-pixel centres (align_corners=false).
void ResizeImage(const uint8_t* src, int height, int width, int channels, int64_t row_stride,
                 int64_t pixel_stride, int64_t channel_stride, int size, uint8_t* dst);

// Copies an HWC image into CHW order without resizing.
void HwcToChw(const uint8_t* src, int height, int width, int channels, uint8_t* dst);

// Resizes every image of `images` (CHW) to size x size in place of its pixels.
void ResizeRawImages(RawImages& images, int size);

// Converts `images` to `channels` (1 or 3): grey to RGB by replication, RGB to grey by the
// ITU-R BT.601 luma weights (0.299, 0.587, 0.114). No-op when the count already matches.
void ConvertChannels(RawImages& images, int channels);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_IMAGE_OPS_H_
