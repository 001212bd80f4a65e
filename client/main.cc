// compressctl: the command-line client of compressd. See docs/cli.md.
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/command_env.h"
#include "client/commands.h"
#include "client/dial.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "worker/events/grpc_address.h"
#include "worker/events/program_usage.h"
#include "worker/events/stream_memory.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051",
          "compressd's address: HOST:PORT, [IPV6]:PORT (PORT in [0, 65535]) or unix:PATH");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30),
          "Deadline of every call; streams are reopened where they stopped when it passes");
ABSL_FLAG(absl::Duration, retry_for, absl::Minutes(2),
          "How long watch and download retry while the server is unreachable; 0 or more");
ABSL_FLAG(std::string, output, "text", "Output format: text or json");
// Taken out of argv before Abseil parses it (ExtractLabels): defined for --help's list, and so
// that a --label from --flagfile or --fromenv, which Abseil does parse, is refused.
ABSL_FLAG(std::vector<std::string>, label, {}, "submit: a label KEY=VALUE; may repeat");
ABSL_FLAG(int, priority, 0, "submit: higher runs first");
ABSL_FLAG(std::string, request_id, "", "submit: idempotency key; a repeat returns the first job");
ABSL_FLAG(int, max_attempts, 0, "submit: attempts before the job fails (0 = server default)");
ABSL_FLAG(bool, wait, false, "submit: follow the job and exit with its outcome");
ABSL_FLAG(std::string, filter, "", "list: e.g. 'state = RUNNING AND labels.team = \"vision\"'");
ABSL_FLAG(int, page_size, 0, "list: jobs per page (0 = server default)");
ABSL_FLAG(bool, all, false, "list: every page");
ABSL_FLAG(std::string, o, ".", "download: output directory (-o DIR)");
ABSL_FLAG(int, chunk_size, 0, "download: bytes per message (0 = server default)");
ABSL_FLAG(bool, follow, false, "logs: keep following until the job ends");
ABSL_FLAG(std::string, token, "",
          "Bearer token (default: --token_file, else $COMPRESS_TOKEN); visible in ps, prefer "
          "--token_file");
ABSL_FLAG(std::string, token_file, "", "File holding the bearer token");
ABSL_FLAG(bool, tls, false, "Dial with TLS, verifying the server with the system's CAs");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA certificates that verify the server (implies --tls)");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, for mutual TLS (implies --tls)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name the server's certificate must carry, when it differs from --server's host");

namespace {

constexpr char kUsage[] =
    "compressctl [--server=HOST:PORT] [--timeout=30s] [--output=text|json]\n"
    "            [--token_file=F | --token=T] [--tls_ca=CA.pem [--tls_cert=C --tls_key=K]]\n"
    "            COMMAND ...\n"
    "\n"
    "commands:\n"
    "  submit SPEC.json|SPEC.yaml [--label k=v]... [--priority N] [--request_id ID] [--wait]\n"
    "  get JOB\n"
    "  list [--filter EXPR] [--page_size N] [--all]\n"
    "  watch JOB\n"
    "  cancel JOB\n"
    "  delete JOB\n"
    "  download JOB [ARTIFACT] [-o DIR]\n"
    "  logs JOB [--follow]\n"
    "  health [SERVICE]\n"
    "\n"
    "JOB is ID or jobs/ID. Exit codes: 0 ok, 1 usage/RPC/I-O error, 2 job ended not SUCCEEDED,\n"
    "3 download failed its sha256 check, 4 health answered other than SERVING (see docs/cli.md).";

// absl flags keep only the last of repeated flags; --label may repeat, so it is taken out of
// argv before absl parses the rest. Returns the problem with a malformed label, or with a key
// given twice (a job has one value per key); "" when there is none.
std::string ExtractLabels(int& argc, char** argv, std::map<std::string, std::string>* labels) {
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {
      while (i < argc) argv[kept++] = argv[i++];
      break;
    }
    std::string value;
    if (arg == "--label" || arg == "-label") {
      if (i + 1 >= argc) return "--label needs KEY=VALUE";
      value = argv[++i];
    } else if (absl::StartsWith(arg, "--label=") || absl::StartsWith(arg, "-label=")) {
      value = std::string(arg.substr(arg.find('=') + 1));
    } else {
      argv[kept++] = argv[i];
      continue;
    }
    std::vector<std::string> kv = absl::StrSplit(value, absl::MaxSplits('=', 1));
    if (kv.size() != 2 || kv[0].empty()) {
      return absl::StrCat("--label ", value, ": expected KEY=VALUE");
    }
    if (auto [it, inserted] = labels->emplace(kv[0], kv[1]); !inserted) {
      return absl::StrCat("--label ", value, ": key ", kv[0], " given twice (first ", kv[0], "=",
                          it->second, "); a job has one value per label key");
    }
  }
  argc = kept;
  return "";
}

