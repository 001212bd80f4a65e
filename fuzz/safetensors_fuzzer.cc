// Fuzz target: the safetensors reader (worker/pipeline/checkpoint), which reads teacher
// checkpoints a user supplies.
//
// Input: a safetensors file. It is parsed as it is, and a second time with its header length
// clamped into the file (so that most mutations of the length still reach the JSON header).
// Beyond crashes and sanitizer reports, checks that a file that parses gives the same tensors and
// metadata back through SerializeSafetensors and ParseSafetensors.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/status/statusor.h"
#include "worker/pipeline/checkpoint/safetensors.h"

namespace {

using compress::pipeline::SafetensorsContents;

[[noreturn]] void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "safetensors_fuzzer: %s: %s\n", what, detail.c_str());
  std::abort();
}

bool SameBytes(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() &&
         (a.numel() == 0 ||
          std::memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) == 0);
}

void ParseAndRoundTrip(const std::string& bytes) {
  absl::StatusOr<SafetensorsContents> contents =
      compress::pipeline::ParseSafetensors(bytes, "fuzz.safetensors");
  if (!contents.ok()) return;
  for (const auto& [name, tensor] : contents->tensors) {
    // The writer refuses empty names; the reader takes what the format allows.
    if (name.empty()) return;
    if (!tensor.device().is_cpu() || !tensor.is_contiguous()) Fail("odd tensor", name);
  }
  absl::StatusOr<std::string> written =
      compress::pipeline::SerializeSafetensors(contents->tensors, contents->metadata);
  if (!written.ok()) Fail("parsed tensors do not serialise", written.status().ToString());
  absl::StatusOr<SafetensorsContents> again =
      compress::pipeline::ParseSafetensors(*written, "rewritten.safetensors");
  if (!again.ok()) Fail("serialised tensors do not parse", again.status().ToString());
  if (again->metadata != contents->metadata) Fail("metadata changed", "");
  if (again->tensors.size() != contents->tensors.size()) Fail("tensor count changed", "");
  for (size_t i = 0; i < again->tensors.size(); ++i) {
    const auto& [name, tensor] = contents->tensors[i];
    if (again->tensors[i].first != name) Fail("tensor order changed", name);
    if (!SameBytes(again->tensors[i].second, tensor)) Fail("tensor changed", name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  ParseAndRoundTrip(bytes);
  if (size > 8) {
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | data[i];
    const uint64_t clamped = header_size % (size - 8 + 1);
    if (clamped != header_size) {
      for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((clamped >> (8 * i)) & 0xff);
      ParseAndRoundTrip(bytes);
    }
  }
  return 0;
}
