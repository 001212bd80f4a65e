// compressctl as built: what main.cc does with its flags and environment before any command runs
// (tokens, flags that do not apply, --help), observed through the exit status and stderr.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace compress::client {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

struct Result {
  // The exit status, or -1 when a signal ended the program.
  int exit_code = -1;
  int signal = 0;
  std::string out;
  std::string err;
};

class CompressctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/compressctl_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Runs compressctl with `args` and, besides PATH, only the environment in `env`. Calls go to a
  // port nothing listens on, so a command that gets as far as calling fails UNAVAILABLE.
  Result Compressctl(std::vector<std::string> args,
                     const std::map<std::string, std::string>& env = {}) {
    args.insert(args.begin(),
                {COMPRESSCTL_BIN, "--server=127.0.0.1:1", "--timeout=2s", "--retry_for=1s"});
    const std::string out_path = dir_ + "/stdout";
    const std::string err_path = dir_ + "/stderr";
    pid_t pid = fork();
    if (pid == 0) {
      int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(out, STDOUT_FILENO);
      dup2(err, STDERR_FILENO);
      clearenv();
      setenv("PATH", "/usr/bin:/bin", 1);
      for (const auto& [key, value] : env) setenv(key.c_str(), value.c_str(), 1);
      std::vector<char*> argv;
      for (std::string& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    Result run;
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) run.signal = WTERMSIG(status);
    run.out = ReadFile(out_path);
    run.err = ReadFile(err_path);
    return run;
  }

  static std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  std::string dir_;
};

TEST_F(CompressctlTest, ATokenWithSurroundingWhitespaceOrAByteOrderMarkIsCleaned) {
  // A token that reaches gRPC with "\r" or a BOM made it abort; cleaned, the call just fails to
  // connect.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--token=tok-1\r", "get", "j1"},
        std::vector<std::string>{"--token_file=" + dir_ + "/token", "get", "j1"},
        std::vector<std::string>{"get", "j1"}}) {
    std::ofstream(dir_ + "/token", std::ios::binary) << "\xEF\xBB\xBFtok-1\r\n";
    Result run = Compressctl(args, {{"COMPRESS_TOKEN", " tok-1\r\n"}});
    EXPECT_EQ(run.signal, 0) << args[0] << ": " << run.err;
    EXPECT_EQ(run.exit_code, 1) << args[0];
    EXPECT_THAT(run.err, HasSubstr("get jobs/j1: UNAVAILABLE")) << args[0];
  }
}

TEST_F(CompressctlTest, ATokenWithAByteGrpcRefusesIsAnErrorNamingItsSource) {
  Result flag = Compressctl({"--token=tok\x01x", "get", "j1"});
  EXPECT_EQ(flag.signal, 0);
  EXPECT_EQ(flag.exit_code, 1);
  EXPECT_THAT(flag.err, HasSubstr("--token: byte 0x01 at offset 3 is not printable ASCII"));

  Result env = Compressctl({"get", "j1"}, {{"COMPRESS_TOKEN", "t\xC3\xB6k"}});
  EXPECT_EQ(env.signal, 0);
  EXPECT_EQ(env.exit_code, 1);
  EXPECT_THAT(env.err, HasSubstr("$COMPRESS_TOKEN: byte 0xc3 at offset 1"));

  std::ofstream(dir_ + "/token", std::ios::binary) << "\xFF\xFEtok\r\n";  // UTF-16
  Result file = Compressctl({"--token_file=" + dir_ + "/token", "get", "j1"});
  EXPECT_EQ(file.signal, 0);
  EXPECT_EQ(file.exit_code, 1);
  EXPECT_THAT(file.err, HasSubstr("compressctl: get: INVALID_ARGUMENT: --token_file: " + dir_ +
                                  "/token: byte 0xff at offset 0"));
  EXPECT_THAT(file.err, Not(HasSubstr("UNAVAILABLE")));
}

