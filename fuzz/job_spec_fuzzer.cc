// Fuzz target: the job spec parser and validator (worker/spec), which compressd runs on every
// CreateJob and compress-run on the spec file it is given.
//
// Input: the spec's JSON text. Beyond crashes and sanitizer reports, checks the documented round
// trip: a spec that parses gives back the same spec through ToJson and ParseJobSpecJson, and its
// JSON serialises without throwing.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "worker/spec/job_spec.h"

namespace {

[[noreturn]] void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "job_spec_fuzzer: %s: %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<compress::spec::JobSpec> spec = compress::spec::ParseJobSpec(text);
  if (!spec.ok()) {
    if (spec.status().message().empty()) Fail("error without a message", std::string(text));
    return 0;
  }
  const nlohmann::json json = compress::spec::ToJson(*spec);
  const std::string dumped = json.dump();
  absl::StatusOr<compress::spec::JobSpec> again = compress::spec::ParseJobSpecJson(json);
  if (!again.ok()) Fail("ToJson of a valid spec does not parse", again.status().ToString());
  if (compress::spec::ToJson(*again) != json) Fail("ToJson round trip changed the spec", dumped);
  absl::StatusOr<compress::spec::JobSpec> from_text = compress::spec::ParseJobSpec(dumped);
  if (!from_text.ok()) Fail("dumped spec does not parse", from_text.status().ToString());
  return 0;
}
