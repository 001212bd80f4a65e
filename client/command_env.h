// CommandEnv: what every compressctl command runs with (the stub, deadlines, output format and
// streams), and the CLI's exit codes (docs/cli.md).
#ifndef COMPRESS_CLIENT_COMMAND_ENV_H_
#define COMPRESS_CLIENT_COMMAND_ENV_H_

#include <memory>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"

namespace compress::client {

// Exit codes of compressctl.
enum ExitCode : int {
  kExitOk = 0,
  // A usage error, an RPC error, or a local I/O error.
  kExitError = 1,
  // The job ended in a state other than SUCCEEDED (watch, submit --wait).
  kExitJobNotSucceeded = 2,
  // A download did not match its sha256; the partial file is kept.
  kExitDataLoss = 3,
  // health: the server answered, but not SERVING (e.g. NOT_SERVING while it shuts down).
  kExitNotServing = 4,
};

enum class OutputFormat { kText, kJson };

struct CommandEnv {
  // Not owned.
  compress::v1::CompressionService::StubInterface* stub = nullptr;
  // Not owned. grpc.health.v1 on the same channel (health).
  grpc::health::v1::Health::StubInterface* health = nullptr;
  // Deadline of every call. Streams (watch, download) whose deadline passes are reopened where
  // they stopped.
  absl::Duration timeout = absl::Seconds(30);
  // While the server is unreachable, streams are retried with backoff for this long.
  absl::Duration retry_for = absl::Minutes(2);
  OutputFormat output = OutputFormat::kText;
  // Whether `out` is a terminal (progress lines are then redrawn in place).
  bool tty = false;
  // Not owned.
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;

  // A context whose deadline is `timeout` from now.
  std::unique_ptr<grpc::ClientContext> NewContext() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return context;
  }
};

// Writes "compressctl: WHAT: CODE: message" to env.err and returns kExitError (kExitDataLoss for
// DATA_LOSS).
int ReportError(const CommandEnv& env, const std::string& what, const absl::Status& status);

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_COMMAND_ENV_H_
