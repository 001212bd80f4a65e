#include "worker/events/program_usage.h"

#include <string>

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace compress {
namespace {

const char* program_name = "";

bool IsProgramFlagFile(absl::string_view file) { return absl::EndsWith(file, "main.cc"); }

// "server/main.cc" rather than the path the compiler was given: absolute in the checkout the
// program was built in, or relative to the build directory ("../server/main.cc").
std::string SourceRelative(absl::string_view file) {
  absl::ConsumePrefix(&file, COMPRESS_SOURCE_DIR "/");
  while (absl::ConsumePrefix(&file, "../") || absl::ConsumePrefix(&file, "./")) {
  }
  return std::string(file);
}

}  // namespace

const char* ProjectVersion() { return COMPRESS_VERSION; }

void SetProgramUsage(const char* program, const std::string& usage) {
  program_name = program;
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = IsProgramFlagFile;
  config.contains_helpshort_flags = IsProgramFlagFile;
  config.normalize_filename = SourceRelative;
  config.version_string = [] { return absl::StrCat(program_name, " ", COMPRESS_VERSION, "\n"); };
  absl::SetFlagsUsageConfig(config);
}

}  // namespace compress
