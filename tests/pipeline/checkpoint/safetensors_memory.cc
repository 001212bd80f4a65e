// Measures the memory the safetensors reader takes on adversarial headers near the format's
// 100 MB limit (not a test; the figures are in docs/checkpoints.md).
//
//   safetensors_memory write KIND MEGABYTES PATH   writes a file whose header is that large
//   safetensors_memory read PATH                    reads it; prints the status and peak RSS
//
// Run `read` under /usr/bin/time -v to see its peak resident memory. KIND is one of:
//   arrays    one tensor whose shape is a list of empty arrays ([[],[],...])
//   dims      one 1-element tensor of shape [1,1,...,1]
//   tensors   as many empty tensors as fit ("t<i>": F32, shape [0], data_offsets [0,0])
//   metadata  a __metadata__ object of as many empty strings as fit
// and two that the reader accepts, the largest it reads within its limits:
//   names     65536 empty tensors whose names fill the header
//   ranks     65536 empty tensors of 64 dimensions each
#include <sys/resource.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "worker/pipeline/checkpoint/safetensors.h"

namespace {

int64_t PeakRssKib() {
  struct rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// The header (before padding) of `kind`, of about `bytes` bytes; `data` gets the data section.
bool MakeHeader(const std::string& kind, uint64_t bytes, std::string& header, std::string& data) {
  header.reserve(bytes + 64);
  if (kind == "arrays" || kind == "dims") {
    const char* item = kind == "arrays" ? "[]," : "1,";
    const size_t item_size = kind == "arrays" ? 3 : 2;
    header = R"({"t":{"dtype":"F32","data_offsets":[0,4],"shape":[)";
    while (header.size() + item_size + 8 < bytes) header += item;
    header += kind == "arrays" ? "[]]}}" : "1]}}";
    data.assign(4, '\0');
    return true;
  }
  if (kind == "tensors") {
    header = "{";
    for (uint64_t i = 0; header.size() + 64 < bytes; ++i) {
      absl::StrAppend(&header, i == 0 ? "" : ",", "\"t", i,
                      R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})");
    }
    header += "}";
    return true;
  }
  if (kind == "names" || kind == "ranks") {
    constexpr int kTensors = 65536;
    std::string shape = "[0";
    if (kind == "ranks") {
      for (int d = 1; d < 64; ++d) shape += ",1";
    }
    shape += "]";
    const std::string fields =
        absl::StrCat(R"(":{"dtype":"F32","shape":)", shape, R"(,"data_offsets":[0,0]})");
    const uint64_t per_tensor = bytes / kTensors;
    header = "{";
    for (int i = 0; i < kTensors; ++i) {
      std::string name = absl::StrCat("t", i, "_");
      if (kind == "names" && name.size() + fields.size() + 4 < per_tensor) {
        name.append(per_tensor - fields.size() - 4 - name.size(), 'x');
      }
      absl::StrAppend(&header, i == 0 ? "\"" : ",\"", name, fields);
    }
    header += "}";
    return true;
  }
  if (kind == "metadata") {
    header = R"({"__metadata__":{)";
    for (uint64_t i = 0; header.size() + 32 < bytes; ++i) {
      absl::StrAppend(&header, i == 0 ? "" : ",", "\"k", i, "\":\"\"");
    }
    header += "}}";
    return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "write" && argc == 5) {
    std::string header, data;
    if (!MakeHeader(argv[2], std::stoull(argv[3]) * 1000 * 1000, header, data)) {
      std::fprintf(stderr, "unknown kind %s\n", argv[2]);
      return 2;
    }
    header.append((8 - header.size() % 8) % 8, ' ');
    std::string length(8, '\0');
    for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    std::ofstream out(argv[4], std::ios::binary | std::ios::trunc);
    out << length << header << data;
    std::printf("%s: header of %zu bytes\n", argv[4], header.size());
    return out.good() ? 0 : 1;
  }
  if (mode == "read" && argc == 3) {
    const int64_t before = PeakRssKib();
    absl::StatusOr<compress::pipeline::SafetensorsContents> contents =
        compress::pipeline::ReadSafetensors(argv[2]);
    const std::string status = contents.ok()
                                   ? absl::StrCat("OK, ", contents->tensors.size(), " tensors")
                                   : contents.status().ToString();
    std::printf("%s\npeak RSS %lld KiB (%lld KiB before reading)\n", status.substr(0, 300).c_str(),
                static_cast<long long>(PeakRssKib()), static_cast<long long>(before));
    return 0;
  }
  std::fprintf(stderr,
               "usage: safetensors_memory write arrays|dims|tensors|metadata|names|ranks MB PATH\n"
               "       safetensors_memory read PATH\n");
  return 2;
}
