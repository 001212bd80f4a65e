// JPEG decoding through libjpeg-turbo's libjpeg API. Errors come back as statuses (a setjmp
// error manager replaces libjpeg's default, which would call exit()).
#ifndef COMPRESS_WORKER_PIPELINE_DATA_JPEG_DECODER_H_
#define COMPRESS_WORKER_PIPELINE_DATA_JPEG_DECODER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace compress::pipeline {

// A decoded image in HWC order (interleaved channels).
struct DecodedImage {
  int height = 0;
  int width = 0;
  int channels = 0;  // 1 (grey) or 3 (RGB)
  std::vector<uint8_t> pixels;
};

// Dimensions and channel count from the JPEG header, without decoding the pixels.
struct JpegInfo {
  int height = 0;
  int width = 0;
  int channels = 0;  // 1 for greyscale files, 3 for colour ones
};

// Reads the header of the JPEG in `bytes`; `path` only names the file in errors.
// INVALID_ARGUMENT when it is not a JPEG or uses an unsupported colour space (CMYK).
absl::StatusOr<JpegInfo> ReadJpegInfo(absl::string_view bytes, const std::string& path);

// The most pixels (width x height) DecodeJpeg decodes: a JPEG header may declare up to
// 65,535 x 65,535, which a file of a few hundred bytes can claim.
inline constexpr int64_t kMaxJpegPixels = 100'000'000;

// Decodes `bytes` to `channels` channels (1 = grey, 3 = RGB; 0 = as stored), converting colour
// as needed. INVALID_ARGUMENT for data that is not a decodable JPEG or declares more than
// kMaxJpegPixels pixels, DATA_LOSS for a truncated one; messages name `path` and the reason.
absl::StatusOr<DecodedImage> DecodeJpeg(absl::string_view bytes, const std::string& path,
                                        int channels);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_JPEG_DECODER_H_
