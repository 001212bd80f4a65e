// Tests of the safetensors reader and writer: round trips and every kind of corruption.
#include "worker/pipeline/checkpoint/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
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

TEST(SafetensorsTest, MalformedEntriesAreRefusedWhereTheyAppear) {
  ExpectError(RawFile(R"({"a":[1,2]})", 0), absl::StatusCode::kDataLoss,
              "tensor \"a\": header entry is not a JSON object");
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[[]],"data_offsets":[0,0]}})", 0),
              absl::StatusCode::kDataLoss, "tensor \"a\": shape holds a value that is not a size");
  ExpectError(RawFile(R"({"a":{"dtype":["F32"],"shape":[],"data_offsets":[0,4]}})", 4),
              absl::StatusCode::kDataLoss, "tensor \"a\": missing or non-string dtype");
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4,4]}})", 4),
              absl::StatusCode::kDataLoss, "data_offsets must be two non-negative integers");
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0]}})", 4),
              absl::StatusCode::kDataLoss, "data_offsets must be two non-negative integers");
  ExpectError(RawFile(R"({"a":{"dtype":"F32","dtype":"F32","shape":[],"data_offsets":[0,4]}})", 4),
              absl::StatusCode::kDataLoss, "tensor \"a\": header field \"dtype\" appears twice");
  ExpectError(RawFile(R"({"__metadata__":[]})", 0), absl::StatusCode::kDataLoss,
              "__metadata__ is not a JSON object");
  ExpectError(RawFile(R"({"__metadata__":{"k":"a","k":"b"}})", 0), absl::StatusCode::kDataLoss,
              "__metadata__ key \"k\" appears twice");
  // A name given twice (JSON leaves it to the reader; the last one would silently win).
  ExpectError(RawFile(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                      R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                      2),
              absl::StatusCode::kDataLoss, "tensor \"a\" appears twice");
  ExpectError(RawFile(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}} x)", 4),
              absl::StatusCode::kDataLoss, "header is not a JSON object");
  ExpectError(RawFile("[]", 0), absl::StatusCode::kDataLoss, "header is not a JSON object");
}

// A file whose header is `bytes` bytes: `item` repeated inside `open` ... `close` (a "#" in
// `item` replaced by a counter, for distinct names), padded with spaces; no data.
std::string FileOfRepeats(const std::string& open, const std::string& item,
                          const std::string& close, uint64_t bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((bytes >> (8 * i)) & 0xff);
  out.reserve(8 + bytes);
  out += open;
  const size_t mark = item.find('#');
  const std::string before = item.substr(0, mark);
  const std::string after = mark == std::string::npos ? "" : item.substr(mark + 1);
  for (uint64_t i = 0; out.size() - 8 + item.size() + 8 + close.size() < bytes; ++i) {
    out += before;
    if (mark != std::string::npos) out += std::to_string(i);
    out += after;
  }
  if (out.back() == ',') out.pop_back();
  out += close;
  out.append(8 + bytes - out.size(), ' ');
  return out;
}

int64_t PeakRssBytes() {
  struct rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

// Headers near the format's 100 MB limit that cost a JSON tree gigabytes (16 bytes per value, a
// heap block per array, a map node per key) are read without one: refused where they leave the
// format or pass a limit, with the memory of the parse staying far below the header's size.
TEST(SafetensorsTest, HugeHeadersTakeLittleMemory) {
  constexpr uint64_t kBytes = 90'000'000;
  struct Case {
    std::string open, item, close, error;
  };
  const Case cases[] = {
      {R"({"t":{"dtype":"F32","data_offsets":[0,0],"shape":[)", "[],", "]}}",
       "tensor \"t\": shape holds a value that is not a size"},
      {R"({"t":{"dtype":"F32","data_offsets":[0,0],"shape":[)", "0,", "]}}",
       "tensor \"t\": shape has more than 64 dimensions"},
      {"{", R"("t#":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)", "}",
       "header describes more than 65536 tensors"},
      {R"({"__metadata__":{)", R"("k#":"",)", "}}", "__metadata__ has more than 4096 entries"},
  };
  for (const Case& c : cases) {
    const std::string bytes = FileOfRepeats(c.open, c.item, c.close, kBytes);
    const int64_t before = PeakRssBytes();
    ExpectError(bytes, absl::StatusCode::kDataLoss, c.error);
    EXPECT_LT(PeakRssBytes() - before, int64_t{64} << 20) << c.error;
  }
  // Within the limits, a header of that size is read (here, one tensor and spaces).
  std::string file = RawFile(
      R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})" + std::string(kBytes - 54, ' '),
      4);
  absl::StatusOr<SafetensorsContents> read = ParseSafetensors(file, "spaces");
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->tensors.size(), 1u);
  EXPECT_EQ(read->tensors[0].first, "t");
}

TEST(SafetensorsTest, LimitsAreInclusive) {
  // 64 dimensions, 4096 metadata entries and 65536 tensors are read.
  std::string dims = "[";
  for (int i = 0; i < 64; ++i) dims += i == 0 ? "1" : ",1";
  dims += "]";
  absl::StatusOr<SafetensorsContents> read = ParseSafetensors(
      RawFile(R"({"t":{"dtype":"U8","shape":)" + dims + R"(,"data_offsets":[0,1]}})", 1), "dims");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->tensors[0].second.dim(), 64);

  std::string header = R"({"__metadata__":{)";
  for (int i = 0; i < 4096; ++i)
    header += (i == 0 ? "\"k" : ",\"k") + std::to_string(i) + "\":\"\"";
  header += "},";
  for (int i = 0; i < 65536; ++i) {
    header += (i == 0 ? "\"t" : ",\"t") + std::to_string(i) +
              R"(":{"dtype":"U8","shape":[0],"data_offsets":[0,0]})";
  }
  header += "}";
  read = ParseSafetensors(RawFile(header, 0), "many");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->tensors.size(), 65536u);
  EXPECT_EQ(read->metadata.size(), 4096u);
  // Empty tensors at one offset come in name order.
  EXPECT_EQ(read->tensors[0].first, "t0");
  EXPECT_EQ(read->tensors[1].first, "t1");
  EXPECT_EQ(read->tensors[2].first, "t10");
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
