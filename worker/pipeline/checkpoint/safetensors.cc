#include "worker/pipeline/checkpoint/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "worker/events/durable_file.h"
#include "worker/pipeline/model/torch_error.h"

namespace compress::pipeline {
namespace {

using Json = nlohmann::json;

// The reference implementation refuses headers above 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  int64_t bytes;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kDouble, 8},    {"F32", torch::kFloat, 4}, {"F16", torch::kHalf, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kLong, 8},  {"I32", torch::kInt, 4},
    {"I16", torch::kShort, 2},     {"I8", torch::kChar, 1},   {"U8", torch::kByte, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* DtypeByName(const std::string& name) {
  for (const DtypeInfo& info : kDtypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

const DtypeInfo* DtypeByType(torch::ScalarType type) {
  for (const DtypeInfo& info : kDtypes) {
    if (type == info.type) return &info;
  }
  return nullptr;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// One header entry, validated on its own; ranges are checked against each other later.
struct Entry {
  std::string name;
  const DtypeInfo* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// Reads the header with nlohmann's SAX interface straight into compact entries: no JSON tree
// is built, whose nodes (16 bytes per value, a heap block per array or object, a map node per
// key) made a header near the 100 MB limit take gigabytes. Anything that is not the expected
// structure stops the parse at once, and the limits below bound what a well-formed header can
// describe, so the memory taken stays about the size of the header's own text.
class HeaderReader final : public nlohmann::json_sax<Json> {
 public:
  HeaderReader(const std::string& source, uint64_t data_size)
      : source_(source), data_size_(data_size) {}

  // The outcome once sax_parse has returned `parsed`.
  absl::Status Finish(bool parsed) {
    if (!status_.ok()) return status_;
    if (!parsed || state_ != State::kDone) {
      return absl::DataLossError(absl::StrCat(source_, ": header is not a JSON object"));
    }
    return absl::OkStatus();
  }

  std::vector<Entry>& entries() { return entries_; }
  std::map<std::string, std::string>& metadata() { return metadata_; }

  bool null() override { return Scalar(); }
  bool boolean(bool) override { return Scalar(); }
  bool number_integer(number_integer_t) override { return Scalar(); }
  bool number_float(number_float_t, const string_t&) override { return Scalar(); }
  bool binary(binary_t&) override { return Scalar(); }

  bool number_unsigned(number_unsigned_t value) override {
    if (state_ == State::kShape) {
      if (entry_.shape.size() == kMaxDims) {
        return EntryError(absl::StrCat("shape has more than ", kMaxDims, " dimensions"));
      }
      if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        overflow_ = true;
      } else if (value != 0 && numel_ > std::numeric_limits<uint64_t>::max() / value) {
        overflow_ = true;
      }
      numel_ *= value;
      entry_.shape.push_back(static_cast<int64_t>(value));
      return true;
    }
    if (state_ == State::kOffsets) {
      if (offsets_ == 2) return EntryError("data_offsets must be two non-negative integers");
      (offsets_ == 0 ? entry_.begin : entry_.end) = value;
      ++offsets_;
      return true;
    }
    return Scalar();
  }

  bool string(string_t& value) override {
    if (state_ == State::kEntry && field_ == Field::kDtype) {
      entry_.dtype = DtypeByName(value);
      if (entry_.dtype == nullptr) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            source_, ": tensor \"", entry_.name, "\": unsupported dtype \"", value, "\"")));
      }
      field_ = Field::kNone;
      return true;
    }
    if (state_ == State::kMetadata) {
      if (metadata_.size() == kMaxMetadataEntries) {
        return Fail(absl::DataLossError(absl::StrCat(source_, ": __metadata__ has more than ",
                                                     kMaxMetadataEntries, " entries")));
      }
      if (metadata_.count(key_) > 0) {
        return Fail(absl::DataLossError(
            absl::StrCat(source_, ": __metadata__ key \"", key_, "\" appears twice")));
      }
      metadata_.emplace(std::move(key_), std::move(value));
      return true;
    }
    return Scalar();
  }

  bool start_object(std::size_t) override {
    switch (state_) {
      case State::kStart:
        state_ = State::kTop;
        return true;
      case State::kTop:
        if (key_ == kMetadataKey) {
          state_ = State::kMetadata;
          return true;
        }
        if (entries_.size() == kMaxTensors) {
          return Fail(absl::DataLossError(
              absl::StrCat(source_, ": header describes more than ", kMaxTensors, " tensors")));
        }
        entry_ = Entry();
        entry_.name = std::move(key_);
        numel_ = 1;
        overflow_ = false;
        offsets_ = 0;
        seen_dtype_ = seen_shape_ = seen_offsets_ = false;
        field_ = Field::kNone;
        state_ = State::kEntry;
        return true;
      default:
        return Scalar();
    }
  }

  bool key(string_t& value) override {
    if (state_ == State::kTop) {
      if (value == kMetadataKey) {
        if (seen_metadata_)
          return Fail(absl::DataLossError(absl::StrCat(source_, ": __metadata__ appears twice")));
        seen_metadata_ = true;
      }
      key_ = std::move(value);
      return true;
    }
    if (state_ == State::kMetadata) {
      key_ = std::move(value);
      return true;
    }
    // state_ == kEntry: the only other state in which an object is open.
    bool* seen = nullptr;
    if (value == "dtype") {
      field_ = Field::kDtype;
      seen = &seen_dtype_;
    } else if (value == "shape") {
      field_ = Field::kShape;
      seen = &seen_shape_;
    } else if (value == "data_offsets") {
      field_ = Field::kOffsets;
      seen = &seen_offsets_;
    } else {
      return EntryError(absl::StrCat("unknown header field \"", value, "\""));
    }
    if (*seen) return EntryError(absl::StrCat("header field \"", value, "\" appears twice"));
    *seen = true;
    return true;
  }

  bool end_object() override {
    switch (state_) {
      case State::kTop:
        state_ = State::kDone;
        return true;
      case State::kMetadata:
        state_ = State::kTop;
        return true;
      case State::kEntry:
        state_ = State::kTop;
        return FinishEntry();
      default:
        return Scalar();
    }
  }

  bool start_array(std::size_t) override {
    if (state_ == State::kEntry && field_ == Field::kShape) {
      state_ = State::kShape;
      return true;
    }
    if (state_ == State::kEntry && field_ == Field::kOffsets) {
      state_ = State::kOffsets;
      return true;
    }
    return Scalar();
  }

  bool end_array() override {
    if (state_ == State::kShape) {
      state_ = State::kEntry;
      field_ = Field::kNone;
      return true;
    }
    if (state_ == State::kOffsets) {
      if (offsets_ != 2) return EntryError("data_offsets must be two non-negative integers");
      state_ = State::kEntry;
      field_ = Field::kNone;
      return true;
    }
    return Scalar();
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;  // Finish reports it
  }

 private:
  // Bounds on what a header may describe, far above any real checkpoint (a Swin has a few
  // hundred tensors of at most 4 dimensions): each entry costs memory beyond its text.
  static constexpr size_t kMaxTensors = 65536;
  static constexpr size_t kMaxDims = 64;
  static constexpr size_t kMaxMetadataEntries = 4096;

  enum class State { kStart, kTop, kMetadata, kEntry, kShape, kOffsets, kDone };
  enum class Field { kNone, kDtype, kShape, kOffsets };

  bool Fail(absl::Status status) {
    status_ = std::move(status);
    return false;
  }

  bool EntryError(const std::string& what) {
    return Fail(
        absl::DataLossError(absl::StrCat(source_, ": tensor \"", entry_.name, "\": ", what)));
  }

  // A value (scalar, or the start or end of an object or array) where none of its kind belongs.
  bool Scalar() {
    switch (state_) {
      case State::kTop:
        if (key_ == kMetadataKey) {
          return Fail(
              absl::DataLossError(absl::StrCat(source_, ": __metadata__ is not a JSON object")));
        }
        return Fail(absl::DataLossError(
            absl::StrCat(source_, ": tensor \"", key_, "\": header entry is not a JSON object")));
      case State::kMetadata:
        return Fail(absl::DataLossError(
            absl::StrCat(source_, ": __metadata__ value \"", key_, "\" is not a string")));
      case State::kEntry:
        switch (field_) {
          case Field::kDtype:
            return EntryError("missing or non-string dtype");
          case Field::kShape:
            return EntryError("missing or non-array shape");
          default:
            return EntryError("data_offsets must be two non-negative integers");
        }
      case State::kShape:
        return EntryError("shape holds a value that is not a size");
      case State::kOffsets:
        return EntryError("data_offsets must be two non-negative integers");
      default:
        return false;  // not an object at the top: Finish says so
    }
  }

  bool FinishEntry() {
    if (!seen_dtype_ || entry_.dtype == nullptr) return EntryError("missing or non-string dtype");
    if (!seen_shape_) return EntryError("missing or non-array shape");
    if (!seen_offsets_) return EntryError("data_offsets must be two non-negative integers");
    if (entry_.begin > entry_.end || entry_.end > data_size_) {
      return EntryError(absl::StrCat("data_offsets [", entry_.begin, ", ", entry_.end,
                                     ") out of range of the ", data_size_, "-byte data section"));
    }
    const uint64_t bytes = entry_.end - entry_.begin;
    if (overflow_ || numel_ > bytes / static_cast<uint64_t>(entry_.dtype->bytes) + 1 ||
        numel_ * static_cast<uint64_t>(entry_.dtype->bytes) != bytes) {
      return EntryError(absl::StrCat("dtype ", entry_.dtype->name, " and shape ",
                                     ShapeString(entry_.shape), " do not match the ", bytes,
                                     " bytes of data_offsets [", entry_.begin, ", ", entry_.end,
                                     ")"));
    }
    entry_.shape.shrink_to_fit();
    entries_.push_back(std::move(entry_));
    return true;
  }

  const std::string& source_;
  const uint64_t data_size_;
  absl::Status status_;
  State state_ = State::kStart;
  std::string key_;  // the last key at the top or in __metadata__
  bool seen_metadata_ = false;
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
  // The entry being read.
  Entry entry_;
  Field field_ = Field::kNone;
  bool seen_dtype_ = false;
  bool seen_shape_ = false;
  bool seen_offsets_ = false;
  uint64_t numel_ = 1;
  bool overflow_ = false;
  int offsets_ = 0;
};

}  // namespace

absl::StatusOr<SafetensorsContents> ParseSafetensors(const std::string& bytes,
                                                     const std::string& source) {
  if (bytes.size() < 8) {
    return absl::DataLossError(absl::StrCat(source, ": truncated safetensors file: ", bytes.size(),
                                            " bytes, the header length alone takes 8"));
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) {
    header_size = (header_size << 8) | static_cast<unsigned char>(bytes[i]);
  }
  if (header_size > kMaxHeaderBytes) {
    return absl::DataLossError(absl::StrCat(source, ": header length ", header_size,
                                            " exceeds the limit of ", kMaxHeaderBytes, " bytes"));
  }
  if (header_size > bytes.size() - 8) {
    return absl::DataLossError(absl::StrCat(source, ": header length ", header_size,
                                            " runs past the end of the ", bytes.size(),
                                            "-byte file (truncated?)"));
  }
  const uint64_t data_start = 8 + header_size;
  const uint64_t data_size = bytes.size() - data_start;
  HeaderReader reader(source, data_size);
  const bool parsed = Json::sax_parse(bytes.begin() + 8, bytes.begin() + 8 + header_size, &reader,
                                      nlohmann::json::input_format_t::json, /*strict=*/true);
  if (absl::Status status = reader.Finish(parsed); !status.ok()) return status;
  std::vector<Entry>& entries = reader.entries();

  // One entry per name.
  {
    std::vector<const Entry*> by_name;
    by_name.reserve(entries.size());
    for (const Entry& entry : entries) by_name.push_back(&entry);
    std::sort(by_name.begin(), by_name.end(),
              [](const Entry* a, const Entry* b) { return a->name < b->name; });
    for (size_t i = 1; i < by_name.size(); ++i) {
      if (by_name[i]->name == by_name[i - 1]->name) {
        return absl::DataLossError(
            absl::StrCat(source, ": tensor \"", by_name[i]->name, "\" appears twice"));
      }
    }
  }

  // The byte ranges must tile the data section exactly: no overlap, no hole, no tail. Ties
  // (empty tensors at one offset) are ordered by name, so the order does not depend on the
  // header's.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry& entry : entries) {
    if (entry.begin < covered) {
      return absl::DataLossError(
          absl::StrCat(source, ": tensor \"", entry.name, "\" bytes [", entry.begin, ", ",
                       entry.end, ") overlap those of tensor \"", previous->name, "\""));
    }
    if (entry.begin > covered) {
      return absl::DataLossError(absl::StrCat(source, ": data bytes [", covered, ", ", entry.begin,
                                              ") before tensor \"", entry.name,
                                              "\" belong to no tensor"));
    }
    covered = entry.end;
    if (entry.end > entry.begin) previous = &entry;
  }
  if (covered != data_size) {
    return absl::DataLossError(absl::StrCat(source, ": ", data_size - covered,
                                            " trailing data bytes belong to no tensor"));
  }

