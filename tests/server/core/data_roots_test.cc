#include "server/core/data_roots.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/test_dir.h"

namespace compress::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class DataRootsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_.File("data/fashion"));
    fs::create_directories(dir_.File("models"));
    fs::create_directories(dir_.File("secret"));
    // A link inside the root to a directory inside it, and one to a directory outside it.
    fs::create_directory_symlink(dir_.File("data/fashion"), dir_.File("data/alias"));
    fs::create_directory_symlink(dir_.File("secret"), dir_.File("data/escape"));
    absl::StatusOr<DataRoots> roots =
        DataRoots::Create({dir_.File("data"), dir_.File("models") + "/"});
    ASSERT_TRUE(roots.ok()) << roots.status();
    roots_ = *std::move(roots);
  }

  absl::Status Check(const std::string& path) { return roots_.Check("spec.dataset.path", path); }

  TestDir dir_;
  DataRoots roots_;
};

TEST_F(DataRootsTest, AcceptsPathsUnderARoot) {
  EXPECT_TRUE(Check(dir_.File("data/fashion")).ok());
  EXPECT_TRUE(Check(dir_.File("data")).ok());
  EXPECT_TRUE(Check(dir_.File("data/alias/train")).ok()) << "a link that stays inside";
  EXPECT_TRUE(Check(dir_.File("data/not-yet-there/x")).ok()) << "missing paths resolve too";
  EXPECT_TRUE(Check(dir_.File("models/teacher.safetensors")).ok());
  EXPECT_TRUE(Check(dir_.File("data/fashion/../fashion")).ok());
}

TEST_F(DataRootsTest, RefusesEscapesNamingTheField) {
  for (const std::string& path :
       {dir_.File("data/../secret"), dir_.File("data/fashion/../../secret/x"),
        dir_.File("data/escape"), dir_.File("data/escape/file"), std::string("/etc/passwd"),
        dir_.File("database"), std::string("relative/path")}) {
    absl::Status status = Check(path);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << path;
    EXPECT_THAT(status.message(), HasSubstr("spec.dataset.path: '" + path + "'")) << path;
  }
}

TEST_F(DataRootsTest, NoRootsAllowEveryPath) {
  DataRoots none;
  EXPECT_TRUE(none.empty());
  EXPECT_TRUE(none.Check("spec.dataset.path", "/etc/passwd").ok());
  EXPECT_TRUE(none.Check("spec.dataset.path", "../x").ok());
}

TEST_F(DataRootsTest, EmptyPathIsNotChecked) { EXPECT_TRUE(Check("").ok()); }

TEST_F(DataRootsTest, CreateRefusesMissingRootsAndFiles) {
  absl::StatusOr<DataRoots> missing = DataRoots::Create({dir_.File("absent")});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("--data_root: " + dir_.File("absent")));
  std::ofstream(dir_.File("file")) << "x";
  EXPECT_FALSE(DataRoots::Create({dir_.File("file")}).ok());
}

// Each value of --data_root is one directory or several separated by commas; an empty value or
// an empty entry is refused instead of read as no root, which would leave paths unrestricted.
TEST(DataRootsFlagTest, SplitFlagValuesRefusesEmptyEntries) {
  absl::StatusOr<std::vector<std::string>> roots =
      DataRoots::SplitFlagValues({"/data", "/models,/more"});
  ASSERT_TRUE(roots.ok()) << roots.status();
  EXPECT_EQ(*roots, (std::vector<std::string>{"/data", "/models", "/more"}));
  roots = DataRoots::SplitFlagValues({});
  ASSERT_TRUE(roots.ok()) << roots.status();
  EXPECT_TRUE(roots->empty());

  absl::StatusOr<std::vector<std::string>> empty = DataRoots::SplitFlagValues({"/data", ""});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.status().message(),
            "--data_root: empty value; give a directory (several separated by commas), or leave "
            "the flag out to allow any path");
  for (const char* value : {",", "/data,", ",/data", "/data,,/models"}) {
    absl::StatusOr<std::vector<std::string>> split = DataRoots::SplitFlagValues({value});
    EXPECT_EQ(split.status().code(), absl::StatusCode::kInvalidArgument) << value;
    EXPECT_EQ(split.status().message(),
              absl::StrCat("--data_root: empty entry in '", value,
                           "'; separate directories by single commas, with none at either end"));
  }
}

}  // namespace
}  // namespace compress::server
