// Fuzz target: the CIFAR-10 binary reader of worker/pipeline/data: batch files and the class-name
// file.
//
// Input: [1 byte: limit, 0 = all][rest: a batch file]. The batch is appended twice to the same
// RawImages (as consecutive batch files of a split are), and the rest is also read as a
// batches.meta.txt. Beyond crashes and sanitizer reports, checks the RawImages invariants after
// every call, that a failed call leaves them as they were, and that the limit holds.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/pipeline/data/cifar_reader.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "cifar_reader_fuzzer: %s\n", what);
  std::abort();
}

void CheckInvariants(const compress::pipeline::RawImages& out, int64_t limit) {
  if (static_cast<int64_t>(out.labels.size()) != out.count) Fail("labels.size() != count");
  if (static_cast<int64_t>(out.pixels.size()) != out.count * out.ImageBytes()) {
    Fail("pixels.size() != count * image bytes");
  }
  if (limit > 0 && out.count > limit) Fail("more records than the limit");
  for (int64_t label : out.labels) {
    if (label < 0 || label >= 10) Fail("label out of range");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int64_t limit = data[0];
  const std::string batch(reinterpret_cast<const char*>(data) + 1, size - 1);
  compress::pipeline::RawImages out;
  out.channels = 3;
  out.height = 32;
  out.width = 32;
  for (int pass = 0; pass < 2; ++pass) {
    const int64_t before = out.count;
    absl::Status status = compress::pipeline::AppendCifarBatch(batch, "batch", limit, out);
    CheckInvariants(out, limit);
    if (!status.ok() && out.count != before) Fail("a failed call changed the output");
    if (!status.ok()) break;
  }
  absl::StatusOr<std::vector<std::string>> names =
      compress::pipeline::ParseCifarClassNames(batch, "meta");
  if (names.ok()) {
    if (names->size() != 10) Fail("not 10 class names");
    for (const std::string& name : *names) {
      if (name.empty()) Fail("empty class name");
    }
  }
  return 0;
}