  SafetensorsContents contents;
  contents.metadata = std::move(reader.metadata());
  try {
    contents.tensors.reserve(entries.size());
    for (Entry& entry : entries) {
      torch::Tensor tensor = torch::empty(entry.shape, torch::dtype(entry.dtype->type));
      if (entry.end > entry.begin) {
        std::memcpy(tensor.data_ptr(), bytes.data() + data_start + entry.begin,
                    entry.end - entry.begin);
      }
      contents.tensors.emplace_back(std::move(entry.name), std::move(tensor));
    }
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, absl::StrCat("reading ", source));
  }
  return contents;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return ErrnoStatus(errno, absl::StrCat("cannot open ", path));
  // Read into a string of the file's size: a stream buffer that grows by doubling, then copied
  // out, would hold the file up to three times over.
  std::string out;
  const std::streamoff size = in.tellg();
  if (size > 0) {
    in.seekg(0);
    out.resize(static_cast<size_t>(size));
    in.read(out.data(), size);
    out.resize(static_cast<size_t>(in.gcount()));
  } else {
    in.seekg(0);
  }
  // Anything past the size first seen (a file still growing, or one without a size).
  if (in.good()) {
    std::ostringstream rest;
    rest << in.rdbuf();
    out += rest.str();
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return out;
}

