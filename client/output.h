// Text and JSON renderings of API messages for compressctl's output.
#ifndef COMPRESS_CLIENT_OUTPUT_H_
#define COMPRESS_CLIENT_OUTPUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "compress/v1/compression_service.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"

namespace compress::client {

// The message as JSON with proto field names; one line unless `multiline`.
std::string ToJson(const google::protobuf::Message& message, bool multiline = false);

// "SUCCEEDED", ...
std::string StateName(compress::v1::JobState state);

// Whether the job is over (SUCCEEDED, FAILED or CANCELLED).
bool IsFinished(compress::v1::JobState state);

// "1.5 MiB".
std::string HumanBytes(int64_t bytes);

// RFC 3339 UTC, or "-" when unset.
std::string FormatTimestamp(const google::protobuf::Timestamp& time);

// A multi-line description of a job (get, submit, cancel).
std::string FormatJob(const compress::v1::Job& job);

// A table with one row per job (list).
std::string FormatJobTable(const std::vector<compress::v1::Job>& jobs);

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_OUTPUT_H_
