// Fuzz target: the executor's event-line parser (worker/events), with which compress-worker reads
// every line compress-run writes on its stdout.
//
// Input: one line. Beyond crashes and sanitizer reports, checks that a line that parses
// serialises into a line that parses again and serialises to the same text (Serialize is a fixed
// point after one Parse).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/events/event.h"

namespace {

[[noreturn]] void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "event_fuzzer: %s: %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view line(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<compress::events::Event> event = compress::events::Parse(line);
  if (!event.ok()) {
    if (event.status().code() != absl::StatusCode::kInvalidArgument) {
      Fail("error other than INVALID_ARGUMENT", event.status().ToString());
    }
    return 0;
  }
  const std::string first = compress::events::Serialize(*event);
  absl::StatusOr<compress::events::Event> again = compress::events::Parse(first);
  if (!again.ok()) Fail("serialised event does not parse", again.status().ToString());
  const std::string second = compress::events::Serialize(*again);
  if (second != first) Fail("serialisation is not stable", first + " became " + second);
  (void)compress::events::StatusCodeFromName(event->code);
  return 0;
}