// The flags that apply to one command only; any other flag applies to every command.
const std::map<std::string, std::vector<std::string>>& CommandFlags() {
  static const auto* const kFlags = new std::map<std::string, std::vector<std::string>>{
      {"submit", {"label", "priority", "request_id", "max_attempts", "wait"}},
      {"list", {"filter", "page_size", "all"}},
      {"download", {"o", "chunk_size"}},
      {"logs", {"follow"}},
  };
  return *kFlags;
}

const std::set<std::string>& Commands() {
  static const auto* const kCommands = new std::set<std::string>{
      "submit", "get", "list", "watch", "cancel", "delete", "download", "logs", "health"};
  return *kCommands;
}

// "FLAG applies to OTHER only, not COMMAND" for the first flag on the command line that belongs
// to another command than `command`; "" when there is none. `labels_given`: --label was there
// (it never reaches Abseil).
std::string FlagThatDoesNotApply(const std::string& command, bool labels_given) {
  for (const auto& [owner, flags] : CommandFlags()) {
    if (owner == command) continue;
    for (const std::string& flag : flags) {
      const bool given = flag == "label" ? labels_given : compress::FlagGiven(flag);
      if (given) {
        return absl::StrCat(flag.size() == 1 ? "-" : "--", flag, " applies to ", owner,
                            " only, not ", command);
      }
    }
  }
  return "";
}

int Usage(const std::string& problem) {
  if (!problem.empty()) std::cerr << "compressctl: " << problem << "\n";
  std::cerr << kUsage << "\n";
  return compress::client::kExitError;
}

}  // namespace

