#include "worker/pipeline/data/image_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace compress::pipeline {
namespace {

// Source taps of one output position along one axis.
struct Taps {
  int first = 0;
  std::vector<float> weights;
};

// Weights mapping `in` source positions (starting at `offset`) onto `out` output positions.
std::vector<Taps> AxisTaps(int offset, int in, int out) {
  std::vector<Taps> taps(out);
  const double scale = static_cast<double>(in) / out;
  for (int o = 0; o < out; ++o) {
    Taps& t = taps[o];
    if (scale > 1.0) {
      // Area: the output cell covers [o * scale, (o + 1) * scale) of the source.
      const double lo = o * scale;
      const double hi = (o + 1) * scale;
      const int first = static_cast<int>(std::floor(lo));
      const int last = std::min(in - 1, static_cast<int>(std::ceil(hi)) - 1);
      t.first = offset + first;
      for (int i = first; i <= last; ++i) {
        const double cover = std::min<double>(hi, i + 1) - std::max<double>(lo, i);
        t.weights.push_back(static_cast<float>(cover / scale));
      }
    } else {
      // Bilinear with half-pixel centres.
      const double center = std::max(0.0, (o + 0.5) * scale - 0.5);
      int i0 = static_cast<int>(std::floor(center));
      i0 = std::min(i0, in - 1);
      const int i1 = std::min(i0 + 1, in - 1);
      const float frac = static_cast<float>(center - i0);
      t.first = offset + i0;
      if (i1 == i0) {
        t.weights = {1.0f};
      } else {
        t.weights = {1.0f - frac, frac};
      }
    }
  }
  return taps;
}

}  // namespace

void ResizeImage(const uint8_t* src, int height, int width, int channels, int64_t row_stride,
                 int64_t pixel_stride, int64_t channel_stride, int size, uint8_t* dst) {
  const int side = std::min(height, width);
  const int y0 = (height - side) / 2;
  const int x0 = (width - side) / 2;
  const std::vector<Taps> xs = AxisTaps(x0, side, size);
  const std::vector<Taps> ys = AxisTaps(y0, side, size);
  // Horizontal pass over the rows of the crop, then vertical pass.
  std::vector<float> rows(static_cast<size_t>(side) * size);
  for (int ch = 0; ch < channels; ++ch) {
    const uint8_t* plane = src + ch * channel_stride;
    for (int y = 0; y < side; ++y) {
      const uint8_t* row = plane + (y0 + y) * row_stride;
      float* out_row = rows.data() + static_cast<size_t>(y) * size;
      for (int ox = 0; ox < size; ++ox) {
        const Taps& t = xs[ox];
        float acc = 0.0f;
        for (size_t k = 0; k < t.weights.size(); ++k) {
          acc += t.weights[k] * row[(t.first + static_cast<int64_t>(k)) * pixel_stride];
        }
        out_row[ox] = acc;
      }
    }
    uint8_t* out_plane = dst + static_cast<int64_t>(ch) * size * size;
    for (int oy = 0; oy < size; ++oy) {
      const Taps& t = ys[oy];
      for (int ox = 0; ox < size; ++ox) {
        float acc = 0.0f;
        for (size_t k = 0; k < t.weights.size(); ++k) {
          acc += t.weights[k] * rows[(t.first - y0 + k) * size + ox];
        }
        out_plane[oy * size + ox] = static_cast<uint8_t>(std::clamp(std::lround(acc), 0L, 255L));
      }
    }
  }
}

void HwcToChw(const uint8_t* src, int height, int width, int channels, uint8_t* dst) {
  const int64_t plane = int64_t{height} * width;
  for (int64_t p = 0; p < plane; ++p) {
    for (int ch = 0; ch < channels; ++ch) dst[ch * plane + p] = src[p * channels + ch];
  }
}

void ResizeRawImages(RawImages& images, int size) {
  if (size <= 0 || (images.height == size && images.width == size)) return;
  const int64_t in_bytes = images.ImageBytes();
  const int64_t out_bytes = int64_t{images.channels} * size * size;
  std::vector<uint8_t> out(static_cast<size_t>(images.count * out_bytes));
  const int64_t plane = int64_t{images.height} * images.width;
  for (int64_t i = 0; i < images.count; ++i) {
    ResizeImage(images.pixels.data() + i * in_bytes, images.height, images.width, images.channels,
                /*row_stride=*/images.width, /*pixel_stride=*/1,
                /*channel_stride=*/plane, size, out.data() + i * out_bytes);
  }
  images.pixels = std::move(out);
  images.height = size;
  images.width = size;
}

void ConvertChannels(RawImages& images, int channels) {
  if (channels <= 0 || images.channels == channels) return;
  const int64_t plane = int64_t{images.height} * images.width;
  std::vector<uint8_t> out(static_cast<size_t>(images.count * channels * plane));
  for (int64_t i = 0; i < images.count; ++i) {
    const uint8_t* in = images.pixels.data() + i * images.channels * plane;
    uint8_t* o = out.data() + i * channels * plane;
    if (images.channels == 1) {
      for (int ch = 0; ch < channels; ++ch) std::copy(in, in + plane, o + ch * plane);
    } else {
      for (int64_t p = 0; p < plane; ++p) {
        const float luma = 0.299f * in[p] + 0.587f * in[plane + p] + 0.114f * in[2 * plane + p];
        o[p] = static_cast<uint8_t>(std::clamp(std::lround(luma), 0L, 255L));
      }
    }
  }
  images.pixels = std::move(out);
  images.channels = channels;
}

}  // namespace compress::pipeline