// A file a flag names that cannot be read is reported as a spec file is: the code its errno maps
// to and why, without the usage text.
TEST_F(CompressctlTest, AFileAFlagNamesThatCannotBeReadIsReportedWithItsCode) {
  const std::string missing = dir_ + "/missing.pem";
  std::ofstream(dir_ + "/cert.pem") << "-----BEGIN CERTIFICATE-----\n";
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c :
       std::vector<Case>{{{"--token_file=" + missing, "get", "j1"},
                          "compressctl: get: NOT_FOUND: --token_file: cannot read " + missing +
                              ": No such file or directory\n"},
                         {{"--token_file=" + dir_, "list"},
                          "compressctl: list: FAILED_PRECONDITION: --token_file: cannot read " +
                              dir_ + ": Is a directory\n"},
                         {{"--tls_ca=" + missing, "health"},
                          "compressctl: health: NOT_FOUND: --tls_ca: cannot read " + missing +
                              ": No such file or directory\n"},
                         {{"--tls_cert=" + missing, "--tls_key=" + dir_ + "/cert.pem", "get", "j1"},
                          "compressctl: get: NOT_FOUND: --tls_cert: cannot read " + missing +
                              ": No such file or directory\n"},
                         {{"--tls_cert=" + dir_ + "/cert.pem", "--tls_key=" + missing, "get", "j1"},
                          "compressctl: get: NOT_FOUND: --tls_key: cannot read " + missing +
                              ": No such file or directory\n"}}) {
    Result run = Compressctl(c.args);
    EXPECT_EQ(run.signal, 0) << c.args[0];
    EXPECT_EQ(run.exit_code, 1) << c.args[0];
    EXPECT_EQ(run.err, c.message) << "no usage text";
  }
  // Flags that do not go together are still a usage error.
  Result half = Compressctl({"--tls_cert=" + dir_ + "/cert.pem", "get", "j1"});
  EXPECT_EQ(half.exit_code, 1);
  EXPECT_THAT(half.err, HasSubstr("compressctl: --tls_cert and --tls_key: give both or neither\n"));
}

TEST_F(CompressctlTest, HelpSucceedsAndListsEveryFlagWithLabel) {
  Result help = Compressctl({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("Flags from client/main.cc:"));
  EXPECT_THAT(help.out, HasSubstr("--label (submit: a label KEY=VALUE; may repeat)"));
  EXPECT_THAT(help.out, HasSubstr("--token_file"));
  EXPECT_EQ(Compressctl({"--version"}).exit_code, 0);
}

// Abseil parses --label from a flag file or the environment, where a repeated flag keeps only
// its last value: refused, rather than submitting without those labels.
TEST_F(CompressctlTest, ALabelFromAFlagFileOrTheEnvironmentIsRefused) {
  std::ofstream(dir_ + "/flags") << "--label=team=vision\n--label=run=7\n";
  std::ofstream(dir_ + "/spec.json")
      << R"({"dataset":{"format":"synthetic"},"teacher":{"train":{"epochs":1}}})";
  for (const auto& [args, env] :
       std::vector<std::pair<std::vector<std::string>, std::map<std::string, std::string>>>{
           {{"--flagfile=" + dir_ + "/flags", "submit", dir_ + "/spec.json"}, {}},
           {{"--fromenv=label", "submit", dir_ + "/spec.json"}, {{"FLAGS_label", "run=7"}}},
           {{"--flagfile=" + dir_ + "/flags", "--label", "team=a", "submit", dir_ + "/spec.json"},
            {}}}) {
    Result run = Compressctl(args, env);
    EXPECT_EQ(run.exit_code, 1) << args[0];
    EXPECT_THAT(run.err, HasSubstr("compressctl: --label run=7 came from --flagfile or --fromenv; "
                                   "give each --label on the command line"))
        << args[0];
    EXPECT_THAT(run.err, Not(HasSubstr("UNAVAILABLE"))) << "refused before any call";
  }
  // On the command line, --label repeats.
  Result run = Compressctl({"submit", dir_ + "/spec.json", "--label", "team=a", "--label=run=7"});
  EXPECT_THAT(run.err, HasSubstr("compressctl: submit " + dir_ + "/spec.json: UNAVAILABLE"));
}

// A flag value out of its range is a usage error: "compressctl: PROBLEM" and the usage text, before
// any call (docs/cli.md, "Global flags").
TEST_F(CompressctlTest, GlobalFlagValuesOutOfRangeAreUsageErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string problem;
  };
  for (const Case& c : std::vector<Case>{
           {{"--server=", "list"}, "--server: empty address"},
           {{"--server=127.0.0.1:99999", "list"},
            "--server: the port must be a number in [0, 65535], got '99999' in '127.0.0.1:99999'"},
           {{"--server=127.0.0.1:-1", "get", "j1"},
            "--server: the port must be a number in [0, 65535], got '-1' in '127.0.0.1:-1'"},
           {{"--server=compressd.example", "list"},
            "--server: expected HOST:PORT, [IPV6]:PORT or unix:PATH, got 'compressd.example'"},
           {{"--retry_for=-1s", "watch", "j1"}, "--retry_for: must not be negative, got -1s"}}) {
    Result run = Compressctl(c.args);
    EXPECT_EQ(run.signal, 0) << c.problem;
    EXPECT_EQ(run.exit_code, 1) << c.problem;
    EXPECT_THAT(run.err, ::testing::StartsWith("compressctl: " + c.problem + "\ncompressctl ["))
        << "the problem, then the usage";
    EXPECT_THAT(run.err, Not(HasSubstr("UNKNOWN"))) << "no gRPC error";
    EXPECT_THAT(run.err, Not(HasSubstr("UNAVAILABLE"))) << "refused before any call";
  }
  // The ends of the ranges pass: the call is made (and fails, nothing listens).
  Result edges = Compressctl({"--server=127.0.0.1:65535", "--retry_for=0s", "list"});
  EXPECT_THAT(edges.err, HasSubstr("compressctl: list: UNAVAILABLE"));
}

