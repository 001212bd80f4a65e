// Fuzz target: the IDX (Fashion-MNIST) reader of worker/pipeline/data, raw and gzip-compressed.
//
// Input: [1 byte: limit, 0 = all][2 bytes: labels file length n, little-endian][n bytes: labels
// file][rest: images file]; a length past the end takes what is there. Beyond crashes and
// sanitizer reports, checks the RawImages invariants on success.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "worker/pipeline/data/idx_reader.h"

namespace {

constexpr int64_t kNumClasses = 10;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "idx_reader_fuzzer: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const int64_t limit = data[0];
  const size_t labels_size = std::min<size_t>(data[1] | (size_t{data[2]} << 8), size - 3);
  const char* bytes = reinterpret_cast<const char*>(data);
  const std::string labels(bytes + 3, labels_size);
  const std::string images(bytes + 3 + labels_size, size - 3 - labels_size);
  absl::StatusOr<compress::pipeline::RawImages> split =
      compress::pipeline::ParseIdxSplit(images, "images", labels, "labels", limit, kNumClasses);
  if (!split.ok()) return 0;
  const compress::pipeline::RawImages& out = *split;
  if (out.channels != 1 || out.height <= 0 || out.width <= 0) Fail("bad image shape");
  if (limit > 0 && out.count > limit) Fail("more records than the limit");
  if (static_cast<int64_t>(out.labels.size()) != out.count) Fail("labels.size() != count");
  if (static_cast<int64_t>(out.pixels.size()) != out.count * out.ImageBytes()) {
    Fail("pixels.size() != count * image bytes");
  }
  for (int64_t label : out.labels) {
    if (label < 0 || label >= kNumClasses) Fail("label out of range");
  }
  return 0;
}
