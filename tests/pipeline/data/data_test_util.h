// Helpers for the data set tests: a temporary directory, and writers of small data sets in every
// supported format (IDX raw and gzip, CIFAR-10 binary, JPEG files in ImageFolder and
// Tiny-ImageNet-200 layouts).
#ifndef COMPRESS_TESTS_PIPELINE_DATA_DATA_TEST_UTIL_H_
#define COMPRESS_TESTS_PIPELINE_DATA_DATA_TEST_UTIL_H_

// clang-format off
#include <cstdio>
#include <jpeglib.h>
// zlib declares a global function named compress, which clashes with our namespace.
#define compress zlib_compress
#include <zlib.h>
#undef compress
// clang-format on

#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace compress::pipeline::data_test {

// A fresh directory under the test's temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "compress_data_XXXXXX";
    char* made = ::mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void AppendBigEndian32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

// Pixel value of image `i` at (y, x) in the test IDX and CIFAR files.
inline uint8_t TestPixel(int64_t i, int64_t c, int64_t y, int64_t x) {
  return static_cast<uint8_t>((i * 7 + c * 50 + y * 3 + x) % 256);
}

inline std::string IdxImages(int64_t count, int rows, int cols) {
  std::string out;
  AppendBigEndian32(out, 0x00000803);
  AppendBigEndian32(out, static_cast<uint32_t>(count));
  AppendBigEndian32(out, rows);
  AppendBigEndian32(out, cols);
  for (int64_t i = 0; i < count; ++i) {
    for (int y = 0; y < rows; ++y) {
      for (int x = 0; x < cols; ++x) out.push_back(static_cast<char>(TestPixel(i, 0, y, x)));
    }
  }
  return out;
}

inline std::string IdxLabels(int64_t count) {
  std::string out;
  AppendBigEndian32(out, 0x00000801);
  AppendBigEndian32(out, static_cast<uint32_t>(count));
  for (int64_t i = 0; i < count; ++i) out.push_back(static_cast<char>(i % 10));
  return out;
}

inline std::string Gzip(const std::string& data) {
  z_stream s;
  std::memset(&s, 0, sizeof(s));
  EXPECT_EQ(deflateInit2(&s, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&s, data.size()) + 64, '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&s, Z_FINISH), Z_STREAM_END);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

// A gzip stream of `prefix` followed by `zeros` zero bytes, deflated in pieces so that the
// inflated form (a gzip bomb, when `zeros` is large) is never held in memory.
inline std::string GzipWithZeros(const std::string& prefix, uint64_t zeros) {
  z_stream s;
  std::memset(&s, 0, sizeof(s));
  EXPECT_EQ(deflateInit2(&s, 9, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_DEFAULT_STRATEGY), Z_OK);
  const std::string block(1 << 20, '\0');
  std::string out;
  char buffer[1 << 16];
  auto feed = [&](const char* data, size_t size, int flush) {
    s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
    s.avail_in = static_cast<uInt>(size);
    do {
      s.next_out = reinterpret_cast<Bytef*>(buffer);
      s.avail_out = sizeof(buffer);
      deflate(&s, flush);
      out.append(buffer, sizeof(buffer) - s.avail_out);
    } while (s.avail_out == 0);
  };
  feed(prefix.data(), prefix.size(), Z_NO_FLUSH);
  for (uint64_t left = zeros; left > 0;) {
    const size_t size = static_cast<size_t>(std::min<uint64_t>(left, block.size()));
    feed(block.data(), size, Z_NO_FLUSH);
    left -= size;
  }
  feed(nullptr, 0, Z_FINISH);
  deflateEnd(&s);
  return out;
}

// Writes the four Fashion-MNIST files (rows x cols images, label i % 10) into `dir`.
inline void WriteIdxDataset(const std::string& dir, int64_t train, int64_t val, int rows, int cols,
                            bool gzip) {
  auto put = [&](const std::string& name, const std::string& bytes) {
    WriteFile(dir + "/" + name + (gzip ? ".gz" : ""), gzip ? Gzip(bytes) : bytes);
  };
  put("train-images-idx3-ubyte", IdxImages(train, rows, cols));
  put("train-labels-idx1-ubyte", IdxLabels(train));
  put("t10k-images-idx3-ubyte", IdxImages(val, rows, cols));
  put("t10k-labels-idx1-ubyte", IdxLabels(val));
}

// One CIFAR-10 batch file: `count` records, label (first + i) % 10, image TestPixel(first + i).
inline std::string CifarBatch(int64_t first, int64_t count) {
  std::string out;
  for (int64_t i = first; i < first + count; ++i) {
    out.push_back(static_cast<char>(i % 10));
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < 32; ++y) {
        for (int x = 0; x < 32; ++x) out.push_back(static_cast<char>(TestPixel(i, c, y, x)));
      }
    }
  }
  return out;
}

inline void WriteCifarDataset(const std::string& dir, int64_t per_batch, int64_t test) {
  for (int b = 0; b < 5; ++b) {
    WriteFile(dir + "/data_batch_" + std::to_string(b + 1) + ".bin",
              CifarBatch(b * per_batch, per_batch));
  }
  WriteFile(dir + "/test_batch.bin", CifarBatch(1000, test));
  WriteFile(dir + "/batches.meta.txt",
            "plane\ncar\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n");
}

// Encodes an HWC image (channels 1 or 3) as a baseline JPEG.
inline std::string EncodeJpeg(const std::vector<uint8_t>& pixels, int height, int width,
                              int channels, int quality = 95) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = channels;
  cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(pixels.data()) +
                   static_cast<size_t>(cinfo.next_scanline) * width * channels;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buffer), size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
  return out;
}

// Colour of class `label` in the JPEG test sets, well apart between classes.
inline std::vector<uint8_t> ClassColor(int64_t label) {
  return {static_cast<uint8_t>(30 + 60 * (label % 4)), static_cast<uint8_t>(220 - 50 * (label % 4)),
          static_cast<uint8_t>(label < 4 ? 60 : 190)};
}

// A solid image of class `label`'s colour (its grey level when channels == 1), as JPEG.
inline std::string ClassJpeg(int64_t label, int height, int width, int channels) {
  const std::vector<uint8_t> color = ClassColor(label);
  const uint8_t grey =
      static_cast<uint8_t>((299 * color[0] + 587 * color[1] + 114 * color[2] + 500) / 1000);
  std::vector<uint8_t> pixels;
  for (int p = 0; p < height * width; ++p) {
    if (channels == 1) {
      pixels.push_back(grey);
    } else {
      pixels.insert(pixels.end(), color.begin(), color.end());
    }
  }
  return EncodeJpeg(pixels, height, width, channels);
}

}  // namespace compress::pipeline::data_test

#endif  // COMPRESS_TESTS_PIPELINE_DATA_DATA_TEST_UTIL_H_
