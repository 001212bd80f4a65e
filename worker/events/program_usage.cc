#include "worker/events/program_usage.h"

#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

std::set<std::string>& GivenFlags() {
  static auto* const kGiven = new std::set<std::string>;
  return *kGiven;
}

// Abseil's usage flags, answered by ParseProgramFlags; the last two take a value.
bool IsUsageFlag(absl::string_view name) {
  return name == "help" || name == "helpshort" || name == "helpfull" || name == "helppackage" ||
         name == "version" || name == "helpon" || name == "helpmatch";
}

struct UsageRequest {
  std::string flag;  // "" when none was given
  std::string value;
};

// A command-line argument read as a flag: "--name", "-name", "--name=value" or "-name=value".
struct FlagArgument {
  absl::string_view name;
  absl::string_view value;
  bool has_value = false;
};

// `arg` as a flag; nullopt for a positional argument (or "-"). The caller stops at "--".
std::optional<FlagArgument> AsFlag(absl::string_view arg) {
  if (arg.size() < 2 || arg[0] != '-') return std::nullopt;
  arg.remove_prefix(arg[1] == '-' ? 2 : 1);
  FlagArgument flag{arg, {}, false};
  if (size_t eq = arg.find('='); eq != absl::string_view::npos) {
    flag = {arg.substr(0, eq), arg.substr(eq + 1), true};
  }
  return flag;
}

// Abseil's flags that read other flags from files or the environment, or accept unknown ones.
bool IsFlagSourceFlag(absl::string_view name) {
  return name == "flagfile" || name == "fromenv" || name == "tryfromenv" || name == "undefok";
}

// --helpon and --helpmatch take a value, which may be the next argument.
bool UsageFlagTakesValue(absl::string_view name) { return name == "helpon" || name == "helpmatch"; }

// Records the flags the command line names (GivenFlags) and the first usage flag; unknown flags
// are left for Abseil to report.
UsageRequest ScanCommandLine(int argc, char** argv) {
  UsageRequest usage;
  for (int i = 1; i < argc; ++i) {
    if (absl::string_view(argv[i]) == "--") break;
    std::optional<FlagArgument> argument = AsFlag(argv[i]);
    if (!argument.has_value()) continue;
    absl::string_view name = argument->name;
    absl::string_view value = argument->value;
    bool has_value = argument->has_value;
    if (IsUsageFlag(name)) {
      if (UsageFlagTakesValue(name) && !has_value && i + 1 < argc) value = argv[++i];
      if (usage.flag.empty()) usage = {std::string(name), std::string(value)};
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && !has_value && absl::ConsumePrefix(&name, "no")) {
      flag = absl::FindCommandLineFlag(name);
      if (flag != nullptr && !flag->IsOfType<bool>()) flag = nullptr;
      has_value = true;
    }
    if (flag == nullptr) continue;
    GivenFlags().insert(std::string(flag->Name()));
    if (!has_value && !flag->IsOfType<bool>()) ++i;  // its value is the next argument
  }
  return usage;
}

// Appends `word` to `out`, starting a new line indented by six spaces when the current one
// would pass 80 columns.
void AppendWrapped(std::string* out, size_t* column, absl::string_view word) {
  if (*column > 6 && *column + 1 + word.size() > 80) {
    out->append("\n      ");
    *column = 6;
  } else if (*column > 0) {
    out->push_back(' ');
    ++*column;
  }
  out->append(word.data(), word.size());
  *column += word.size();
}

std::string FlagLine(const absl::CommandLineFlag& flag) {
  std::string line = "    ";
  size_t column = 4;
  line.append(absl::StrCat("--", flag.Name()));
  column += 2 + flag.Name().size();
  const bool quoted = flag.IsOfType<std::string>();
  auto shown = [quoted](const std::string& value) {
    return quoted ? absl::StrCat("\"", value, "\"") : value;
  };
  std::vector<std::string> words = absl::StrSplit(
      absl::StrCat("(", flag.Help(), "); default: ", shown(flag.DefaultValue()), ";"), ' ',
      absl::SkipEmpty());
  if (flag.CurrentValue() != flag.DefaultValue()) {
    words.push_back(absl::StrCat("currently: ", shown(flag.CurrentValue()), ";"));
  }
  for (const std::string& word : words) AppendWrapped(&line, &column, word);
  line.push_back('\n');
  return line;
}

// Prints the usage message and the flags of the files `wanted` accepts, grouped by file.
void PrintHelp(const std::function<bool(absl::string_view)>& wanted) {
  std::map<std::string, std::map<std::string, std::string>> by_file;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    std::string file = SourceRelative(flag->Filename());
    if (!wanted(file)) continue;
    by_file[file][std::string(name)] = FlagLine(*flag);
  }
  std::cout << program_name << ": " << absl::ProgramUsageMessage() << "\n";
  if (by_file.empty()) std::cout << "\n  No flags matched.\n";
  for (const auto& [file, lines] : by_file) {
    std::cout << "\n  Flags from " << file << ":\n";
    for (const auto& [name, line] : lines) std::cout << line;
  }
  std::cout.flush();
}

