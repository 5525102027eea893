// `xlstm score`: runs one token sequence through a model and writes the logits of every
// position plus the final recurrent state to a safetensors file, under the golden names
// (`logits` [T, V], `state/block_{i}/C` [NH, DQK, DV], `.../n` [NH, DQK], `.../m` [NH, 1]).
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/model/safetensors.h"
#include "tools/commands.h"
#include "core/base/flags.h"
#include "tools/tool_model.h"

namespace xlstmd::tools {
namespace {

struct ScoreArgs {
  std::string model_dir;
  std::vector<int64_t> tokens;
  int64_t split_at = 0;
  std::string mode = "prefill";
  int64_t chunk_size = 64;
  WeightFlags weights;
  int64_t threads = 0;
  std::string out;
};

// Logits [T, V] for `tokens` from slot 0 (zeroed), by the requested path.
absl::Status RunSequence(core::XlstmModel& model, const ScoreArgs& args,
                         std::vector<float>* logits) {
  const std::vector<int32_t> tokens = ToInt32(args.tokens);
  XLSTMD_RETURN_IF_ERROR(model.AllocateSlots(1));
  logits->clear();
  std::vector<float> part;
  if (args.mode == "step") {
    const int32_t slot = 0;
    for (int32_t t : tokens) {
      XLSTMD_RETURN_IF_ERROR(model.Step({&t, 1}, {&slot, 1}, &part));
      logits->insert(logits->end(), part.begin(), part.end());
    }
    return absl::OkStatus();
  }
  core::PrefillOptions options;
  options.chunk_size = args.chunk_size;
  options.logits = core::LogitsMode::kAll;
  const size_t split = static_cast<size_t>(args.split_at);
  std::vector<absl::Span<const int32_t>> segments;
  if (split > 0) {
    segments.push_back(absl::MakeConstSpan(tokens).subspan(0, split));
    segments.push_back(absl::MakeConstSpan(tokens).subspan(split));
  } else {
    segments.push_back(absl::MakeConstSpan(tokens));
  }
  for (absl::Span<const int32_t> seg : segments) {
    const core::PrefillSequence seq{seg, 0};
    XLSTMD_RETURN_IF_ERROR(model.Prefill({&seq, 1}, options, &part));
    logits->insert(logits->end(), part.begin(), part.end());
  }
  return absl::OkStatus();
}

absl::Status WriteScore(core::XlstmModel& model, const ScoreArgs& args,
                        const std::vector<float>& logits) {
  const core::StateLayout& layout = model.state_layout();
  std::vector<float> state(static_cast<size_t>(layout.floats_per_slot()));
  model.ReadSlot(0, state.data());
  const int64_t t = static_cast<int64_t>(args.tokens.size());
  const int64_t nh = layout.heads(), dqk = layout.dqk(), dv = layout.dv();
  std::vector<core::TensorToWrite> tensors;
  tensors.push_back({"logits", core::TensorDType::kF32, {t, model.vocab_size()}, logits.data()});
  tensors.push_back({"tokens", core::TensorDType::kI64, {t}, args.tokens.data()});
  const core::ModelConfig& c = model.config();
  for (int64_t b = 0; b < layout.num_blocks(); ++b) {
    const core::MlstmBlockStateOffsets& o = layout.block(b);
    const std::string p = absl::StrCat("state/block_", b, "/");
    if (!layout.paper()) {
      tensors.push_back({p + "C", core::TensorDType::kF32, {nh, dqk, dv}, &state[o.c_offset]});
      tensors.push_back({p + "n", core::TensorDType::kF32, {nh, dqk}, &state[o.n_offset]});
      tensors.push_back({p + "m", core::TensorDType::kF32, {nh, 1}, &state[o.m_offset]});
      continue;
    }
    // Family B: the golden files' names (../shared/golden/README.md); the conv window holds
    // the last KS - 1 inputs (the goldens' [KS, D] window minus its oldest row).
    const int64_t e = c.embedding_dim;
    if (o.slstm) {
      for (auto [name, off] : {std::pair{"h", o.h_offset}, std::pair{"c", o.c_offset},
                               std::pair{"n", o.n_offset}, std::pair{"m", o.m_offset}}) {
        tensors.push_back({absl::StrCat(p, "slstm/", name), core::TensorDType::kF32, {e},
                           &state[off]});
      }
    } else {
      tensors.push_back({p + "mlstm/C", core::TensorDType::kF32, {nh, dqk, dv}, &state[o.c_offset]});
      tensors.push_back({p + "mlstm/n", core::TensorDType::kF32, {nh, dqk}, &state[o.n_offset]});
      tensors.push_back({p + "mlstm/m", core::TensorDType::kF32, {nh}, &state[o.m_offset]});
    }
    if (o.conv_offset >= 0) {
      const int64_t d = o.slstm ? e : c.paper.m_inner(e);
      const int64_t ks = o.slstm ? c.paper.s_conv : c.paper.m_conv;
      tensors.push_back({p + "conv", core::TensorDType::kF32, {ks - 1, d}, &state[o.conv_offset]});
    }
  }
  return core::WriteSafetensors(args.out, tensors);
}

}  // namespace

int RunScore(int argc, char** argv) {
  ScoreArgs a;
  FlagSet flags(
      "score",
      "Runs --tokens from a zero state and writes `logits` (F32 [T, V]), `tokens` and the\n"
      "final state (`state/block_{i}/C|n|m`; family B: `state/block_{i}/mlstm/C|n|m`,\n"
      "`slstm/h|c|n|m` and `conv`) to --out. prefill mode runs the chunkwise\n"
      "path (in two calls on the same state with --split-at); step mode feeds one token\n"
      "at a time.");
  flags.String("model", &a.model_dir, "model directory (config.json + safetensors)", true);
  flags.IntList("tokens", &a.tokens, 0, INT32_MAX,
                "token ids, comma-separated (or the JSON array `xlstm tokenize` prints)", true);
  flags.Int("split-at", &a.split_at, 0, INT32_MAX,
            "prefill tokens[:K] then tokens[K:] on the same state (0 = no split)");
  flags.Choice("mode", &a.mode, {"prefill", "step"}, "execution path");
  flags.Int("chunk-size", &a.chunk_size, 1, 1 << 20, "prefill chunk size");
  a.weights.Declare(flags);
  flags.Int("threads", &a.threads, 0, 1024, "backend threads (0 = one per core)");
  flags.String("out", &a.out, "output .safetensors file", true);
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  if (a.split_at >= static_cast<int64_t>(a.tokens.size())) {
    flags.PrintError(absl::StrCat("--split-at: ", a.split_at, " is out of range [0, ",
                                  a.tokens.size() - 1, "]"));
    return kExitUsage;
  }
  if (a.split_at > 0 && a.mode == "step") {
    flags.PrintError("--split-at applies to --mode prefill only");
    return kExitUsage;
  }
  absl::StatusOr<ToolModel> m =
      LoadToolModel(a.model_dir, a.weights, static_cast<int>(a.threads));
  if (!m.ok()) return ReportRuntimeError("score", m.status());
  if (std::string err = CheckTokens(a.tokens, m->model->vocab_size()); !err.empty()) {
    flags.PrintError(err);
    return kExitUsage;
  }
  std::vector<float> logits;
  absl::Status s = RunSequence(*m->model, a, &logits);
  if (s.ok()) s = WriteScore(*m->model, a, logits);
  if (!s.ok()) return ReportRuntimeError("score", s);
  std::printf("wrote %s: logits [%zu, %lld] and the final state after %zu tokens (%s%s)\n",
              a.out.c_str(), a.tokens.size(), static_cast<long long>(m->model->vocab_size()),
              a.tokens.size(), a.mode.c_str(),
              a.mode == "prefill" ? absl::StrCat(", chunk ", a.chunk_size).c_str() : "");
  return kExitOk;
}

}  // namespace xlstmd::tools
