// `xlstm tokenize` and `xlstm detokenize`: the tokenizer layer from the command line.
//   tokenize --tokenizer F --text STR     one JSON array of ids
//   tokenize --tokenizer F --jsonl FILE   one JSON string per input line in, one JSON array of
//                                         ids per line out (the differential test's interface)
//   tokenize ... --jsonl FILE --bench     no ids; one JSON line with load time and throughput
//   detokenize --tokenizer F --ids 1,2,3  the decoded text (invalid UTF-8 shown as U+FFFD)
// --tokenizer takes a tokenizer.json, or a model directory (its tokenizer.json, else the
// plain byte tokenizer).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/tokenizer/bpe_tokenizer.h"
#include "core/tokenizer/tokenizer.h"
#include "core/base/utf8.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "core/base/flags.h"
#include "tools/tool_model.h"

namespace xlstmd::tools {
namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

absl::StatusOr<std::unique_ptr<core::Tokenizer>> LoadForTool(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return core::LoadModelTokenizer(path);
  return core::LoadTokenizerFile(path);
}

void AppendIdsJson(const std::vector<int32_t>& ids, std::string* out) {
  out->push_back('[');
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out->push_back(',');
    absl::StrAppend(out, ids[i]);
  }
  out->append("]\n");
}

// The JSON strings of a JSONL file, one per line (blank lines are errors: a line is a record).
absl::StatusOr<std::vector<std::string>> ReadJsonlStrings(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<std::string> texts;
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": each line must be one JSON string"));
    }
    texts.push_back(j.get<std::string>());
  }
  return texts;
}

absl::Status EncodeAll(const core::Tokenizer& tok, const std::vector<std::string>& texts,
                       const std::string& path) {
  std::string out;
  for (size_t i = 0; i < texts.size(); ++i) {
    absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(texts[i]);
    if (!ids.ok()) {
      return absl::Status(ids.status().code(),
                          absl::StrCat(path, ":", i + 1, ": ", ids.status().message()));
    }
    AppendIdsJson(*ids, &out);
    if (out.size() > (1 << 20)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return absl::OkStatus();
}

// Single-threaded encode throughput over `texts`, as one JSON line.
absl::Status Bench(const core::Tokenizer& tok, const std::vector<std::string>& texts,
                   double load_ms, bool cache) {
  size_t bytes = 0, tokens = 0;
  for (const std::string& t : texts) bytes += t.size();
  const Clock::time_point start = Clock::now();
  for (const std::string& t : texts) {
    absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(t);
    if (!ids.ok()) return ids.status();
    tokens += ids->size();
  }
  const double seconds = MillisecondsSince(start) / 1000.0;
  std::printf(
      "{\"impl\":\"xlstmd\",\"load_ms\":%.1f,\"cache\":%s,\"texts\":%zu,\"bytes\":%zu,"
      "\"tokens\":%zu,\"seconds\":%.3f,\"mb_per_s\":%.2f}\n",
      load_ms, cache ? "true" : "false", texts.size(), bytes, tokens, seconds,
      static_cast<double>(bytes) / 1e6 / seconds);
  return absl::OkStatus();
}

}  // namespace

int RunTokenize(int argc, char** argv) {
  std::string tokenizer_path, text, jsonl;
  bool bench = false, no_cache = false;
  FlagSet flags("tokenize",
                "Encodes text to token ids (no BOS or other specials are added).\n"
                "With --jsonl, each input line is one JSON string and each output line\n"
                "the JSON array of its ids. --bench times single-threaded encoding of\n"
                "the --jsonl texts instead and prints one JSON line.");
  flags.String("tokenizer", &tokenizer_path,
               "tokenizer.json, or a model directory (byte tokenizer if it has none)", true);
  flags.String("text", &text, "text to encode");
  flags.String("jsonl", &jsonl, "file of JSON strings, one per line");
  flags.Bool("bench", &bench, "print load time and encode throughput instead of ids");
  flags.Bool("no-cache", &no_cache, "with --bench: disable the per-word BPE cache");
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  if (flags.WasSet("text") == flags.WasSet("jsonl")) {
    flags.PrintError("exactly one of --text and --jsonl is required");
    return kExitUsage;
  }
  if (bench && !flags.WasSet("jsonl")) {
    flags.PrintError("--bench needs --jsonl");
    return kExitUsage;
  }
  const Clock::time_point load_start = Clock::now();
  absl::StatusOr<std::unique_ptr<core::Tokenizer>> tok = LoadForTool(tokenizer_path);
  const double load_ms = MillisecondsSince(load_start);
  if (!tok.ok()) return ReportRuntimeError("tokenize", tok.status());
  if (auto* bpe = dynamic_cast<core::BpeTokenizer*>(tok->get()); bpe != nullptr && no_cache) {
    bpe->set_cache_enabled(false);
  }
  if (flags.WasSet("text")) {
    absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(text);
    if (!ids.ok()) return ReportRuntimeError("tokenize", ids.status());
    std::string out;
    AppendIdsJson(*ids, &out);
    std::fputs(out.c_str(), stdout);
    return kExitOk;
  }
  absl::StatusOr<std::vector<std::string>> texts = ReadJsonlStrings(jsonl);
  if (!texts.ok()) return ReportRuntimeError("tokenize", texts.status());
  const absl::Status s =
      bench ? Bench(**tok, *texts, load_ms, !no_cache) : EncodeAll(**tok, *texts, jsonl);
  if (!s.ok()) return ReportRuntimeError("tokenize", s);
  return kExitOk;
}

int RunDetokenize(int argc, char** argv) {
  std::string tokenizer_path;
  std::vector<int64_t> ids;
  FlagSet flags("detokenize",
                "Decodes token ids and prints the text; bytes that are not valid UTF-8\n"
                "(ids that split a character) are shown as U+FFFD.");
  flags.String("tokenizer", &tokenizer_path,
               "tokenizer.json, or a model directory (byte tokenizer if it has none)", true);
  flags.IntList("tokens", &ids, 0, INT32_MAX,
                "token ids, comma-separated or a JSON array (as tokenize prints them)", true);
  flags.Renamed("ids", "tokens");
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  absl::StatusOr<std::unique_ptr<core::Tokenizer>> tok = LoadForTool(tokenizer_path);
  if (!tok.ok()) return ReportRuntimeError("detokenize", tok.status());
  if (std::string err = CheckTokens(ids, (*tok)->vocab_size()); !err.empty()) {
    flags.PrintError(err);
    return kExitUsage;
  }
  absl::StatusOr<std::string> bytes = (*tok)->Decode(ToInt32(ids));
  if (!bytes.ok()) {  // a hole in the id space
    flags.PrintError(std::string(bytes.status().message()));
    return kExitUsage;
  }
  const std::string text = core::Utf8Lossy(*bytes);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return kExitOk;
}

}  // namespace xlstmd::tools
