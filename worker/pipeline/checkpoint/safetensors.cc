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

absl::StatusOr<Entry> ParseEntry(const std::string& source, const std::string& name,
                                 const Json& value, uint64_t data_size) {
  auto error = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(source, ": tensor \"", name, "\": ", what));
  };
  if (!value.is_object()) return error("header entry is not a JSON object");
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets") {
      return error(absl::StrCat("unknown header field \"", it.key(), "\""));
    }
  }
  Entry entry;
  entry.name = name;
  auto dtype = value.find("dtype");
  if (dtype == value.end() || !dtype->is_string()) return error("missing or non-string dtype");
  entry.dtype = DtypeByName(dtype->get<std::string>());
  if (entry.dtype == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": tensor \"", name, "\": unsupported dtype \"", dtype->get<std::string>(), "\""));
  }
  auto shape = value.find("shape");
  if (shape == value.end() || !shape->is_array()) return error("missing or non-array shape");
  uint64_t numel = 1;
  bool overflow = false;
  for (const Json& dim : *shape) {
    if (!dim.is_number_unsigned()) return error("shape holds a value that is not a size");
    const uint64_t size = dim.get<uint64_t>();
    if (size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
    if (size != 0 && numel > std::numeric_limits<uint64_t>::max() / size) overflow = true;
    numel *= size;
    entry.shape.push_back(static_cast<int64_t>(size));
  }
  auto offsets = value.find("data_offsets");
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
    return error("data_offsets must be two non-negative integers");
  }
  entry.begin = (*offsets)[0].get<uint64_t>();
  entry.end = (*offsets)[1].get<uint64_t>();
  if (entry.begin > entry.end || entry.end > data_size) {
    return error(absl::StrCat("data_offsets [", entry.begin, ", ", entry.end,
                              ") out of range of the ", data_size, "-byte data section"));
  }
  const uint64_t bytes = entry.end - entry.begin;
  if (overflow || numel > bytes / static_cast<uint64_t>(entry.dtype->bytes) + 1 ||
      numel * static_cast<uint64_t>(entry.dtype->bytes) != bytes) {
    return error(absl::StrCat("dtype ", entry.dtype->name, " and shape ", ShapeString(entry.shape),
                              " do not match the ", bytes, " bytes of data_offsets [", entry.begin,
                              ", ", entry.end, ")"));
  }
  return entry;
}

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
  const Json header = Json::parse(bytes.begin() + 8, bytes.begin() + 8 + header_size,
                                  /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::DataLossError(absl::StrCat(source, ": header is not a JSON object"));
  }
  const uint64_t data_start = 8 + header_size;
  const uint64_t data_size = bytes.size() - data_start;

  SafetensorsContents contents;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (!it->is_object()) {
        return absl::DataLossError(absl::StrCat(source, ": __metadata__ is not a JSON object"));
      }
      for (auto meta = it->begin(); meta != it->end(); ++meta) {
        if (!meta->is_string()) {
          return absl::DataLossError(
              absl::StrCat(source, ": __metadata__ value \"", meta.key(), "\" is not a string"));
        }
        contents.metadata[meta.key()] = meta->get<std::string>();
      }
      continue;
    }
    absl::StatusOr<Entry> entry = ParseEntry(source, it.key(), *it, data_size);
    if (!entry.ok()) return entry.status();
    entries.push_back(*std::move(entry));
  }

  // The byte ranges must tile the data section exactly: no overlap, no hole, no tail.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
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

  try {
    for (const Entry& entry : entries) {
      torch::Tensor tensor = torch::empty(entry.shape, torch::dtype(entry.dtype->type));
      if (entry.end > entry.begin) {
        std::memcpy(tensor.data_ptr(), bytes.data() + data_start + entry.begin,
                    entry.end - entry.begin);
      }
      contents.tensors.emplace_back(entry.name, std::move(tensor));
    }
  } catch (const c10::Error& error) {
    return StatusFromTorchError(error, absl::StrCat("reading ", source));
  }
  return contents;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus(errno, absl::StrCat("cannot open ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return std::move(buffer).str();
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
