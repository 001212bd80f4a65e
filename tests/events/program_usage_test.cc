#include "worker/events/program_usage.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, usage_test_count, 0, "A number.");
ABSL_FLAG(bool, usage_test_switch, false, "A switch.");
ABSL_FLAG(absl::Duration, usage_test_wait, absl::Seconds(1), "A duration.");

namespace compress {
namespace {

// CheckCommandLineFlags on `args` (argv[0] added).
absl::Status Check(std::vector<std::string> args) {
  static const bool kUsageSet = [] {
    SetProgramUsage("usage-test", "a test of the command line checks");
    return true;
  }();
  (void)kUsageSet;
  args.insert(args.begin(), "usage-test");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  return CheckCommandLineFlags(static_cast<int>(args.size()), argv.data());
}

TEST(CheckCommandLineFlagsTest, AcceptsWhatAbseilParses) {
  EXPECT_TRUE(Check({"--usage_test_count=3", "--usage_test_switch", "--nousage_test_switch",
                     "-usage_test_count", "4", "--usage_test_switch=false", "--usage_test_wait=90s",
                     "positional", "-", "--", "--no_such_flag"})
                  .ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_usage_test_count), 4);  // stored, as the parser would
  EXPECT_EQ(absl::GetFlag(FLAGS_usage_test_wait), absl::Seconds(90));
  // A usage flag is answered by ParseProgramFlags, whatever else the line holds.
  EXPECT_TRUE(Check({"--help", "--helpon", "main", "--version"}).ok());
  EXPECT_TRUE(Check({"--usage_test_count=x", "--help"}).ok());
  // Flags from files, the environment or --undefok are Abseil's to judge (the files are not
  // read here), in either form of their value.
  EXPECT_TRUE(Check({"--undefok=no_such_flag,other", "--no_such_flag=1", "--nono_such_flag"}).ok());
  EXPECT_TRUE(Check({"--undefok", "no_such_flag", "--no_such_flag"}).ok());
  EXPECT_TRUE(Check({"--flagfile=/nonexistent/flags", "--no_such_flag"}).ok());
  EXPECT_TRUE(Check({"--fromenv", "no_such_flag", "--no_such_flag=2"}).ok());
  // A known flag's value is still checked then.
  EXPECT_EQ(Check({"--flagfile=/nonexistent/flags", "--usage_test_count=x"}).message(),
            "--usage_test_count: bad value 'x'");
}

TEST(CheckCommandLineFlagsTest, NamesTheFlagAndWhatIsWrong) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"--usage_test_cuont=3"},
            "--usage_test_cuont: unknown flag of usage-test (see --help)"},
           {{"--nousage_test_count"},
            "--nousage_test_count: unknown flag of usage-test (see --help)"},
           {{"--usage_test_count"}, "--usage_test_count: missing value"},
           {{"--usage_test_count=three"}, "--usage_test_count: bad value 'three'"},
           {{"--usage_test_count", "3x"}, "--usage_test_count: bad value '3x'"},
           {{"--usage_test_wait=5"}, "--usage_test_wait: bad value '5'"},
           {{"--usage_test_switch=maybe"}, "--usage_test_switch: bad value 'maybe'"},
           {{"--nousage_test_switch=true"},
            "--nousage_test_switch=true: the negative form of --usage_test_switch takes no value"},
       }) {
    absl::Status status = Check(c.args);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.args[0];
    EXPECT_EQ(status.message(), c.message) << c.args[0];
  }
}

}  // namespace
}  // namespace compress
