// `xlstm generate`: greedy decoding. Prefills the prompt, takes the argmax of the last logits
// (ties -> lowest id), and feeds each generated token back with Step; prints the generated
// ids on one line, comma-separated.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "tools/commands.h"
#include "core/base/flags.h"
#include "tools/tool_model.h"

namespace xlstmd::tools {
namespace {

absl::Status Generate(core::XlstmModel& model, const std::vector<int32_t>& prompt,
                      int64_t max_tokens, int64_t chunk_size, std::vector<int32_t>* out) {
  XLSTMD_RETURN_IF_ERROR(model.AllocateSlots(1));
  core::PrefillOptions options;
  options.chunk_size = chunk_size;
  options.logits = core::LogitsMode::kLast;
  const core::PrefillSequence seq{prompt, 0};
  std::vector<float> logits;
  XLSTMD_RETURN_IF_ERROR(model.Prefill({&seq, 1}, options, &logits));
  const int64_t vocab = model.vocab_size();
  const int32_t slot = 0;
  out->clear();
  while (true) {
    if (static_cast<int64_t>(logits.size()) < vocab) {
      return absl::InternalError("model returned fewer logits than the vocabulary size");
    }
    const int32_t next = ArgMax(logits.data(), vocab);
    out->push_back(next);
    if (static_cast<int64_t>(out->size()) >= max_tokens) break;
    XLSTMD_RETURN_IF_ERROR(model.Step({&next, 1}, {&slot, 1}, &logits));
  }
  return absl::OkStatus();
}

}  // namespace

int RunGenerate(int argc, char** argv) {
  std::string model_dir;
  WeightFlags weights;
  std::vector<int64_t> tokens;
  int64_t max_tokens = 0, threads = 0, chunk_size = 64;
  FlagSet flags("generate",
                "Greedy generation: prefills --tokens, then feeds back the argmax token (ties ->\n"
                "lowest id) one step at a time. Prints the generated ids comma-separated.");
  flags.String("model", &model_dir, "model directory (config.json + safetensors)", true);
  flags.IntList("tokens", &tokens, 0, INT32_MAX,
                "prompt token ids, comma-separated (or the JSON array `xlstm tokenize` prints)",
                true);
  flags.Int("max-tokens", &max_tokens, 1, 1 << 24, "number of tokens to generate", true);
  weights.Declare(flags);
  flags.Int("threads", &threads, 0, 1024, "backend threads (0 = one per core)");
  flags.Int("chunk-size", &chunk_size, 1, 1 << 20, "prefill chunk size");
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  absl::StatusOr<ToolModel> m = LoadToolModel(model_dir, weights, static_cast<int>(threads));
  if (!m.ok()) return ReportRuntimeError("generate", m.status());
  if (std::string err = CheckTokens(tokens, m->model->vocab_size()); !err.empty()) {
    flags.PrintError(err);
    return kExitUsage;
  }
  std::vector<int32_t> generated;
  if (absl::Status s = Generate(*m->model, ToInt32(tokens), max_tokens, chunk_size, &generated);
      !s.ok()) {
    return ReportRuntimeError("generate", s);
  }
  std::printf("%s\n", absl::StrJoin(generated, ",").c_str());
  return kExitOk;
}

}  // namespace xlstmd::tools
