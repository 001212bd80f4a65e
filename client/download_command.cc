// compressctl download: resumable, verified artifact downloads.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/command_env.h"
#include "client/commands.h"
#include "client/job_names.h"
#include "client/output.h"
#include "nlohmann/json.hpp"
#include "worker/events/sha256.h"

namespace compress::client {
namespace {

namespace fs = std::filesystem;

absl::Status FromGrpc(const grpc::Status& status, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

bool IsTransient(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         status.error_code() == grpc::StatusCode::INTERNAL ||
         status.error_code() == grpc::StatusCode::UNKNOWN ||
         status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

struct Downloaded {
  std::string path;
  int64_t resumed_from = 0;
  bool already_present = false;
};

// Downloads one artifact to <dir>/<name> through <dir>/<name>.part, which a later run resumes.
absl::StatusOr<Downloaded> DownloadOne(const CommandEnv& env, const std::string& job_name,
                                       const compress::v1::Artifact& artifact,
                                       const std::string& dir, int chunk_size) {
  Downloaded result;
  fs::path final_path = fs::path(dir) / artifact.name();
  fs::path part_path = fs::path(dir) / (artifact.name() + ".part");
  result.path = final_path.string();
  std::error_code ec;
  if (fs::exists(final_path, ec)) {
    absl::StatusOr<FileDigest> digest = Sha256File(final_path.string());
    if (!digest.ok()) return digest.status();
    if (digest->sha256 == artifact.sha256() && digest->size_bytes == artifact.size_bytes()) {
      result.already_present = true;
      return result;
    }
    return absl::DataLossError(
        absl::StrCat(final_path.string(), " exists with other contents (sha256 ", digest->sha256,
                     ", expected ", artifact.sha256(), "); it was left as it is"));
  }
  int64_t offset =
      fs::exists(part_path, ec) ? static_cast<int64_t>(fs::file_size(part_path, ec)) : 0;
  if (offset > artifact.size_bytes()) {
    return absl::DataLossError(absl::StrCat(part_path.string(), " holds ", offset,
                                            " bytes, more than the artifact's ",
                                            artifact.size_bytes()));
  }
  result.resumed_from = offset;
  // The file is hashed as it is written, after the part an earlier run left.
  Sha256 hasher;
  if (offset > 0) {
    std::ifstream in(part_path, std::ios::binary);
    std::string buffer(1 << 20, '\0');
    int64_t left = offset;
    while (left > 0 && in.read(buffer.data(), std::min<int64_t>(left, buffer.size()))) {
      hasher.Update(buffer.data(), static_cast<size_t>(in.gcount()));
      left -= in.gcount();
    }
    if (left > 0) {
      return absl::DataLossError(absl::StrCat("cannot read ", part_path.string(), " to resume"));
    }
  }
  std::string expected_sha = artifact.sha256();
  absl::Duration backoff = absl::Milliseconds(200);
  absl::Time give_up = absl::Now() + env.retry_for;
  std::string resource = ArtifactResourceName(job_name, artifact.name());
  while (offset < artifact.size_bytes()) {
    std::ofstream out(part_path, std::ios::binary | std::ios::app);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", part_path.string()));
    auto context = env.NewContext();
    compress::v1::ReadArtifactRequest request;
    request.set_name(resource);
    request.set_offset(offset);
    request.set_chunk_size(chunk_size);
    auto reader = env.stub->ReadArtifact(context.get(), request);
    compress::v1::ReadArtifactResponse chunk;
    bool progressed = false;
    absl::Status broken;
    while (reader->Read(&chunk)) {
      if (chunk.offset() != offset) {
        broken = absl::InternalError(absl::StrCat("ReadArtifact ", resource, ": chunk at offset ",
                                                  chunk.offset(), ", expected ", offset));
        context->TryCancel();
        break;
      }
      out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
      if (!out) {
        broken = absl::DataLossError(absl::StrCat("cannot write ", part_path.string()));
        context->TryCancel();
        break;
      }
      hasher.Update(chunk.data());
      offset += static_cast<int64_t>(chunk.data().size());
      progressed = progressed || !chunk.data().empty();
      if (!chunk.sha256().empty()) expected_sha = chunk.sha256();
    }
    grpc::Status status = reader->Finish();
    out.close();
    if (broken.ok() && !out) {
      broken = absl::DataLossError(absl::StrCat("cannot write ", part_path.string()));
    }
    if (!broken.ok()) return broken;
    if (status.ok()) {
      if (offset < artifact.size_bytes() && !progressed) {
        return absl::DataLossError(absl::StrCat("ReadArtifact ", resource, " ended at ", offset,
                                                " of ", artifact.size_bytes(), " bytes"));
      }
      continue;
    }
    if (!IsTransient(status)) return FromGrpc(status, absl::StrCat("ReadArtifact ", resource));
    if (progressed) {
      give_up = absl::Now() + env.retry_for;
      backoff = absl::Milliseconds(200);
    }
    if (absl::Now() + backoff > give_up) {
      return FromGrpc(status, absl::StrCat("ReadArtifact ", resource, ": gave up"));
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }

  const FileDigest digest{hasher.HexDigest(), offset};
  if (digest.sha256 != expected_sha || expected_sha != artifact.sha256() ||
      digest.size_bytes != artifact.size_bytes()) {
    return absl::DataLossError(
        absl::StrCat(artifact.name(), ": downloaded ", digest.size_bytes, " bytes with sha256 ",
                     digest.sha256, ", expected ", artifact.size_bytes(), " bytes with sha256 ",
                     artifact.sha256(), "; the partial file is kept at ", part_path.string()));
  }
  fs::rename(part_path, final_path, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot rename ", part_path.string(), ": ", ec.message()));
  }
  return result;
}

}  // namespace

int Download(const CommandEnv& env, const DownloadArgs& args) {
  absl::StatusOr<std::string> name = JobName(args.job);
  if (!name.ok()) return ReportError(env, "download", name.status());
  compress::v1::GetJobRequest get;
  get.set_name(*name);
  compress::v1::Job job;
  auto context = env.NewContext();
  grpc::Status status = env.stub->GetJob(context.get(), get, &job);
  if (!status.ok()) return ReportError(env, "download", FromGrpc(status, *name));

  std::vector<compress::v1::Artifact> wanted;
  std::vector<std::string> names;
  for (const compress::v1::Artifact& artifact : job.artifacts()) {
    names.push_back(artifact.name());
    if (args.artifact.empty() || artifact.name() == args.artifact) wanted.push_back(artifact);
  }
  if (wanted.empty()) {
    absl::Status missing =
        args.artifact.empty()
            ? absl::FailedPreconditionError(
                  absl::StrCat(*name, " has no artifacts (state ", StateName(job.state()), ")"))
            : absl::NotFoundError(absl::StrCat(*name, " has no artifact ", args.artifact,
                                               " (it has: ", absl::StrJoin(names, ", "), ")"));
    return ReportError(env, "download", missing);
  }
  std::error_code ec;
  fs::create_directories(args.output_dir, ec);
  if (ec) {
    return ReportError(env, "download",
                       absl::PermissionDeniedError(
                           absl::StrCat("cannot create ", args.output_dir, ": ", ec.message())));
  }

  int exit_code = kExitOk;
  for (const compress::v1::Artifact& artifact : wanted) {
    absl::StatusOr<Downloaded> done =
        DownloadOne(env, *name, artifact, args.output_dir, args.chunk_size);
    if (!done.ok()) {
      int code = ReportError(env, absl::StrCat("download ", artifact.name()), done.status());
      if (exit_code == kExitOk || code == kExitDataLoss) exit_code = code;
      continue;
    }
    if (env.output == OutputFormat::kJson) {
      nlohmann::json line = {{"name", artifact.name()},
                             {"path", done->path},
                             {"size_bytes", artifact.size_bytes()},
                             {"sha256", artifact.sha256()},
                             {"resumed_from", done->resumed_from},
                             {"already_present", done->already_present}};
      *env.out << line.dump() << "\n";
    } else {
      *env.out << (done->already_present ? "present    " : "downloaded ") << done->path << " ("
               << HumanBytes(artifact.size_bytes()) << ", sha256 " << artifact.sha256()
               << (done->resumed_from > 0 ? absl::StrCat(", resumed at ", done->resumed_from)
                                          : std::string())
               << ", verified)\n";
    }
  }
  return exit_code;
}

}  // namespace compress::client
