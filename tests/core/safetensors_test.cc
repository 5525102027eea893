// SafetensorsFile / WriteSafetensors: the golden files, a write -> read round trip, and one
// test per malformed input. Every malformed file must give InvalidArgument (NotFound for a
// missing file) naming the file, never a crash or an out-of-bounds read.
#include "core/model/safetensors.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/model_files_testutil.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using ::xlstmd::testing::MessageHas;
using ::xlstmd::testing::ReadFile;
using ::xlstmd::testing::ScopedTempDir;
using ::xlstmd::testing::StatusIs;
using ::xlstmd::testing::WriteFile;

const std::filesystem::path kGoldenDir = XLSTMD_SHARED_DIR "/golden";

std::string Le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file with `header` verbatim; `header_len` overrides the length prefix.
std::string RawFile(const std::string& header, const std::string& data, int64_t header_len = -1) {
  const uint64_t n = header_len >= 0 ? static_cast<uint64_t>(header_len) : header.size();
  return Le64(n) + header + data;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  // Writes `bytes` to a fresh file and opens it.
  absl::Status OpenBytes(const std::string& bytes) {
    const std::filesystem::path p = path();
    WriteFile(p, bytes);
    return SafetensorsFile::Open(p).status();
  }
  // Opens a file whose header is `header` and whose data is `data_bytes` zero bytes.
  absl::Status OpenHeader(const std::string& header, size_t data_bytes) {
    return OpenBytes(RawFile(header, std::string(data_bytes, '\0')));
  }
  std::filesystem::path path() const { return dir_.path() / "t.safetensors"; }

  ScopedTempDir dir_;
};

TEST_F(SafetensorsTest, OpensGoldenF32) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      SafetensorsFile::Open(kGoldenDir / "xlstm-large-a1" / "model.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors().size(), 33u);
  const TensorView* t = (*f)->Find("lm_head.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, TensorDType::kF32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{300, 128}));
  EXPECT_EQ(t->NumElements(), 300 * 128);
  EXPECT_EQ(t->bytes, 300u * 128u * 4u);
  EXPECT_EQ(t->name, "lm_head.weight");
  EXPECT_NE(t->file.find("xlstm-large-a1"), std::string::npos);
  EXPECT_EQ((*f)->Find("nope"), nullptr);
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  // Views come in file order, so data pointers increase.
  for (size_t i = 1; i < (*f)->tensors().size(); ++i) {
    EXPECT_LT((*f)->tensors()[i - 1].data, (*f)->tensors()[i].data);
  }
}

TEST_F(SafetensorsTest, OpensGoldenBf16) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      SafetensorsFile::Open(kGoldenDir / "xlstm-large-a1-bf16" / "model.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorView* t = (*f)->Find("backbone.blocks.1.mlstm_layer.q.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, TensorDType::kBF16);
  EXPECT_EQ(t->bytes, 64u * 128u * 2u);
}

TEST_F(SafetensorsTest, DTypeNamesAndSizes) {
  EXPECT_STREQ(TensorDTypeName(TensorDType::kBF16), "BF16");
  EXPECT_STREQ(TensorDTypeName(TensorDType::kBool), "BOOL");
  EXPECT_EQ(TensorDTypeSize(TensorDType::kF64), 8u);
  EXPECT_EQ(TensorDTypeSize(TensorDType::kF16), 2u);
  EXPECT_EQ(TensorDTypeSize(TensorDType::kU8), 1u);
}

