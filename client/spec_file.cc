#include "client/spec_file.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "worker/spec/job_spec.h"

namespace compress::client {

absl::StatusOr<compress::v1::JobSpec> ParseJobSpecText(const std::string& text,
                                                       const std::string& file_name) {
  compress::v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto parsed = google::protobuf::util::JsonStringToMessage(text, &spec, options);
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
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read spec file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return ParseJobSpecText(text.str(), path);
}

}  // namespace compress::client
