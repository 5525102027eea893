// Snapshots of a family-B (paper) state: the layout's sections (mLSTM C, n, m and conv
// windows, sLSTM h, c, n, m and conv windows) round-trip bit for bit, the header names layout
// family 2, and a snapshot is refused (FAILED_PRECONDITION, foreign_layout, both layouts
// named) by a model of the other family or of another block map.
#include <cstring>
#include <string>
#include <vector>

#include "core/model/config.h"
#include "core/model/state_layout.h"
#include "core/state/snapshot.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/state/snapshot_testutil.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::xlstmd::testing::Fingerprint;
using ::xlstmd::testing::GetLe;
using ::xlstmd::testing::RandomState;
using ::xlstmd::testing::SampleMeta;
using ::xlstmd::testing::SectionTableAt;
using ::xlstmd::testing::StatusIs;

ModelConfig PaperConfig(const std::string& slstm_at, int64_t m_conv = 4, int64_t s_conv = 4) {
  const std::string json = R"({"model_type": "xlstm-paper", "vocab_size": 300,
    "embedding_dim": 64, "num_blocks": 4, "slstm_at": )" +
                           slstm_at + R"(,
    "mlstm_block": {"mlstm": {"num_heads": 4, "conv1d_kernel_size": )" +
                           std::to_string(m_conv) + R"(}},
    "slstm_block": {"slstm": {"num_heads": 4, "conv1d_kernel_size": )" +
                           std::to_string(s_conv) + R"(},
                    "feedforward": {"proj_factor": 1.3, "act_fn": "gelu"}}})";
  absl::StatusOr<ModelConfig> c = ParseModelConfig(json, "test config");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig{};
}

TEST(PaperSnapshotTest, RoundTripsEverySectionBitForBit) {
  const StateLayout layout = StateLayout::ForPaper(PaperConfig("[1, 3]"));
  ASSERT_TRUE(layout.paper());
  // mLSTM: C, n, m, conv; sLSTM: h, c, n, m, conv.
  ASSERT_EQ(layout.sections().size(), 18u);
  const std::vector<float> state = RandomState(layout, 3);
  const StateFingerprint fp = Fingerprint(layout);
  absl::StatusOr<std::string> bytes = EncodeSnapshot(SampleMeta(), fp, layout, state);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(GetLe(*bytes, 32, 4), 2u) << "layout family";
  const size_t table = SectionTableAt(*bytes);
  const uint32_t kinds[18] = {1, 2, 3, 4, 5, 6, 7, 8, 4, 1, 2, 3, 4, 5, 6, 7, 8, 4};
  for (size_t i = 0; i < 18; ++i) {
    EXPECT_EQ(GetLe(*bytes, table + 32 * i, 4), kinds[i]) << "section " << i;
    EXPECT_EQ(GetLe(*bytes, table + 32 * i + 4, 4), i < 4 ? 0u : i < 9 ? 1u : i < 13 ? 2u : 3u);
  }
  absl::StatusOr<DecodedSnapshot> d = DecodeSnapshot(*bytes, fp, layout);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->state.size(), state.size());
  EXPECT_EQ(0, std::memcmp(d->state.data(), state.data(), state.size() * sizeof(float)));
}

TEST(PaperSnapshotTest, OtherFamilyOrBlockMapIsAForeignLayout) {
  const StateLayout paper = StateLayout::ForPaper(PaperConfig("[1, 3]"));
  const std::vector<float> state = RandomState(paper, 4);
  absl::StatusOr<std::string> bytes =
      EncodeSnapshot(SampleMeta(), Fingerprint(paper), paper, state);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const StateLayout large = StateLayout::ForMlstmStack(4, 4, 32, 32);
  const absl::Status s = DecodeSnapshot(*bytes, Fingerprint(large), large).status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition,
                          AllOf(HasSubstr(paper.Describe()), HasSubstr(large.Describe()),
                                HasSubstr("family 2"), HasSubstr("family 1"))));
  EXPECT_EQ(SnapshotErrorReason(s), "foreign_layout");
  for (const StateLayout& other : {StateLayout::ForPaper(PaperConfig("[0, 2]")),
                                   StateLayout::ForPaper(PaperConfig("[1, 3]", 3, 4)),
                                   StateLayout::ForPaper(PaperConfig("[1, 3]", 4, 0))}) {
    EXPECT_THAT(DecodeSnapshot(*bytes, Fingerprint(other), other),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(other.Describe())));
  }
  // And a family-A snapshot is refused by the paper model.
  const std::vector<float> a_state = RandomState(large, 5);
  absl::StatusOr<std::string> a_bytes =
      EncodeSnapshot(SampleMeta(), Fingerprint(large), large, a_state);
  ASSERT_TRUE(a_bytes.ok());
  EXPECT_THAT(DecodeSnapshot(*a_bytes, Fingerprint(paper), paper),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("paper-v1")));
}

TEST(PaperSnapshotTest, LayoutWithoutConvKeepsNoWindow) {
  const StateLayout l = StateLayout::ForPaper(PaperConfig("[1, 3]", 0, 1));
  for (int64_t b = 0; b < l.num_blocks(); ++b) EXPECT_EQ(l.block(b).conv_offset, -1) << b;
  EXPECT_EQ(l.sections().size(), 14u);
}

}  // namespace
}  // namespace xlstmd::core