TEST_F(SafetensorsTest, RoundTrip) {
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -8.5f};
  const std::vector<uint16_t> b = {0x3f80, 0xbf80, 0x4000, 0x0001};
  const int64_t c = -42;
  const std::vector<TensorToWrite> tensors = {
      {"z.first", TensorDType::kF32, {2, 3}, a.data()},
      {"a.second", TensorDType::kBF16, {4}, b.data()},
      {"scalar", TensorDType::kI64, {}, &c},
      {"empty", TensorDType::kU8, {0, 5}, nullptr},
  };
  ASSERT_TRUE(WriteSafetensors(path(), tensors, {{"format", "pt"}, {"k", "v"}}).ok());

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path());
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 4u);
  EXPECT_EQ((*f)->metadata().size(), 2u);
  EXPECT_EQ((*f)->metadata().at("k"), "v");
  const TensorView* ta = (*f)->Find("z.first");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(ta->bytes, sizeof(float) * a.size());
  EXPECT_EQ(std::memcmp(ta->data, a.data(), ta->bytes), 0);
  const TensorView* tb = (*f)->Find("a.second");
  ASSERT_NE(tb, nullptr);
  EXPECT_EQ(tb->dtype, TensorDType::kBF16);
  EXPECT_EQ(std::memcmp(tb->data, b.data(), tb->bytes), 0);
  const TensorView* tc = (*f)->Find("scalar");
  ASSERT_NE(tc, nullptr);
  EXPECT_TRUE(tc->shape.empty());
  EXPECT_EQ(tc->NumElements(), 1);
  EXPECT_EQ(std::memcmp(tc->data, &c, sizeof(c)), 0);
  const TensorView* te = (*f)->Find("empty");
  ASSERT_NE(te, nullptr);
  EXPECT_EQ(te->bytes, 0u);
  EXPECT_EQ(te->NumElements(), 0);

  // Header keys keep the given order; data starts 8-byte aligned; no temp file is left.
  const std::string bytes = ReadFile(path());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string header = bytes.substr(8, n);
  EXPECT_LT(header.find("__metadata__"), header.find("z.first"));
  EXPECT_LT(header.find("z.first"), header.find("a.second"));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ta->data) % 8, 0u);
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(SafetensorsTest, WriterRejectsBadInput) {
  const float x[2] = {1, 2};
  const std::vector<TensorToWrite> dup = {{"a", TensorDType::kF32, {2}, x},
                                          {"a", TensorDType::kF32, {2}, x}};
  EXPECT_THAT(WriteSafetensors(path(), dup),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("duplicate")));
  const std::vector<TensorToWrite> negative = {{"a", TensorDType::kF32, {-2}, x}};
  EXPECT_THAT(WriteSafetensors(path(), negative),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("\"a\"")));
  const std::vector<TensorToWrite> null_data = {{"a", TensorDType::kF32, {2}, nullptr}};
  EXPECT_THAT(WriteSafetensors(path(), null_data),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("null")));
  const std::vector<TensorToWrite> reserved = {{"__metadata__", TensorDType::kF32, {2}, x}};
  EXPECT_FALSE(WriteSafetensors(path(), reserved).ok());
  const std::vector<TensorToWrite> bad_utf8 = {{"a\xff", TensorDType::kF32, {2}, x}};
  EXPECT_FALSE(WriteSafetensors(path(), bad_utf8).ok());
  EXPECT_FALSE(std::filesystem::exists(path()));
  // A missing directory is named with the user's path, never the writer's temp file.
  const std::filesystem::path missing = dir_.path() / "no_dir" / "x.safetensors";
  const absl::Status no_dir = WriteSafetensors(missing, absl::MakeConstSpan(dup).subspan(0, 1));
  EXPECT_THAT(no_dir, StatusIs(absl::StatusCode::kNotFound,
                               MessageHas("cannot write " + missing.string() + ": directory " +
                                          missing.parent_path().string() + " does not exist")));
  EXPECT_EQ(std::string(no_dir.message()).find(".tmp-"), std::string::npos) << no_dir;
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_THAT(SafetensorsFile::Open(path()).status(),
              StatusIs(absl::StatusCode::kNotFound, MessageHas(path().string())));
}

TEST_F(SafetensorsTest, DirectoryIsInvalid) {
  EXPECT_THAT(SafetensorsFile::Open(dir_.path()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("not a regular file")));
}

TEST_F(SafetensorsTest, FileShorterThanLengthPrefix) {
  EXPECT_THAT(OpenBytes(""), StatusIs(absl::StatusCode::kInvalidArgument,
                                      MessageHas(path().string(), "too short")));
  EXPECT_THAT(OpenBytes(std::string("\x10\0\0", 3)),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("too short")));
}

TEST_F(SafetensorsTest, ZeroHeaderLength) {
  EXPECT_THAT(OpenBytes(RawFile("", "", 0)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas(path().string(), "header length is 0")));
}

TEST_F(SafetensorsTest, HeaderLengthPastEof) {
  EXPECT_THAT(OpenBytes(RawFile("{}", "", 3)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas(path().string(), "runs past the end")));
  EXPECT_THAT(OpenBytes(RawFile("{}", "", int64_t{1} << 40)),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("limit")));
  // 2^64 - 1: must not wrap when added to 8.
  EXPECT_THAT(OpenBytes(Le64(~uint64_t{0}) + "{}"),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("limit")));
}

TEST_F(SafetensorsTest, HeaderNotJsonObject) {
  EXPECT_THAT(OpenHeader("{\"a\": ", 0), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  MessageHas(path().string(), "not valid JSON")));
  EXPECT_THAT(OpenHeader("[1, 2]", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("must be a JSON object")));
  EXPECT_THAT(OpenHeader("{\"a\": 5}", 0), StatusIs(absl::StatusCode::kInvalidArgument,
                                                    MessageHas("\"a\"", "must be an object")));
  EXPECT_THAT(OpenHeader(std::string(100, '[') + std::string(100, ']'), 0),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("nested")));
}

TEST_F(SafetensorsTest, EmptyHeaderObjectIsValid) {
  // Padding with spaces is allowed by the format.
  absl::Status s = OpenHeader("{}      ", 0);
  EXPECT_TRUE(s.ok()) << s;
}

TEST_F(SafetensorsTest, UnknownOrMistypedDtype) {
  EXPECT_THAT(OpenHeader(R"({"w": {"dtype": "F8", "shape": [2], "data_offsets": [0, 2]}})", 2),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas(path().string(), "\"w\"", "unknown dtype \"F8\"")));
  EXPECT_THAT(OpenHeader(R"({"w": {"dtype": 4, "shape": [2], "data_offsets": [0, 8]}})", 8),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("\"w\"", "dtype")));
  EXPECT_THAT(OpenHeader(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", 8),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("\"w\"", "dtype")));
}