int main(int argc, char** argv) {
  compress::SetProgramUsage("compressctl", kUsage);
  std::map<std::string, std::string> labels;
  if (std::string problem = ExtractLabels(argc, argv, &labels); !problem.empty()) {
    return Usage(problem);
  }
  std::vector<char*> positional = compress::ParseProgramFlags(argc, argv);
  compress::ConfigureMallocForStreaming();
  // Abseil keeps only the last of a flag repeated in a flag file, and splits a list flag at
  // commas, so labels from there would be lost without a word: only the command line gives them.
  if (const std::vector<std::string> parsed = absl::GetFlag(FLAGS_label); !parsed.empty()) {
    return Usage(absl::StrCat("--label ", absl::StrJoin(parsed, ","),
                              " came from --flagfile or --fromenv; give each --label on the "
                              "command line (a flag file keeps only the last of repeated flags)"));
  }
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (args.empty()) return Usage("no command");
  if (args[0] == "help") {
    std::cout << kUsage << "\n\nflags: compressctl --help\n";
    return compress::client::kExitOk;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  if (Commands().count(command) == 0) return Usage(absl::StrCat("unknown command ", command));
  if (std::string problem = FlagThatDoesNotApply(command, !labels.empty()); !problem.empty()) {
    return Usage(problem);
  }
  if (!absl::GetFlag(FLAGS_token).empty() && !absl::GetFlag(FLAGS_token_file).empty()) {
    return Usage("--token and --token_file: give one, not both");
  }

  compress::client::CommandEnv env;
  std::string output = absl::GetFlag(FLAGS_output);
  if (output == "json") {
    env.output = compress::client::OutputFormat::kJson;
  } else if (output != "text") {
    return Usage(absl::StrCat("--output: expected text or json, got ", output));
  }
  env.timeout = absl::GetFlag(FLAGS_timeout);
  env.retry_for = absl::GetFlag(FLAGS_retry_for);
  env.tty = isatty(STDOUT_FILENO) != 0 && env.output == compress::client::OutputFormat::kText;
  env.out = &std::cout;
  env.err = &std::cerr;
  if (env.timeout <= absl::ZeroDuration()) return Usage("--timeout: must be positive");
  if (env.retry_for < absl::ZeroDuration()) {
    return Usage(absl::StrCat("--retry_for: must not be negative, got ",
                              absl::FormatDuration(env.retry_for)));
  }
  const std::string server = absl::GetFlag(FLAGS_server);
  if (absl::Status address =
          compress::CheckGrpcAddress("--server", server, /*allow_unix_socket=*/true);
      !address.ok()) {
    return Usage(std::string(address.message()));
  }

  grpc::ChannelArguments channel_args;
  channel_args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  channel_args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  channel_args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  compress::client::SetKeepalive(&channel_args);
  compress::client::ChannelSecurity security;
  security.tls = absl::GetFlag(FLAGS_tls);
  security.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  security.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  security.tls_key = absl::GetFlag(FLAGS_tls_key);
  security.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  if (security.tls_cert.empty() != security.tls_key.empty()) {
    return Usage("--tls_cert and --tls_key: give both or neither");
  }
  // A flag's value that is wrong is a usage error; a file a flag names that cannot be read, or
  // holds no usable token, is reported with its code, as a spec file is.
  absl::StatusOr<std::string> token =
      compress::client::CleanToken("--token", absl::GetFlag(FLAGS_token));
  if (!token.ok()) return Usage(std::string(token.status().message()));
  if (token->empty() && !absl::GetFlag(FLAGS_token_file).empty()) {
    token = compress::client::ReadTokenFile("--token_file", absl::GetFlag(FLAGS_token_file));
    if (!token.ok()) return compress::client::ReportError(env, command, token.status());
  }
  if (token->empty()) {
    if (const char* env_token = std::getenv("COMPRESS_TOKEN"); env_token != nullptr) {
      token = compress::client::CleanToken("$COMPRESS_TOKEN", env_token);
      if (!token.ok()) return Usage(std::string(token.status().message()));
    }
  }
  security.token = *std::move(token);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> dialled =
      compress::client::Dial(server, security, channel_args);
  if (!dialled.ok()) return compress::client::ReportError(env, command, dialled.status());
  std::shared_ptr<grpc::Channel> channel = *std::move(dialled);
  std::unique_ptr<compress::v1::CompressionService::Stub> stub =
      compress::v1::CompressionService::NewStub(channel);
  env.stub = stub.get();
  std::unique_ptr<grpc::health::v1::Health::Stub> health =
      grpc::health::v1::Health::NewStub(channel);
  env.health = health.get();

  auto expect_args = [&](size_t min, size_t max) {
    return args.size() >= min && args.size() <= max;
  };
  if (command == "submit") {
    if (!expect_args(1, 1)) return Usage("submit: expected one SPEC file");
    compress::client::SubmitArgs submit;
    submit.spec_file = args[0];
    submit.labels = labels;
    submit.priority = absl::GetFlag(FLAGS_priority);
    submit.request_id = absl::GetFlag(FLAGS_request_id);
    submit.max_attempts = absl::GetFlag(FLAGS_max_attempts);
    submit.wait = absl::GetFlag(FLAGS_wait);
    return compress::client::Submit(env, submit);
  }
  if (command == "list") {
    if (!expect_args(0, 0)) return Usage("list: takes no arguments");
    compress::client::ListArgs list;
    list.filter = absl::GetFlag(FLAGS_filter);
    list.page_size = absl::GetFlag(FLAGS_page_size);
    list.all = absl::GetFlag(FLAGS_all);
    return compress::client::List(env, list);
  }
  if (command == "health") {
    if (!expect_args(0, 1)) return Usage("health: expected at most one SERVICE");
    return compress::client::Health(env, args.empty() ? "" : args[0]);
  }
  if (command == "download") {
    if (!expect_args(1, 2)) return Usage("download: expected JOB [ARTIFACT]");
    compress::client::DownloadArgs download;
    download.job = args[0];
    if (args.size() == 2) download.artifact = args[1];
    download.output_dir = absl::GetFlag(FLAGS_o);
    download.chunk_size = absl::GetFlag(FLAGS_chunk_size);
    return compress::client::Download(env, download);
  }
  if (command == "get" || command == "watch" || command == "cancel" || command == "delete" ||
      command == "logs") {
    if (!expect_args(1, 1)) return Usage(absl::StrCat(command, ": expected one JOB"));
    if (command == "get") return compress::client::Get(env, args[0]);
    if (command == "watch") return compress::client::Watch(env, args[0]);
    if (command == "cancel") return compress::client::Cancel(env, args[0]);
    if (command == "delete") return compress::client::Delete(env, args[0]);
    return compress::client::Logs(env, args[0], absl::GetFlag(FLAGS_follow));
  }
  return Usage(absl::StrCat("unknown command ", command));
}
