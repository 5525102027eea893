// `xlstm quality`: how far a model served with quantized (or otherwise reduced) weights is from
// the same checkpoint in float. Both models read the same tokens (teacher-forced, in windows
// that carry the recurrent state), and the tool reports, over every position: the largest and
// mean |logit difference|, the share of positions whose greedy next token is the same, and
// each model's perplexity of the actual next token (meaningful with --text; with the default
// pseudo-random tokens it only tracks the logits' drift). One JSON line.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/json_file.h"
#include "core/base/status_macros.h"
#include "core/tokenizer/tokenizer.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "tools/tool_model.h"

namespace xlstmd::tools {
namespace {

using Json = nlohmann::ordered_json;

struct QualityArgs {
  std::string model_dir;
  std::string reference_dir;  // "" = model_dir
  std::string reference_dtype = "auto";
  WeightFlags weights;
  int64_t positions = 2000;
  std::string text_file;
  int64_t window = 256;
  int64_t threads = 0;
  int64_t seed = 1;
};

struct Totals {
  double max_abs = 0, sum_abs = 0, sum_sq_ref = 0;
  int64_t values = 0, agree = 0;
  double nll_ref = 0, nll = 0;
};

double Nll(const float* row, int64_t vocab, int32_t next) {
  float mx = row[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, row[v]);
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
  return std::log(sum) + mx - row[next];
}

absl::StatusOr<std::vector<int32_t>> ReadTokens(const QualityArgs& a, int64_t vocab) {
  const int64_t need = a.positions + 1;
  std::vector<int32_t> tokens;
  if (a.text_file.empty()) return RandomTokens(need, vocab, static_cast<uint64_t>(a.seed));
  XLSTMD_ASSIGN_OR_RETURN(const std::string text, core::ReadSmallFile(a.text_file, 256u << 20));
  XLSTMD_ASSIGN_OR_RETURN(std::unique_ptr<core::Tokenizer> tok,
                          core::LoadModelTokenizer(a.model_dir));
  core::EncodeOptions plain;
  plain.allow_special = false;
  XLSTMD_ASSIGN_OR_RETURN(tokens, tok->Encode(text, plain));
  if (static_cast<int64_t>(tokens.size()) < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--text ", a.text_file, " encodes to fewer than 2 tokens"));
  }
  if (static_cast<int64_t>(tokens.size()) > need) tokens.resize(static_cast<size_t>(need));
  for (int32_t t : tokens) {
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token ", t, " of --text is outside the "
                                                     "model's vocabulary"));
    }
  }
  return tokens;
}

// Teacher-forces `tokens` through both models window by window and accumulates the figures.
absl::Status Compare(core::XlstmModel& ref, core::XlstmModel& test,
                     const std::vector<int32_t>& tokens, int64_t window, Totals* t) {
  XLSTMD_RETURN_IF_ERROR(ref.AllocateSlots(1));
  XLSTMD_RETURN_IF_ERROR(test.AllocateSlots(1));
  const int64_t vocab = ref.vocab_size();
  const int64_t n = static_cast<int64_t>(tokens.size()) - 1;  // predictions
  core::PrefillOptions options;
  options.logits = core::LogitsMode::kAll;
  std::vector<float> lr, lt;
  for (int64_t begin = 0; begin < n; begin += window) {
    const int64_t len = std::min(window, n - begin);
    const core::PrefillSequence seq{{tokens.data() + begin, static_cast<size_t>(len)}, 0};
    XLSTMD_RETURN_IF_ERROR(ref.Prefill({&seq, 1}, options, &lr));
    XLSTMD_RETURN_IF_ERROR(test.Prefill({&seq, 1}, options, &lt));
    for (int64_t i = 0; i < len; ++i) {
      const float* a = lr.data() + i * vocab;
      const float* b = lt.data() + i * vocab;
      for (int64_t v = 0; v < vocab; ++v) {
        const double d = std::fabs(static_cast<double>(b[v]) - a[v]);
        t->max_abs = std::max(t->max_abs, d);
        t->sum_abs += d;
        t->sum_sq_ref += static_cast<double>(a[v]) * a[v];
      }
      t->values += vocab;
      t->agree += ArgMax(a, vocab) == ArgMax(b, vocab);
      const int32_t next = tokens[static_cast<size_t>(begin + i + 1)];
      t->nll_ref += Nll(a, vocab, next);
      t->nll += Nll(b, vocab, next);
    }
  }
  return absl::OkStatus();
}

