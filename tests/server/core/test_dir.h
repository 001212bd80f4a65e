// A fresh temporary directory per test, removed afterwards.
#ifndef COMPRESS_TESTS_SERVER_CORE_TEST_DIR_H_
#define COMPRESS_TESTS_SERVER_CORE_TEST_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace compress::server {

class TestDir {
 public:
  TestDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "compressd-test-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TestDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace compress::server

#endif  // COMPRESS_TESTS_SERVER_CORE_TEST_DIR_H_
