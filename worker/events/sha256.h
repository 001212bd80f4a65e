// SHA-256 (FIPS 180-4) of byte streams and files, for artifacts and blobs.
//
// Our own small implementation, so that the executor needs no OpenSSL on machines where it is
// built against another LibTorch. Not constant-time; it checks integrity, it keeps no secrets.
#ifndef COMPRESS_WORKER_EVENTS_SHA256_H_
#define COMPRESS_WORKER_EVENTS_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace compress {

// Incremental hasher: Update() any number of times, then HexDigest() once.
// Not thread-safe. On x86-64 processors with the SHA extensions the blocks are compressed with
// them (about 1.5 GB/s per core against 0.2 GB/s for the portable code); the digest is the same.
class Sha256 {
 public:
  enum class Implementation {
    kAuto,      // the SHA extensions when the processor has them, else portable
    kPortable,  // plain C++ only (tests compare the two)
  };
  explicit Sha256(Implementation implementation = Implementation::kAuto);
  // Whether kAuto uses the processor's SHA extensions on this machine.
  static bool HardwareAccelerated();
  void Update(const void* data, size_t size);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // Lowercase hex of the digest. Finishes the hash; the object must not be updated afterwards.
  std::string HexDigest();

 private:
  // Compresses `count` consecutive 64-byte blocks into state_.
  void Blocks(const uint8_t* data, size_t count);
  static void PortableBlocks(uint32_t* state, const uint8_t* data, size_t count);

  bool accelerated_;

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// Hex digest of a string.
std::string Sha256Hex(absl::string_view data);

// Hex digest and size of a file, read in chunks. NOT_FOUND or DATA_LOSS naming the path.
struct FileDigest {
  std::string sha256;
  int64_t size_bytes = 0;
};
absl::StatusOr<FileDigest> Sha256File(const std::string& path);

}  // namespace compress

#endif  // COMPRESS_WORKER_EVENTS_SHA256_H_