double Round4(double x) { return std::round(x * 1e4) / 1e4; }

absl::Status RunQualityChecked(const QualityArgs& a) {
  const std::string ref_dir = a.reference_dir.empty() ? a.model_dir : a.reference_dir;
  WeightFlags ref_flags;
  ref_flags.weight_dtype = a.reference_dtype;
  ref_flags.lm_head_dtype = a.reference_dtype;
  XLSTMD_ASSIGN_OR_RETURN(ToolModel ref, LoadToolModel(ref_dir, ref_flags, static_cast<int>(a.threads)));
  XLSTMD_ASSIGN_OR_RETURN(ToolModel test, LoadToolModel(a.model_dir, a.weights, static_cast<int>(a.threads)));
  if (kernels::IsQuantized(ref.model->matrix_dtype()) ||
      kernels::IsQuantized(ref.model->lm_head_dtype())) {
    return absl::InvalidArgumentError(
        "the reference is quantized; name the float checkpoint with --reference-model");
  }
  if (ref.model->vocab_size() != test.model->vocab_size()) {
    return absl::InvalidArgumentError("the reference and the model have different vocabularies");
  }
  XLSTMD_ASSIGN_OR_RETURN(const std::vector<int32_t> tokens,
                          ReadTokens(a, ref.model->vocab_size()));
  Totals t;
  XLSTMD_RETURN_IF_ERROR(Compare(*ref.model, *test.model, tokens, a.window, &t));
  const double n = static_cast<double>(tokens.size() - 1);
  const double ppl_ref = std::exp(t.nll_ref / n), ppl = std::exp(t.nll / n);
  Json j;
  j["model"] = a.model_dir;
  j["reference"] = absl::StrCat(ref_dir, " as ", kernels::DTypeName(ref.model->matrix_dtype()));
  j["weight_dtype"] = kernels::DTypeName(test.model->matrix_dtype());
  j["lm_head_dtype"] = kernels::DTypeName(test.model->lm_head_dtype());
  j["weight_bytes"] = test.model->weight_bytes();
  j["reference_weight_bytes"] = ref.model->weight_bytes();
  j["tokens"] = a.text_file.empty() ? "random" : a.text_file;
  j["positions"] = static_cast<int64_t>(n);
  j["max_abs_dlogit"] = Round4(t.max_abs);
  j["mean_abs_dlogit"] = Round4(t.sum_abs / static_cast<double>(t.values));
  j["rms_logit_reference"] = Round4(std::sqrt(t.sum_sq_ref / static_cast<double>(t.values)));
  j["greedy_agreement"] = Round4(static_cast<double>(t.agree) / n);
  j["ppl_reference"] = Round4(ppl_ref);
  j["ppl"] = Round4(ppl);
  j["ppl_change_pct"] = Round4(100.0 * (ppl / ppl_ref - 1.0));
  std::printf("%s\n", j.dump().c_str());
  return absl::OkStatus();
}

}  // namespace

int RunQuality(int argc, char** argv) {
  QualityArgs a;
  FlagSet flags("quality",
                "Compares the model served with --weight-dtype (e.g. q4) against the float\n"
                "reference over the same tokens: max and mean |logit difference|, greedy\n"
                "agreement of the next token, and perplexity of both. Prints one JSON line.");
  flags.String("model", &a.model_dir, "model directory (config.json + safetensors)", true);
  flags.String("reference-model", &a.reference_dir,
               "float checkpoint to compare against (default: --model; needed when --model "
               "was written by xlstm quantize)");
  flags.Choice("reference-dtype", &a.reference_dtype, {"auto", "f32", "bf16"},
               "storage of the reference's weights (auto: as xlstm generate)");
  a.weights.Declare(flags);
  flags.Int("positions", &a.positions, 1, 1 << 24, "next-token predictions compared");
  flags.String("text", &a.text_file,
               "file of held-out text, tokenized with the model's tokenizer (default: "
               "pseudo-random tokens, which only measure logit drift)");
  flags.SetValueHint("text", "FILE");
  flags.Int("window", &a.window, 1, 1 << 16, "tokens per prefill call (state carried over)");
  flags.Int("threads", &a.threads, 0, 1024, "backend threads (0 = one per core)");
  flags.Int("seed", &a.seed, 0, INT32_MAX, "seed of the pseudo-random tokens");
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  absl::Status s = RunQualityChecked(a);
  if (!s.ok()) return ReportRuntimeError("quality", s);
  return kExitOk;
}

}  // namespace xlstmd::tools
