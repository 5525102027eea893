// API keys file parsing and bearer-token authentication (tenancy).
#include "server/api_keys.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::server {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using xlstmd::testing::IsOk;
using xlstmd::testing::StatusIs;

constexpr char kKeys[] =
    "# tenants of the test\n"
    "\n"
    "alice  key-alice-1\n"
    "   # indented comment\n"
    "alice\tkey-alice-2\r\n"
    "bob key-bob#with-hash\n";

TEST(ApiKeysTest, ParsesTenantsKeysAndComments) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(kKeys, "keys.txt");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 3u);
  EXPECT_EQ(keys->TenantForKey("key-alice-1"), "alice");
  EXPECT_EQ(keys->TenantForKey("key-alice-2"), "alice");
  EXPECT_EQ(keys->TenantForKey("key-bob#with-hash"), "bob");
  EXPECT_EQ(keys->TenantForKey("key-bob"), std::nullopt);
  EXPECT_EQ(keys->TenantForKey(""), std::nullopt);
  EXPECT_EQ(keys->TenantForKey("key-alice-1 "), std::nullopt);
}

TEST(ApiKeysTest, RejectsMalformedFilesNamingTheLineButNeverTheKey) {
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {"alice\n", "line 1: expected '<tenant> <key>"},
           {"# c\nalice k1 extra\n", "line 2: field 3 must be max_running=N"},
           {"alice k1 max_running=-1\n", "line 1: field 3 must be"},
           {"alice k1 max_queued\n", "line 1: field 3 must be"},
           {"alice k1 max_running=3000000000\n", "line 1: field 3 must be"},
           {"alice k1 max_snapshot_bytes=x\n", "line 1: field 3 must be"},
           {"alice k1 max_sessions=2\nalice k2 max_sessions=3\n",
            "line 2: tenant alice has other quotas"},
           {"al/ice secret-k\n", "line 1: tenant must be"},
           {"alice secr\x01t\n", "line 1: key must be"},
           {"alice secret-dup\nbob secret-dup\n",
            "line 2: the same key is already listed on line 1"},
           {"", "no keys"},
           {"# only comments\n\n", "no keys"},
       }) {
    absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(c.text, "keys.txt");
    EXPECT_THAT(keys, StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("keys.txt"), HasSubstr(c.message),
                                     Not(HasSubstr("secret")))))
        << c.text;
  }
}

// Quotas after a key override the --tenant-max-* options for that tenant; a tenant's lines
// may repeat them identically or leave them off.
TEST(ApiKeysTest, PerTenantQuotas) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(
      "alice k-a1 max_running=2 max_sessions=50\n"
      "alice k-a2\n"
      "alice k-a3 max_running=2 max_sessions=50\n"
      "bob k-b1 max_queued=0 max_snapshot_bytes=8589934592\n"
      "carol k-c1\n",
      "keys.txt");
  ASSERT_THAT(keys, IsOk());
  EXPECT_EQ(keys->size(), 5u);
  const core::TenantQuotas& q = keys->quotas();
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q.at("alice").max_running, 2);
  EXPECT_EQ(q.at("alice").max_queued, -1);  // the option's value
  EXPECT_EQ(q.at("alice").max_sessions, 50);
  EXPECT_EQ(q.at("bob").max_queued, 0);  // explicitly no quota
  EXPECT_EQ(q.at("bob").max_snapshot_bytes, int64_t{8} << 30);  // 64-bit, unlike the counts
  EXPECT_EQ(q.at("alice").max_snapshot_bytes, -1);
  EXPECT_EQ(core::QuotaFor(q, "alice", &core::TenantQuota::max_queued, 7), 7);
  EXPECT_EQ(core::QuotaFor(q, "alice", &core::TenantQuota::max_running, 7), 2);
  EXPECT_EQ(core::QuotaFor(q, "bob", &core::TenantQuota::max_queued, 7), 0);
  EXPECT_EQ(core::QuotaFor(q, "carol", &core::TenantQuota::max_sessions, 9), 9);
}

TEST(ApiKeysTest, LoadFileReadsTheFileAndWarnsAboutLoosePermissions) {
  const std::filesystem::path dir = ::testing::TempDir();
  const std::filesystem::path path = dir / "xlstmd_api_keys_test.txt";
  {
    std::ofstream out(path);
    out << kKeys;
  }
  ::chmod(path.c_str(), 0644);
  std::vector<std::string> warnings;
  absl::StatusOr<ApiKeys> keys = ApiKeys::LoadFile(path, &warnings);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 3u);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("0644"));
  EXPECT_THAT(warnings[0], HasSubstr("accessible by others"));

  ::chmod(path.c_str(), 0660);
  warnings.clear();
  ASSERT_TRUE(ApiKeys::LoadFile(path, &warnings).ok());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("writable by its group"));

  // 0600, and the group-readable 0640/0440 of a Kubernetes Secret with fsGroup, are quiet.
  for (const mode_t mode : {0600, 0640, 0440}) {
    ::chmod(path.c_str(), mode);
    warnings.clear();
    ASSERT_TRUE(ApiKeys::LoadFile(path, &warnings).ok());
    EXPECT_TRUE(warnings.empty()) << std::oct << mode;
  }
  std::filesystem::remove(path);

  EXPECT_THAT(ApiKeys::LoadFile(dir / "no-such-keys-file", nullptr),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no-such-keys-file")));
}

TEST(AuthenticatorTest, WithoutKeysEveryoneIsTheAnonymousTenant) {
  Authenticator auth;
  EXPECT_FALSE(auth.enabled());
  EXPECT_EQ(auth.Authenticate({}).value(), "");
  const std::vector<absl::string_view> junk = {"whatever"};
  EXPECT_EQ(auth.Authenticate(junk).value(), "");
}

TEST(AuthenticatorTest, BearerKeyMapsToItsTenant) {
  Authenticator auth(ApiKeys::Parse(kKeys, "keys").value());
  EXPECT_TRUE(auth.enabled());
  const std::vector<absl::string_view> alice = {"Bearer key-alice-2"};
  EXPECT_EQ(auth.Authenticate(alice).value(), "alice");
  const std::vector<absl::string_view> bob = {"bearer   key-bob#with-hash "};
  EXPECT_EQ(auth.Authenticate(bob).value(), "bob");
}

TEST(AuthenticatorTest, MissingMalformedOrWrongCredentialsAreUnauthenticated) {
  Authenticator auth(ApiKeys::Parse(kKeys, "keys").value());
  // The message names the fix: the tools' flag, and the metadata for other clients.
  EXPECT_THAT(auth.Authenticate({}),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       AllOf(HasSubstr("missing API key"), HasSubstr("--api-key"),
                             HasSubstr("authorization: Bearer"))));
  for (absl::string_view v :
       {"key-alice-1", "Basic key-alice-1", "Bearer", "Bearer ", "Bearerkey-alice-1"}) {
    const std::vector<absl::string_view> values = {v};
    EXPECT_THAT(auth.Authenticate(values),
                StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("malformed")))
        << v;
  }
  const std::vector<absl::string_view> wrong = {"Bearer key-alice-3"};
  EXPECT_THAT(auth.Authenticate(wrong),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       AllOf(HasSubstr("invalid API key"), Not(HasSubstr("key-alice-3")))));
  const std::vector<absl::string_view> two = {"Bearer key-alice-1", "Bearer key-bob#with-hash"};
  EXPECT_THAT(auth.Authenticate(two),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("more than one")));
}

}  // namespace
}  // namespace xlstmd::server
