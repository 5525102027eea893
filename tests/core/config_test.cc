// ParseModelConfig / LoadModelConfig: the golden config, derived dims, both field spellings,
// and one test per malformed input (each must be a clear error naming file and field).
#include "core/model/config.h"

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/model_files_testutil.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using ::xlstmd::testing::MessageHas;
using ::xlstmd::testing::ReadFile;
using ::xlstmd::testing::ScopedTempDir;
using ::xlstmd::testing::StatusIs;
using ::xlstmd::testing::WriteFile;
using Json = nlohmann::json;

const std::filesystem::path kGoldenDir = XLSTMD_SHARED_DIR "/golden";

Json GoldenConfigJson() {
  return Json::parse(ReadFile(kGoldenDir / "xlstm-large-a1" / "config.json"));
}

absl::Status ParseStatus(const Json& j) {
  return ParseModelConfig(j.dump(), "test/config.json").status();
}

TEST(ModelConfigTest, LoadsGoldenConfig) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig(kGoldenDir / "xlstm-large-a1");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "xlstm");
  EXPECT_EQ(c->vocab_size, 300);
  EXPECT_EQ(c->embedding_dim, 128);
  EXPECT_EQ(c->num_blocks, 2);
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_EQ(c->qk_dim(), 64);
  EXPECT_EQ(c->v_dim(), 128);
  EXPECT_EQ(c->ffn_dim(), 384);
  EXPECT_EQ(c->dqk(), 16);
  EXPECT_EQ(c->dv(), 32);
  EXPECT_FLOAT_EQ(c->gate_soft_cap, 15.0f);
  EXPECT_FLOAT_EQ(c->output_logit_soft_cap, 30.0f);
  EXPECT_FLOAT_EQ(c->norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c->eps, 1e-6f);
  EXPECT_FALSE(c->use_bias);
  EXPECT_TRUE(c->add_out_norm);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->weight_mode, "single");
  EXPECT_EQ(c->chunk_size, 64);
  EXPECT_EQ(c->bos_token_id, 0);
  EXPECT_EQ(c->pad_token_id, 1);
  EXPECT_EQ(c->eos_token_id, 2);
  EXPECT_TRUE(c->force_bos_token_insert);
}

TEST(ModelConfigTest, LoadsBf16GoldenConfig) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig(kGoldenDir / "xlstm-large-a1-bf16");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->ffn_dim(), 384);
}

// The ffn rounding is where float error could bite: E * 2.667 is never exact in binary.
TEST(ModelConfigTest, DerivedDimsMatchUpstream) {
  ModelConfig c;
  c.num_heads = 8;
  c.embedding_dim = 4096;
  EXPECT_EQ(c.qk_dim(), 2048);
  EXPECT_EQ(c.v_dim(), 4096);
  EXPECT_EQ(c.ffn_dim(), 10944);
  EXPECT_EQ(c.dqk(), 256);
  EXPECT_EQ(c.dv(), 512);
  c.embedding_dim = 1024;
  EXPECT_EQ(c.ffn_dim(), 2752);
  c.embedding_dim = 128;
  EXPECT_EQ(c.ffn_dim(), 384);
  // Exact multiples stay put.
  c.embedding_dim = 192;
  c.ffn_proj_factor = 2.0;
  EXPECT_EQ(c.ffn_dim(), 384);
  // x = 128.512 is within 1 above a multiple of 64: upstream's (x + 63) // 64 * 64 gives 128
  // where ceil would give 192, and the weights are shaped by upstream.
  c.embedding_dim = 128;
  c.ffn_proj_factor = 1.004;
  EXPECT_EQ(c.ffn_dim(), 128);
  c.ffn_proj_factor = 1.01;  // x = 129.28
  EXPECT_EQ(c.ffn_dim(), 192);
  // qk/v dims truncate rather than round.
  c.embedding_dim = 100;
  c.qk_dim_factor = 0.333;
  c.v_dim_factor = 0.999;
  EXPECT_EQ(c.qk_dim(), 33);
  EXPECT_EQ(c.v_dim(), 99);
}

TEST(ModelConfigTest, AcceptsHfSpellingsAlone) {
  Json j = GoldenConfigJson();
  j.erase("embedding_dim");
  j.erase("num_blocks");
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j.dump(), "x.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->embedding_dim, 128);
  EXPECT_EQ(c->num_blocks, 2);

  j = GoldenConfigJson();
  j.erase("hidden_size");
  j.erase("num_hidden_layers");
  c = ParseModelConfig(j.dump(), "x.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->embedding_dim, 128);
}

TEST(ModelConfigTest, RejectsDisagreeingSpellings) {
  Json j = GoldenConfigJson();
  j["num_hidden_layers"] = 3;
  EXPECT_THAT(ParseStatus(j),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas("test/config.json", "num_blocks", "num_hidden_layers")));
}

TEST(ModelConfigTest, IgnoresUnknownFields) {
  Json j = GoldenConfigJson();
  j["add_qk_norm"] = false;
  j["some_future_field"] = {{"nested", {1, 2, 3}}};
  EXPECT_TRUE(ParseStatus(j).ok());
}

TEST(ModelConfigTest, MissingFileIsNotFound) {
  ScopedTempDir dir;
  EXPECT_THAT(LoadModelConfig(dir.path()).status(),
              StatusIs(absl::StatusCode::kNotFound, MessageHas("config.json")));
}

TEST(ModelConfigTest, BadJsonNamesFile) {
  ScopedTempDir dir;
  WriteFile(dir.path() / "config.json", "{\"model_type\": \"xlstm\",");
  EXPECT_THAT(LoadModelConfig(dir.path()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas((dir.path() / "config.json").string(), "not valid JSON")));
}

