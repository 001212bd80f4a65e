#include "worker/run/work_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "worker/events/durable_file.h"

namespace compress::run {
namespace {

namespace fs = std::filesystem;

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return ErrnoStatus(errno, absl::StrCat(what, " ", path));
}

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not a JSON object"));
  }
  return j;
}

// Checks what a later run reads of each completed phase's result (compress-run's report compares
// the phases' "macs", "params" and "top1"), so that a damaged state.json is refused here, naming
// the entry, rather than failing later with an anonymous JSON type error.
absl::Status CheckCompletedPhases(const nlohmann::json& completed, const std::string& state_path) {
  for (const auto& [phase, result] : completed.items()) {
    if (!result.is_object()) {
      return absl::DataLossError(
          absl::StrCat(state_path, ": completed phase '", phase, "' is not an object"));
    }
    for (const char* field : {"macs", "params", "top1"}) {
      auto it = result.find(field);
      if (it == result.end() || !it->is_number()) {
        return absl::DataLossError(absl::StrCat(state_path, ": completed phase '", phase, "' has ",
                                                it == result.end() ? "no" : "a non-numeric", " '",
                                                field, "'"));
      }
    }
  }
  return absl::OkStatus();
}

// Whether a process with this id runs (on this machine, in this pid namespace).
bool ProcessRuns(absl::string_view pid_text) {
  int pid = 0;
  if (!absl::SimpleAtoi(pid_text, &pid) || pid <= 0) return false;
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

// Removes what writes of an earlier run left when it was killed mid-write: WriteFileAtomically's
// and the decode cache's temporaries (NAME.tmp.PID.N, each as large as the checkpoint, model or
// cache it was to become) and the trainer checkpoint's temporary of earlier versions. The caller
// holds the work dir's lock; a temporary of a process that still runs (another executor sharing
// a --cache_dir placed here) is left, and so is every directory below that holds a work dir's
// lock of its own. Best effort: a file that cannot be removed is left.
void RemoveInterruptedWrites(const std::string& path) {
  std::error_code ec;
  std::vector<fs::path> stale;
  fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec);
  for (const fs::recursive_directory_iterator end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec) && fs::exists(it->path() / ".lock", ec)) {
      it.disable_recursion_pending();  // another work dir
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    const std::string name = it->path().filename().string();
    if (name == "trainer_state.pt.tmp") {
      stale.push_back(it->path());
    } else if (IsAtomicWriteTemporary(name)) {
      // NAME.tmp.PID.N
      absl::string_view pid = absl::string_view(name).substr(name.rfind(".tmp.") + 5);
      pid = pid.substr(0, pid.find('.'));
      if (!ProcessRuns(pid)) stale.push_back(it->path());
    }
  }
  for (const fs::path& file : stale) {
    if (fs::remove(file, ec)) {
      std::fprintf(stderr, "compress-run: removed %s, left by a write that did not finish\n",
                   file.c_str());
    }
  }
}

}  // namespace

absl::StatusOr<WorkDir> WorkDir::Open(const std::string& path, const nlohmann::json& spec) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return ErrnoStatus(ec.value(), absl::StrCat("workdir ", path, ": cannot create"));
  const std::string spec_path = absl::StrCat(path, "/spec.json");
  const std::string state_path = absl::StrCat(path, "/state.json");
  if (fs::exists(spec_path)) {
    absl::StatusOr<nlohmann::json> earlier = ReadJsonFile(spec_path);
    if (!earlier.ok()) return earlier.status();
    if (*earlier != spec) {
      return absl::FailedPreconditionError(
          absl::StrCat("workdir ", path, " holds the phases of a different job spec (", spec_path,
                       "); use a new work directory"));
    }
  } else {
    if (absl::Status s = WriteFileAtomically(spec_path, spec.dump(2) + "\n"); !s.ok()) return s;
  }
  RemoveInterruptedWrites(path);
  nlohmann::json state = {{"completed", nlohmann::json::object()}};
  if (fs::exists(state_path)) {
    absl::StatusOr<nlohmann::json> loaded = ReadJsonFile(state_path);
    if (!loaded.ok()) return loaded.status();
    if (!loaded->contains("completed") || !(*loaded)["completed"].is_object()) {
      return absl::DataLossError(absl::StrCat(state_path, ": missing 'completed' object"));
    }
    if (absl::Status s = CheckCompletedPhases((*loaded)["completed"], state_path); !s.ok()) {
      return s;
    }
    state = std::move(*loaded);
  }
  return WorkDir(path, std::move(state));
}

absl::StatusOr<std::string> WorkDir::PhaseDir(const std::string& phase) const {
  std::string dir = absl::StrCat(path_, "/phases/", phase);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return ErrnoStatus(ec.value(), absl::StrCat(dir, ": cannot create"));
  return dir;
}

bool WorkDir::Completed(const std::string& phase) const {
  return state_["completed"].contains(phase);
}

const nlohmann::json& WorkDir::Result(const std::string& phase) const {
  return state_["completed"].at(phase);
}

absl::Status WorkDir::MarkCompleted(const std::string& phase, nlohmann::json result) {
  nlohmann::json next = state_;
  next["completed"][phase] = std::move(result);
  if (absl::Status s = WriteFileAtomically(absl::StrCat(path_, "/state.json"), next.dump(2) + "\n");
      !s.ok()) {
    return s;
  }
  state_ = std::move(next);
  return absl::OkStatus();
}

absl::StatusOr<WorkDirLock> WorkDirLock::Acquire(
    const std::string& dir, absl::Duration wait, const std::atomic<bool>* cancel,
    const std::function<void(const std::string&)>& on_wait) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return ErrnoStatus(ec.value(), absl::StrCat("cannot create work dir ", dir));
  const std::string path = dir + "/.lock";
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot open", path);
  WorkDirLock lock(fd);
  const absl::Time give_up = absl::Now() + wait;
  bool told = false;
  while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) return ErrnoError("cannot lock", path);
    // The holder wrote its pid into the file.
    char buffer[32] = {};
    const ssize_t n = pread(fd, buffer, sizeof(buffer) - 1, 0);
    const std::string holder =
        n > 0 ? std::string(absl::StripAsciiWhitespace(absl::string_view(buffer, n))) : "?";
    if (cancel != nullptr && cancel->load()) {
      return absl::CancelledError(absl::StrCat("cancelled while waiting for work dir ", dir,
                                               " (held by pid ", holder, ")"));
    }
    if (absl::Now() >= give_up) {
      return absl::UnavailableError(absl::StrCat(
          "work dir ", dir, " is in use by another executor (pid ", holder, ") for more than ",
          absl::FormatDuration(wait), "; retry once it has stopped"));
    }
    if (!told && on_wait) {
      on_wait(absl::StrCat("work dir ", dir, " is in use by another executor (pid ", holder,
                           "); waiting up to ", absl::FormatDuration(wait), " for it to stop"));
      told = true;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  const std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    return ErrnoError("cannot write", path);
  }
  return lock;
}

WorkDirLock& WorkDirLock::operator=(WorkDirLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

WorkDirLock::~WorkDirLock() {
  if (fd_ >= 0) close(fd_);  // releases the flock
}

}  // namespace compress::run
