#include "worker/pipeline/data/jpeg_decoder.h"

// clang-format off
#include <csetjmp>
#include <cstdio>
#include <jpeglib.h>
#include <jerror.h>
// clang-format on

#include <utility>

#include "absl/strings/str_cat.h"

namespace compress::pipeline {
namespace {

// libjpeg error manager that long-jumps back instead of exiting, and remembers the first warning
// about corrupt data: libjpeg pads a truncated image with grey, and skips or fills in damaged
// entropy-coded data, with only a warning.
struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;  // the first corrupt-data warning was a premature end of file
  bool corrupt;    // a corrupt-data warning was emitted
  bool in_scan;    // the header is read: every warning from here on is about the image data
};

// Warnings that mean the data is damaged wherever they are emitted.
bool IsCorruptDataWarning(int code) {
  switch (code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_EXTRANEOUS_DATA:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_BOGUS_PROGRESSION:
    case JWRN_ARITH_BAD_CODE:
      return true;
    default:
      return false;
  }
}

[[noreturn]] void OnError(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void OnMessage(j_common_ptr cinfo, int msg_level) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  if (msg_level < 0) {
    ++cinfo->err->num_warnings;
    if (!err->corrupt && (err->in_scan || IsCorruptDataWarning(cinfo->err->msg_code))) {
      err->corrupt = true;
      err->truncated = cinfo->err->msg_code == JWRN_JPEG_EOF;
      (*cinfo->err->format_message)(cinfo, err->message);
    }
  }
}

// Owns a decompressor for the duration of one call; destroys it on every path.
class Decompressor {
 public:
  Decompressor() {
    cinfo_.err = jpeg_std_error(&err_.pub);
    err_.pub.error_exit = OnError;
    err_.pub.emit_message = OnMessage;
    err_.message[0] = '\0';
    err_.truncated = false;
    err_.corrupt = false;
    err_.in_scan = false;
  }
  ~Decompressor() {
    if (created_) jpeg_destroy_decompress(&cinfo_);
  }
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;

  jpeg_decompress_struct& cinfo() { return cinfo_; }
  ErrorManager& err() { return err_; }
  DecodedImage& image() { return image_; }
  void MarkCreated() { created_ = true; }

 private:
  jpeg_decompress_struct cinfo_;
  ErrorManager err_;
  DecodedImage image_;
  bool created_ = false;
};

absl::Status CheckColorSpace(const jpeg_decompress_struct& cinfo, const std::string& path) {
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported CMYK JPEG ", path, ": only greyscale and RGB are decoded"));
  }
  return absl::OkStatus();
}

int StoredChannels(const jpeg_decompress_struct& cinfo) {
  return cinfo.jpeg_color_space == JCS_GRAYSCALE ? 1 : 3;
}

}  // namespace

// The functions below call setjmp. Everything modified between setjmp and a possible longjmp
// lives in the Decompressor, in memory whose address escapes to libjpeg (never only in
// registers), and no object with a destructor is created in that span.
absl::StatusOr<JpegInfo> ReadJpegInfo(absl::string_view bytes, const std::string& path) {
  Decompressor d;
  jpeg_decompress_struct& cinfo = d.cinfo();
  if (setjmp(d.err().jump) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read JPEG header of ", path, ": ", d.err().message));
  }
  jpeg_create_decompress(&cinfo);
  d.MarkCreated();
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (absl::Status s = CheckColorSpace(cinfo, path); !s.ok()) return s;
  JpegInfo info;
  info.height = static_cast<int>(cinfo.image_height);
  info.width = static_cast<int>(cinfo.image_width);
  info.channels = StoredChannels(cinfo);
  return info;
}

absl::StatusOr<DecodedImage> DecodeJpeg(absl::string_view bytes, const std::string& path,
                                        int channels) {
  Decompressor d;
  jpeg_decompress_struct& cinfo = d.cinfo();
  DecodedImage& image = d.image();
  if (setjmp(d.err().jump) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot decode JPEG ", path, ": ", d.err().message));
  }
  jpeg_create_decompress(&cinfo);
  d.MarkCreated();
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (absl::Status s = CheckColorSpace(cinfo, path); !s.ok()) return s;
  const int64_t pixels = static_cast<int64_t>(cinfo.image_width) * cinfo.image_height;
  if (pixels > kMaxJpegPixels) {
    return absl::InvalidArgumentError(
        absl::StrCat("JPEG ", path, " declares ", cinfo.image_width, "x", cinfo.image_height,
                     " pixels, more than the ", kMaxJpegPixels, " this decoder accepts"));
  }
  const int out_channels = channels > 0 ? channels : StoredChannels(cinfo);
  cinfo.out_color_space = out_channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  d.err().in_scan = true;
  jpeg_start_decompress(&cinfo);
  image.height = static_cast<int>(cinfo.output_height);
  image.width = static_cast<int>(cinfo.output_width);
  image.channels = cinfo.output_components;
  const size_t stride = static_cast<size_t>(image.width) * image.channels;
  image.pixels.resize(stride * image.height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = image.pixels.data() + stride * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  if (d.err().corrupt) {
    return absl::DataLossError(absl::StrCat(d.err().truncated ? "truncated" : "corrupt", " JPEG ",
                                            path, ": ", d.err().message));
  }
  return std::move(image);
}

}  // namespace compress::pipeline
