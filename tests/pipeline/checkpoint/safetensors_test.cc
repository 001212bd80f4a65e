// Tests of the safetensors reader and writer: round trips and every kind of corruption.
#include "worker/pipeline/checkpoint/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>

#include "nlohmann/json.hpp"

namespace compress::pipeline {
namespace {

using ::testing::HasSubstr;

// A file from a header written by hand and `data_bytes` bytes of data.
std::string RawFile(const std::string& header, size_t data_bytes) {
  std::string out;
  const uint64_t size = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((size >> (8 * i)) & 0xff));
  return out + header + std::string(data_bytes, '\x01');
}

void ExpectError(const std::string& bytes, absl::StatusCode code, const std::string& needle) {
  absl::StatusOr<SafetensorsContents> result = ParseSafetensors(bytes, "/data/bad.safetensors");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), code) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr(needle));
  EXPECT_THAT(result.status().message(), HasSubstr("/data/bad.safetensors"));
}

TEST(SafetensorsTest, RoundTripsEveryDtype) {
  torch::manual_seed(0);
  const torch::Tensor floats = torch::randn({3, 5});
  NamedTensors tensors = {
      {"f64", floats.to(torch::kDouble)},
      {"f32", floats},
      {"f16", floats.to(torch::kHalf)},
      {"bf16", floats.to(torch::kBFloat16)},
      {"i64", torch::arange(-4, 6, torch::kLong).view({2, 5})},
      {"i32", torch::tensor({-7, 2147483647}, torch::kInt)},
      {"i16", torch::tensor({-300, 300}, torch::kShort)},
      {"i8", torch::tensor({-128, 127}, torch::kChar)},
      {"u8", torch::tensor({0, 255}, torch::kByte)},
      {"bool", torch::tensor({true, false, true})},
      {"empty", torch::zeros({0, 4})},
      {"scalar", torch::tensor(3.5f)},
      {"transposed", floats.t()},  // non-contiguous input
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "x"}};
  absl::StatusOr<std::string> bytes = SerializeSafetensors(tensors, metadata);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes->data(), 8);
  EXPECT_EQ((8 + header_size) % 8, 0u) << "data section must start 8-byte aligned";

  absl::StatusOr<SafetensorsContents> back = ParseSafetensors(*bytes, "memory");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->metadata, metadata);
  ASSERT_EQ(back->tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(back->tensors[i].first, tensors[i].first);
    const torch::Tensor& got = back->tensors[i].second;
    EXPECT_EQ(got.scalar_type(), tensors[i].second.scalar_type()) << tensors[i].first;
    EXPECT_TRUE(torch::equal(got, tensors[i].second)) << tensors[i].first;
  }
}

TEST(SafetensorsTest, FileRoundTripIsAtomic) {
  const std::string dir = ::testing::TempDir() + "/safetensors_atomic";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/t.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"a", torch::ones({2})}}).ok());
  ASSERT_TRUE(WriteSafetensors(path, {{"b", torch::zeros({3})}}).ok());  // replaces
  absl::StatusOr<SafetensorsContents> back = ReadSafetensors(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->tensors.size(), 1u);
  EXPECT_EQ(back->tensors[0].first, "b");
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    ++files;
    EXPECT_EQ(entry.path().filename(), "t.safetensors");
  }
  EXPECT_EQ(files, 1);  // no temporary left behind
}

TEST(SafetensorsTest, ReadsAFileOfTheReferenceLayout) {
  // Byte-exact layout as the reference implementation writes it: header padded with spaces.
  std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file = RawFile(header, 0);
  const float values[2] = {1.5f, -2.0f};
  file.append(reinterpret_cast<const char*>(values), sizeof(values));
  absl::StatusOr<SafetensorsContents> back = ParseSafetensors(file, "ref");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(torch::equal(back->tensors[0].second, torch::tensor({1.5f, -2.0f})));
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  absl::StatusOr<SafetensorsContents> result = ReadSafetensors("/nonexistent/x.safetensors");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(result.status().message(), HasSubstr("/nonexistent/x.safetensors"));
}

TEST(SafetensorsTest, TruncatedBeforeTheHeaderLength) {
  ExpectError(std::string("\x10\x00\x00", 3), absl::StatusCode::kDataLoss, "truncated");
}