TEST_F(SafetensorsTest, BadShape) {
  for (const char* shape : {"[-1]", "[2.0]", "\"2\"", "[[2]]", "[true]", "null"}) {
    const std::string h = std::string(R"({"w": {"dtype": "F32", "shape": )") + shape +
                          R"(, "data_offsets": [0, 8]}})";
    EXPECT_THAT(OpenHeader(h, 8),
                StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("\"w\"", "shape")))
        << shape;
  }
}

TEST_F(SafetensorsTest, OverflowingShape) {
  // 2^32 * 2^32 elements wraps to 0 in 64 bits; must not pass as an empty tensor.
  EXPECT_THAT(OpenHeader(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 0],
                 "data_offsets": [0, 0]}})",
                         0),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("\"w\"", "overflows")));
  // Element count fits, byte count does not.
  EXPECT_THAT(OpenHeader(R"({"w": {"dtype": "F64", "shape": [4611686018427387904],
                 "data_offsets": [0, 0]}})",
                         0),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("\"w\"", "overflows")));
  EXPECT_THAT(OpenHeader(R"({"w": {"dtype": "U8", "shape": [18446744073709551615],
                 "data_offsets": [0, 0]}})",
                         0),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("\"w\"", "shape")));
}

TEST_F(SafetensorsTest, OffsetsNotMatchingShape) {
  EXPECT_THAT(
      OpenHeader(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", 24),
      StatusIs(absl::StatusCode::kInvalidArgument,
               MessageHas(path().string(), "\"w\"", "needs 24")));
}

TEST_F(SafetensorsTest, OffsetsOutOfRange) {
  EXPECT_THAT(OpenHeader(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})", 16),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas(path().string(), "\"w\"", "past the end")));
  EXPECT_THAT(OpenHeader(R"({"w": {"dtype": "U8", "shape": [0],
                 "data_offsets": [18446744073709551615, 18446744073709551615]}})",
                         0),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("\"w\"", "past the end")));
}

TEST_F(SafetensorsTest, MalformedOffsets) {
  for (const char* off : {"[8, 0]", "[0]", "[0, 8, 16]", "[-8, 0]", "[0.0, 8]", "{}"}) {
    const std::string h =
        std::string(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": )") + off + "}}";
    EXPECT_THAT(OpenHeader(h, 16),
                StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("\"w\"", "data_offsets")))
        << off;
  }
}

TEST_F(SafetensorsTest, OverlappingOffsets) {
  const char* overlapping = R"({
      "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})";
  EXPECT_THAT(OpenHeader(overlapping, 16),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas(path().string(), "\"a\"", "\"b\"", "overlap")));
  // Empty tensors occupy no bytes and may sit anywhere in range; gaps are allowed.
  const char* gaps = R"({
      "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}})";
  absl::Status s = OpenHeader(gaps, 16);
  EXPECT_TRUE(s.ok()) << s;
}

TEST_F(SafetensorsTest, DuplicateTensorNames) {
  const char* duplicate = R"({
      "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})";
  EXPECT_THAT(OpenHeader(duplicate, 8),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas(path().string(), "duplicate key", "\"w\"")));
}

TEST_F(SafetensorsTest, BadMetadata) {
  EXPECT_THAT(OpenHeader(R"({"__metadata__": {"format": 1}})", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("__metadata__", "format")));
  EXPECT_THAT(OpenHeader(R"({"__metadata__": "pt"})", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("__metadata__")));
}

TEST_F(SafetensorsTest, TruncatedGoldenFilesFailCleanly) {
  const std::string golden = ReadFile(kGoldenDir / "xlstm-large-a1" / "model.safetensors");
  ASSERT_GT(golden.size(), 4000u);
  for (size_t cut : {size_t{0}, size_t{7}, size_t{8}, size_t{100}, size_t{3583}, size_t{3584},
                     size_t{3585}, golden.size() / 2, golden.size() - 1}) {
    EXPECT_EQ(OpenBytes(golden.substr(0, cut)).code(), absl::StatusCode::kInvalidArgument)
        << "cut at " << cut;
  }
}

// Random single-byte corruption of the header must give either a valid file or a clean
// error; run under ASan/UBSan this also proves there is no out-of-bounds access.
TEST_F(SafetensorsTest, CorruptedHeadersNeverCrash) {
  const std::string golden = ReadFile(kGoldenDir / "xlstm-large-a1-bf16" / "model.safetensors");
  std::mt19937 rng(1234);
  int rejected = 0;
  for (int i = 0; i < 200; ++i) {
    std::string bytes = golden;
    const size_t at = std::uniform_int_distribution<size_t>(0, 8 + 3576 - 1)(rng);
    bytes[at] = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
    const absl::Status s = OpenBytes(bytes);
    if (!s.ok()) {
      ++rejected;
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    }
  }
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace xlstmd::core