absl::StatusOr<SafetensorsContents> ReadSafetensors(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  return ParseSafetensors(*bytes, path);
}

absl::StatusOr<std::string> SerializeSafetensors(
    const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  std::vector<torch::Tensor> contiguous;
  std::set<std::string> names;
  uint64_t offset = 0;
  try {
    for (const auto& [name, tensor] : tensors) {
      if (name.empty() || name == kMetadataKey || !names.insert(name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("safetensors: tensor name \"", name, "\" is empty, reserved or repeated"));
      }
      const DtypeInfo* dtype = DtypeByType(tensor.scalar_type());
      if (dtype == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("safetensors: tensor \"", name, "\" has unsupported dtype ",
                         std::string(c10::toString(tensor.scalar_type()))));
      }
      torch::Tensor data = tensor.detach().to(torch::kCPU).contiguous();
      const uint64_t bytes = static_cast<uint64_t>(data.numel()) * dtype->bytes;
      header[name] = {{"dtype", dtype->name},
                      {"shape", data.sizes().vec()},
                      {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
      contiguous.push_back(std::move(data));
    }
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, "serialising safetensors");
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::string header_text = header.dump();
  // Pad with spaces so that the data section starts at a multiple of 8 bytes.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + header_text.size() + offset);
  uint64_t header_size = header_text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((header_size >> (8 * i)) & 0xff));
  out += header_text;
  for (const torch::Tensor& data : contiguous) {
    out.append(static_cast<const char*>(data.data_ptr()), data.numel() * data.element_size());
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::string> bytes = SerializeSafetensors(tensors, metadata);
  if (!bytes.ok()) return bytes.status();
  return WriteFileAtomically(path, *bytes);
}

}  // namespace compress::pipeline