// A repeated label key would keep only its last value; --label errors print the usage as every
// other flag error does.
TEST_F(CompressctlTest, LabelErrorsAreUsageErrorsAndAKeyMayNotRepeat) {
  std::ofstream(dir_ + "/spec.json")
      << R"({"dataset":{"format":"synthetic"},"teacher":{"train":{"epochs":1}}})";
  const std::string spec = dir_ + "/spec.json";
  struct Case {
    std::vector<std::string> args;
    std::string problem;
  };
  for (const Case& c : std::vector<Case>{
           {{"submit", spec, "--label", "team=vision", "--label", "team=other"},
            "--label team=other: key team given twice (first team=vision); a job has one value "
            "per label key"},
           {{"submit", spec, "--label=team=", "--label=team=x"},
            "--label team=x: key team given twice (first team=); a job has one value per label "
            "key"},
           {{"submit", spec, "--label", "team"}, "--label team: expected KEY=VALUE"},
           {{"submit", spec, "--label==x"}, "--label =x: expected KEY=VALUE"},
           {{"submit", spec, "--label"}, "--label needs KEY=VALUE"}}) {
    Result run = Compressctl(c.args);
    EXPECT_EQ(run.exit_code, 1) << c.problem;
    EXPECT_THAT(run.err, ::testing::StartsWith("compressctl: " + c.problem + "\ncompressctl ["))
        << "the problem, then the usage";
    EXPECT_THAT(run.err, Not(HasSubstr("UNAVAILABLE"))) << "refused before any call";
  }
  // Different keys, and a value holding '=', pass.
  Result run =
      Compressctl({"submit", spec, "--label", "team=vision", "--label=run=7", "--label", "q=a=b"});
  EXPECT_THAT(run.err, HasSubstr("compressctl: submit " + spec + ": UNAVAILABLE"));
}

TEST_F(CompressctlTest, BothTokenFlagsAreRefused) {
  Result run = Compressctl({"--token=tok-1", "--token_file=/nonexistent/token", "get", "j1"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("compressctl: --token and --token_file: give one, not both"));
}

TEST_F(CompressctlTest, FlagsOfAnotherCommandAreRefusedNamingTheFlagAndTheCommand) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"get", "j1", "--wait"}, "--wait applies to submit only, not get"},
           {{"get", "j1", "--nowait"}, "--wait applies to submit only, not get"},
           {{"get", "j1", "-priority", "5"}, "--priority applies to submit only, not get"},
           {{"get", "j1", "--priority=5"}, "--priority applies to submit only, not get"},
           {{"-o", "/x", "get", "j1"}, "-o applies to download only, not get"},
           {{"watch", "j1", "--follow"}, "--follow applies to logs only, not watch"},
           {{"download", "j1", "--filter", "state = RUNNING"},
            "--filter applies to list only, not download"},
           {{"list", "--label", "team=a"}, "--label applies to submit only, not list"},
           {{"submit", "spec.json", "--all=false"}, "--all applies to list only, not submit"}}) {
    Result run = Compressctl(c.args);
    EXPECT_EQ(run.exit_code, 1) << c.message;
    EXPECT_THAT(run.err, HasSubstr("compressctl: " + c.message));
    EXPECT_THAT(run.err, Not(HasSubstr("UNAVAILABLE"))) << "refused before any call";
  }
  // The command's own flags and the global ones pass.
  Result own = Compressctl({"--retry_for=0s", "list", "--all", "--filter=state = RUNNING"});
  EXPECT_THAT(own.err, HasSubstr("compressctl: list: UNAVAILABLE"));
  // A value that looks like another command's flag is the value, not that flag.
  Result value = Compressctl({"--retry_for", "0s", "list", "--filter", "--wait"});
  EXPECT_THAT(value.err, HasSubstr("compressctl: list: UNAVAILABLE"));
  EXPECT_THAT(value.err, Not(HasSubstr("applies to")));
}

}  // namespace
}  // namespace compress::client