// The folder of the program's main.cc ("server/"), for --helppackage.
std::string MainFolder() {
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    std::string file = SourceRelative(flag->Filename());
    if (IsProgramFlagFile(file)) return file.substr(0, file.rfind('/') + 1);
  }
  return "";
}

void AnswerUsage(const UsageRequest& usage) {
  if (usage.flag == "version") {
    std::cout << program_name << " " << COMPRESS_VERSION << "\n";
  } else if (usage.flag == "helpfull") {
    PrintHelp([](absl::string_view) { return true; });
  } else if (usage.flag == "helppackage") {
    const std::string folder = MainFolder();
    PrintHelp([&](absl::string_view file) {
      return absl::StartsWith(file, folder) && file.find('/', folder.size()) == file.npos;
    });
  } else if (usage.flag == "helpon") {
    PrintHelp([&](absl::string_view file) {
      absl::string_view base = file.substr(file.rfind('/') + 1);
      absl::ConsumeSuffix(&base, ".cc");
      return base == usage.value || file == usage.value;
    });
  } else if (usage.flag == "helpmatch") {
    PrintHelp([&](absl::string_view file) { return absl::StrContains(file, usage.value); });
  } else {
    PrintHelp(IsProgramFlagFile);
  }
  std::exit(0);
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

std::vector<char*> ParseProgramFlags(int argc, char** argv) {
  GivenFlags().clear();
  UsageRequest usage = ScanCommandLine(argc, argv);
  if (!usage.flag.empty()) AnswerUsage(usage);
  return absl::ParseCommandLine(argc, argv);
}

absl::Status CheckCommandLineFlags(int argc, char** argv) {
  // A usage flag is answered whatever else the line holds. Flags that bring in other flags or
  // declare unknown ones acceptable (--flagfile, --fromenv, --tryfromenv, --undefok) are left to
  // Abseil, and so is the verdict on unknown flags when one of them is given: the flags a file or
  // the environment define are not known here.
  bool unknown_left_to_abseil = false;
  for (int i = 1; i < argc; ++i) {
    if (absl::string_view(argv[i]) == "--") break;
    std::optional<FlagArgument> argument = AsFlag(argv[i]);
    if (!argument.has_value()) continue;
    if (IsUsageFlag(argument->name)) return absl::OkStatus();
    if (IsFlagSourceFlag(argument->name)) unknown_left_to_abseil = true;
  }
  for (int i = 1; i < argc; ++i) {
    if (absl::string_view(argv[i]) == "--") break;
    std::optional<FlagArgument> argument = AsFlag(argv[i]);
    if (!argument.has_value()) continue;
    const absl::string_view name = argument->name;
    absl::string_view value = argument->value;
    const bool has_value = argument->has_value;
    if (IsFlagSourceFlag(name)) {
      if (!has_value) ++i;  // its value is the next argument
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    bool negated = false;
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* positive = absl::FindCommandLineFlag(name.substr(2));
      if (positive != nullptr && positive->IsOfType<bool>()) {
        flag = positive;
        negated = true;
      }
    }
    if (flag == nullptr) {
      if (unknown_left_to_abseil) continue;
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": unknown flag of ", program_name, " (see --help)"));
    }
    const std::string shown = absl::StrCat("--", flag->Name());
    if (negated) {
      if (has_value) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--", name, "=", value, ": the negative form of ", shown, " takes no value"));
      }
      continue;
    }
    if (!has_value) {
      if (flag->IsOfType<bool>()) continue;
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat(shown, ": missing value"));
      }
      value = argv[++i];
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      // Abseil's message repeats the value and the flag's name; only its reason, when it gives
      // one, is kept.
      absl::string_view reason = error;
      if (absl::ConsumePrefix(&reason, absl::StrCat("Illegal value '", value,
                                                    "' specified for flag '", flag->Name(), "'"))) {
        absl::ConsumePrefix(&reason, ";");
        reason = absl::StripAsciiWhitespace(reason);
      }
      return absl::InvalidArgumentError(
          absl::StrCat(shown, ": bad value '", value, "'", reason.empty() ? "" : ": ", reason));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckNoArguments(const std::vector<char*>& positional) {
  if (positional.size() <= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", positional[1],
                                                 "': ", program_name,
                                                 " takes flags only (--flag=VALUE); see --help"));
}

bool FlagGiven(absl::string_view name) { return GivenFlags().count(std::string(name)) > 0; }

}  // namespace compress
