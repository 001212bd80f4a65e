#include "worker/events/sha256.h"

#include <cstdio>
#include <random>
#include <string>

#include "gtest/gtest.h"

namespace compress {
namespace {

// Vectors from FIPS 180-4's examples and NIST's SHA-256 test set.
TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

std::string HexOf(Sha256::Implementation implementation, const std::string& data,
                  size_t split) {
  Sha256 hasher(implementation);
  hasher.Update(data.data(), split);
  hasher.Update(data.data() + split, data.size() - split);
  return hasher.HexDigest();
}

TEST(Sha256Test, PortableImplementationMatchesKnownVectors) {
  EXPECT_EQ(HexOf(Sha256::Implementation::kPortable, "abc", 1),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HexOf(Sha256::Implementation::kPortable, std::string(1000000, 'a'), 777),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// The SHA-extension path against the portable one on random data of every length up to a few
// blocks (all paddings and block counts) and on a large buffer split unevenly.
TEST(Sha256Test, HardwarePathMatchesPortableOnRandomData) {
  if (!Sha256::HardwareAccelerated()) {
    GTEST_SKIP() << "this processor has no SHA extensions; kAuto is the portable code";
  }
  std::mt19937 random(11);
  std::string data(3 << 20, '\0');
  for (char& c : data) c = static_cast<char>(random());
  for (size_t length = 0; length <= 300; ++length) {
    const std::string part = data.substr(0, length);
    const size_t split = length == 0 ? 0 : random() % (length + 1);
    ASSERT_EQ(HexOf(Sha256::Implementation::kAuto, part, split),
              HexOf(Sha256::Implementation::kPortable, part, split))
        << "length " << length << ", split " << split;
  }
  EXPECT_EQ(HexOf(Sha256::Implementation::kAuto, data, 12345),
            HexOf(Sha256::Implementation::kPortable, data, 1 << 20));
}

TEST(Sha256Test, IncrementalUpdatesMatchOneShotAcrossBlockBoundaries) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 7));
  const std::string expected = Sha256Hex(data);
  for (size_t split : {1, 55, 56, 63, 64, 65, 127, 999}) {
    Sha256 hasher;
    hasher.Update(data.data(), split);
    hasher.Update(data.data() + split, data.size() - split);
    EXPECT_EQ(hasher.HexDigest(), expected) << "split at " << split;
  }
}

TEST(Sha256Test, FileDigestAndMissingFile) {
  std::string path = ::testing::TempDir() + "/sha256_test_file";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fputs("abc", f);
  std::fclose(f);
  auto digest = Sha256File(path);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(digest->sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(digest->size_bytes, 3);
  auto missing = Sha256File(path + ".absent");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("sha256_test_file.absent"), absl::string_view::npos);
}

}  // namespace
}  // namespace compress
