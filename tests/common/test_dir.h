// TestDir: a fresh temporary directory for one test, removed with everything in it when the
// object goes away. The tests of compressd and of compress-worker hold one per test (a member of
// their fixture, declared before the members that use it, so that it goes last).
#ifndef COMPRESS_TESTS_COMMON_TEST_DIR_H_
#define COMPRESS_TESTS_COMMON_TEST_DIR_H_

#include <stdlib.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>

namespace compress {

class TestDir {
 public:
  // A new directory `prefix`-XXXXXX (six random characters) under the system's temporary
  // directory ($TMPDIR, else /tmp). Throws std::system_error when it cannot be made, which
  // fails the test whose fixture made it.
  explicit TestDir(const std::string& prefix = "compressd-test") {
    std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (mkdtemp(pattern.data()) == nullptr) {
      throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
    }
    path_ = pattern;
  }
  ~TestDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TestDir(const TestDir&) = delete;
  TestDir& operator=(const TestDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace compress

#endif  // COMPRESS_TESTS_COMMON_TEST_DIR_H_