TEST(SafetensorsTest, HeaderLengthPastTheEnd) {
  std::string file = RawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  file[0] = static_cast<char>(0xff);  // header length now far beyond the file
  file[1] = static_cast<char>(0x01);
  ExpectError(file, absl::StatusCode::kDataLoss, "past the end");
}

TEST(SafetensorsTest, TruncatedData) {
  absl::StatusOr<std::string> bytes =
      SerializeSafetensors({{"first", torch::ones({4})}, {"last", torch::ones({4})}});
  ASSERT_TRUE(bytes.ok());
  ExpectError(bytes->substr(0, bytes->size() - 3), absl::StatusCode::kDataLoss,
              "tensor \"last\": data_offsets [16, 32) out of range");
}

TEST(SafetensorsTest, MalformedJson) {
  ExpectError(RawFile(R"({"a": {"dtype": )", 0), absl::StatusCode::kDataLoss, "not a JSON object");
  ExpectError(RawFile(R"([1, 2])", 0), absl::StatusCode::kDataLoss, "not a JSON object");
}

TEST(SafetensorsTest, OverlappingOffsets) {
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                      12),
              absl::StatusCode::kDataLoss,
              "tensor \"b\" bytes [4, 12) overlap those of tensor \"a\"");
}

TEST(SafetensorsTest, OffsetsOutOfRange) {
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
              absl::StatusCode::kDataLoss, "tensor \"a\": data_offsets [8, 0)");
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", 8),
              absl::StatusCode::kDataLoss, "tensor \"a\": data_offsets must be");
}

TEST(SafetensorsTest, DtypeAndShapeDisagreeWithTheByteRange) {
  ExpectError(RawFile(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20),
              absl::StatusCode::kDataLoss,
              "tensor \"w\": dtype F32 and shape [2,3] do not match the 20 bytes");
  ExpectError(RawFile(R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,24]}})", 24),
              absl::StatusCode::kDataLoss, "dtype BF16 and shape [2,3]");
  // A shape whose element count overflows 64 bits.
  ExpectError(RawFile(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],)"
                      R"("data_offsets":[0,0]}})",
                      0),
              absl::StatusCode::kDataLoss, "do not match");
}

TEST(SafetensorsTest, BytesThatBelongToNoTensor) {
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
              absl::StatusCode::kDataLoss,
              "data bytes [0, 4) before tensor \"a\" belong to no tensor");
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 9),
              absl::StatusCode::kDataLoss, "5 trailing data bytes");
}

TEST(SafetensorsTest, UnsupportedDtypeIsInvalidArgument) {
  ExpectError(RawFile(R"({"q":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", 4),
              absl::StatusCode::kInvalidArgument, "tensor \"q\": unsupported dtype \"F8_E4M3\"");
}

TEST(SafetensorsTest, MalformedEntries) {
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0),
              absl::StatusCode::kDataLoss, "tensor \"a\": shape");
  ExpectError(RawFile(R"({"a":{"dtype":"F32","data_offsets":[0,0]}})", 0),
              absl::StatusCode::kDataLoss, "tensor \"a\": missing or non-array shape");
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4],"x":1}})", 4),
              absl::StatusCode::kDataLoss, "unknown header field \"x\"");
  ExpectError(RawFile(R"({"__metadata__":{"k":1}})", 0), absl::StatusCode::kDataLoss,
              "__metadata__ value \"k\"");
}

TEST(SafetensorsTest, ZeroSizedTensorsNeedNoBytes) {
  absl::StatusOr<SafetensorsContents> back = ParseSafetensors(
      RawFile(R"({"e":{"dtype":"F16","shape":[0,3],"data_offsets":[0,0]}})", 0), "zero");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->tensors[0].second.sizes(), (std::vector<int64_t>{0, 3}));
}

TEST(SafetensorsTest, WriterRejectsBadNamesAndDtypes) {
  EXPECT_EQ(
      SerializeSafetensors({{"a", torch::ones({1})}, {"a", torch::ones({1})}}).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SerializeSafetensors({{"__metadata__", torch::ones({1})}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> complex =
      SerializeSafetensors({{"c", torch::ones({2}, torch::kComplexFloat)}});
  EXPECT_EQ(complex.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(complex.status().message(), HasSubstr("\"c\""));
}

}  // namespace
}  // namespace compress::pipeline
