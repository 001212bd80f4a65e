#include "client/spec_file.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/local_file.h"
#include "client/yaml_lite.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "worker/spec/job_spec.h"

namespace compress::client {
namespace {

// The file name's extension decides; without a known one, the first character does.
bool IsYaml(const std::string& text, const std::string& file_name) {
  const std::string name = absl::AsciiStrToLower(file_name);
  if (absl::EndsWith(name, ".yaml") || absl::EndsWith(name, ".yml")) return true;
  if (absl::EndsWith(name, ".json")) return false;
  const size_t first = text.find_first_not_of(" \t\r\n");
  return first == std::string::npos || text[first] != '{';
}

}  // namespace

absl::StatusOr<compress::v1::JobSpec> ParseJobSpecText(const std::string& file_text,
                                                       const std::string& file_name) {
  // A UTF-8 byte order mark, as some editors write, is not part of the document.
  absl::string_view without_mark = file_text;
  absl::ConsumePrefix(&without_mark, "\xEF\xBB\xBF");
  const std::string text(without_mark);
  std::string json_text = text;
  if (IsYaml(text, file_name)) {
    absl::StatusOr<nlohmann::json> document = ParseYamlLite(text, file_name);
    if (!document.ok()) return document.status();
    if (!document->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(
          file_name, ": expected a mapping of compress.v1.JobSpec fields at the top level"));
    }
    json_text = document->dump();
  } else if (std::optional<std::string> duplicate = spec::FindDuplicateKey(json_text)) {
    // protobuf's JSON parser keeps one of the two values silently.
    return absl::InvalidArgumentError(absl::StrCat(
        file_name, ": ", *duplicate, ": given twice (a JSON object names each key once)"));
  }
  compress::v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto parsed = google::protobuf::util::JsonStringToMessage(json_text, &spec, options);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_name, ": not a compress.v1.JobSpec: ", std::string(parsed.message())));
  }
  // The server validates the spec too; checking here names the file in the message.
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  google::protobuf::util::MessageToJsonString(spec, &json, print);
  absl::StatusOr<spec::JobSpec> checked = spec::ParseJobSpec(json);
  if (!checked.ok()) {
    return absl::Status(checked.status().code(),
                        absl::StrCat(file_name, ": ", checked.status().message()));
  }
  return spec;
}

absl::StatusOr<compress::v1::JobSpec> LoadJobSpecFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadLocalFile(path, "spec file");
  if (!text.ok()) return text.status();
  return ParseJobSpecText(*text, path);
}

}  // namespace compress::client