TEST(ModelConfigTest, RejectsNonObject) {
  EXPECT_THAT(ParseModelConfig("[1, 2]", "c.json").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("c.json", "object")));
  EXPECT_THAT(ParseModelConfig("", "c.json").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("c.json")));
}

TEST(ModelConfigTest, RejectsDuplicateKeys) {
  std::string text = GoldenConfigJson().dump();
  text.insert(1, "\"vocab_size\": 7, ");
  EXPECT_THAT(ParseModelConfig(text, "c.json").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas("c.json", "duplicate key", "vocab_size")));
}

TEST(ModelConfigTest, UnknownModelTypeIsInvalid) {
  Json j = GoldenConfigJson();
  j["model_type"] = "llama";
  EXPECT_THAT(ParseStatus(j), StatusIs(absl::StatusCode::kInvalidArgument,
                                       MessageHas("test/config.json", "model_type", "llama")));
}

TEST(ModelConfigTest, MissingModelTypeIsInvalid) {
  Json j = GoldenConfigJson();
  j.erase("model_type");
  EXPECT_THAT(ParseStatus(j), StatusIs(absl::StatusCode::kInvalidArgument,
                                       MessageHas("test/config.json", "model_type")));
}

TEST(ModelConfigTest, MissingRequiredFieldNamesIt) {
  for (const char* field : {"vocab_size", "num_heads"}) {
    Json j = GoldenConfigJson();
    j.erase(field);
    EXPECT_THAT(ParseStatus(j), StatusIs(absl::StatusCode::kInvalidArgument,
                                         MessageHas("test/config.json", field, "missing")));
  }
  Json j = GoldenConfigJson();
  j.erase("embedding_dim");
  j.erase("hidden_size");
  EXPECT_THAT(ParseStatus(j), StatusIs(absl::StatusCode::kInvalidArgument,
                                       MessageHas("embedding_dim", "hidden_size", "missing")));
}

TEST(ModelConfigTest, WrongTypedFieldNamesIt) {
  struct Case {
    const char* field;
    Json value;
    const char* says;
  };
  const Case cases[] = {
      {"num_heads", "4", "must be an integer"},
      {"vocab_size", 300.0, "must be an integer"},
      {"vocab_size", true, "must be an integer"},
      {"qk_dim_factor", "0.5", "must be a number"},
      {"use_bias", 0, "must be true or false"},
      {"weight_mode", 1, "must be a string"},
      {"eos_token_id", Json::array({1, 2}), "must be an integer"},
  };
  for (const Case& c : cases) {
    Json j = GoldenConfigJson();
    j[c.field] = c.value;
    EXPECT_THAT(ParseStatus(j), StatusIs(absl::StatusCode::kInvalidArgument,
                                         MessageHas("test/config.json", c.field, c.says)));
  }
}

TEST(ModelConfigTest, OutOfRangeValuesNameTheField) {
  struct Case {
    const char* field;
    Json value;
  };
  const Case cases[] = {
      {"vocab_size", 0},
      {"vocab_size", -5},
      {"vocab_size", 18446744073709551615ull},
      {"embedding_dim", 0},
      {"hidden_size", -128},
      {"num_blocks", 0},
      {"num_heads", 0},
      {"num_heads", 3},  // does not divide qk_dim 64
      {"qk_dim_factor", 0.0},
      {"v_dim_factor", -1.0},
      {"ffn_proj_factor", 0},
      {"ffn_round_up_to_multiple_of", 0},
      {"norm_eps", 0.0},
      {"eps", -1e-6},
      {"chunk_size", 0},
      {"eos_token_id", 300},  // == vocab_size
      {"bos_token_id", -1},
      {"weight_mode", "packed"},
  };
  for (const Case& c : cases) {
    Json j = GoldenConfigJson();
    j[c.field] = c.value;
    if (std::string(c.field) == "hidden_size") j.erase("embedding_dim");
    const absl::Status s = ParseStatus(j);
    EXPECT_THAT(
        s, StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("test/config.json", c.field)))
        << c.field << " = " << c.value.dump();
  }
}

TEST(ModelConfigTest, QkDimTruncatingToZeroIsRejected) {
  Json j = GoldenConfigJson();
  j["qk_dim_factor"] = 0.001;  // int(128 * 0.001) == 0
  EXPECT_THAT(ParseStatus(j), StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("qk_dim")));
}

TEST(ModelConfigTest, NullSoftCapsDisableThem) {
  Json j = GoldenConfigJson();
  j["gate_soft_cap"] = nullptr;
  j["output_logit_soft_cap"] = nullptr;
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j.dump(), "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->gate_soft_cap, 0.0f);
  EXPECT_EQ(c->output_logit_soft_cap, 0.0f);
}

TEST(ModelConfigTest, OptionalFieldsTakeDefaults) {
  const Json j = {{"model_type", "xlstm"}, {"vocab_size", 50304}, {"embedding_dim", 4096},
                  {"num_blocks", 32},      {"num_heads", 8},      {"weight_mode", "fused"}};
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j.dump(), "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->weight_mode, "fused");
  EXPECT_EQ(c->qk_dim(), 2048);
  EXPECT_EQ(c->ffn_dim(), 10944);
  EXPECT_TRUE(c->add_out_norm);
  EXPECT_FLOAT_EQ(c->gate_soft_cap, 15.0f);
}

TEST(ModelConfigTest, ConfigPathThatIsADirectoryIsInvalid) {
  ScopedTempDir dir;
  std::filesystem::create_directory(dir.path() / "config.json");
  EXPECT_THAT(LoadModelConfig(dir.path()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("not a regular file")));
}

}  // namespace
}  // namespace xlstmd::core
