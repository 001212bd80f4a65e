// compressctl's commands. Each returns an exit code (client/command_env.h) and writes its
// result to env.out, in env.output's format, and its errors to env.err.
#ifndef COMPRESS_CLIENT_COMMANDS_H_
#define COMPRESS_CLIENT_COMMANDS_H_

#include <map>
#include <string>

#include "client/command_env.h"

namespace compress::client {

struct SubmitArgs {
  std::string spec_file;
  std::map<std::string, std::string> labels;
  int priority = 0;
  std::string request_id;
  int max_attempts = 0;
  // Follow the job (as watch does) and exit with its outcome.
  bool wait = false;
};
int Submit(const CommandEnv& env, const SubmitArgs& args);

int Get(const CommandEnv& env, const std::string& job);

struct ListArgs {
  std::string filter;
  int page_size = 0;
  // Follow next_page_token to the end.
  bool all = false;
};
int List(const CommandEnv& env, const ListArgs& args);

int Cancel(const CommandEnv& env, const std::string& job);
int Delete(const CommandEnv& env, const std::string& job);

// Follows the job until it ends; kExitOk only on SUCCEEDED.
int Watch(const CommandEnv& env, const std::string& job);

// The job's log lines; with `follow`, until the job ends.
int Logs(const CommandEnv& env, const std::string& job, bool follow);

struct DownloadArgs {
  std::string job;
  // One artifact, or every artifact of the job when empty.
  std::string artifact;
  std::string output_dir = ".";
  // Bytes asked for per ReadArtifact message (0 = the server's default).
  int chunk_size = 0;
};
int Download(const CommandEnv& env, const DownloadArgs& args);

// grpc.health.v1.Health/Check for `service` ("" = the whole server). Prints the serving status;
// kExitOk only for SERVING, kExitNotServing for any other answer, kExitError when the call fails.
int Health(const CommandEnv& env, const std::string& service);

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_COMMANDS_H_
