// stamp_exec: the executor compress-worker starts in server_bench's scheduling section. It
// appends "UNIX_MICROSECONDS PID\n" to the file named by COMPRESS_BENCH_STAMP_FILE (one write(2),
// O_APPEND) and replaces itself with the program named by COMPRESS_BENCH_EXEC, same arguments.
// The stamp is taken first thing in main, so it marks when the executor process started.
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  const char* stamp_file = std::getenv("COMPRESS_BENCH_STAMP_FILE");
  const char* program = std::getenv("COMPRESS_BENCH_EXEC");
  if (stamp_file == nullptr || program == nullptr) {
    std::fprintf(stderr,
                 "stamp_exec: COMPRESS_BENCH_STAMP_FILE and COMPRESS_BENCH_EXEC must be set\n");
    return 2;
  }
  const long long micros = static_cast<long long>(now.tv_sec) * 1000000 + now.tv_nsec / 1000;
  const std::string line = std::to_string(micros) + " " + std::to_string(getpid()) + "\n";
  const int fd = open(stamp_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    std::fprintf(stderr, "stamp_exec: cannot append to %s: %s\n", stamp_file, std::strerror(errno));
    return 2;
  }
  close(fd);
  argv[0] = const_cast<char*>(program);
  (void)argc;
  execv(program, argv);
  std::fprintf(stderr, "stamp_exec: cannot run %s: %s\n", program, std::strerror(errno));
  return 2;
}
