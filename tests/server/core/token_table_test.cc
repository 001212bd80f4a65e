#include "server/core/token_table.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/test_dir.h"

namespace compress::server {
namespace {

using ::testing::HasSubstr;

TEST(TokenTableTest, ParsesTokensWithCommentsAndBlankLines) {
  absl::StatusOr<TokenTable> table = TokenTable::Parse(
      "# team tokens\n"
      "\n"
      "tok-alpha-0123456789 alpha submitter\n"
      "  tok-beta-01234567890\tbeta   viewer  \n"
      "tok-root-0123456789 ops admin\n"
      "tok-gpu1-0123456789 ops worker\n",
      "tokens");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->size(), 4);
  const Identity* alpha = table->Find("tok-alpha-0123456789");
  ASSERT_NE(alpha, nullptr);
  EXPECT_EQ(alpha->tenant, "alpha");
  EXPECT_EQ(alpha->role, Role::kSubmitter);
  const Identity* beta = table->Find("tok-beta-01234567890");
  ASSERT_NE(beta, nullptr);
  EXPECT_EQ(beta->role, Role::kViewer);
  EXPECT_EQ(table->Find("tok-root-0123456789")->role, Role::kAdmin);
  EXPECT_EQ(table->Find("tok-gpu1-0123456789")->role, Role::kWorker);
  EXPECT_EQ(table->Find("tok-alpha-012345678"), nullptr);
  EXPECT_EQ(table->Find(""), nullptr);
}

TEST(TokenTableTest, RejectsBadLinesNamingTheLine) {
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c : {
           Case{"tok-alpha-0123456789 alpha\n", "tokens:1: expected 'TOKEN TENANT ROLE'"},
           Case{"# c\nshort alpha viewer\n", "tokens:2: the token must be 16-512"},
           Case{"tok-alpha-0123456789 Alpha viewer\n", "tokens:1: tenant 'Alpha'"},
           Case{"tok-alpha-0123456789 alpha root\n", "tokens:1: role 'root'"},
           Case{"tok-alpha-0123456789 a viewer\ntok-alpha-0123456789 b admin\n",
                "tokens:2: this token appears on an earlier line"},
       }) {
    absl::StatusOr<TokenTable> table = TokenTable::Parse(c.text, "tokens");
    ASSERT_FALSE(table.ok()) << c.text;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(table.status().message(), HasSubstr(c.message)) << c.text;
  }
}

TEST(TokenTableTest, LoadReadsAFileAndReportsAMissingOne) {
  TestDir dir;
  std::ofstream(dir.File("tokens")) << "tok-alpha-0123456789 alpha viewer\n";
  absl::StatusOr<TokenTable> table = TokenTable::Load(dir.File("tokens"));
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_NE(table->Find("tok-alpha-0123456789"), nullptr);
  absl::StatusOr<TokenTable> missing = TokenTable::Load(dir.File("absent"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("absent"));
}

TEST(TokenTableTest, RoleNamesRoundTrip) {
  for (Role role : {Role::kViewer, Role::kSubmitter, Role::kAdmin, Role::kWorker}) {
    EXPECT_EQ(RoleFromName(RoleName(role)), role);
  }
  EXPECT_EQ(RoleFromName("Admin"), std::nullopt);
}

}  // namespace
}  // namespace compress::server
