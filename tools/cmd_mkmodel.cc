// `xlstm mkmodel`: writes a model directory with random weights, family A (xLSTM-Large,
// core/model/random_model.h) or family B (the paper's xLSTMLMModel,
// core/model/random_model_paper.h).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/base/flags.h"
#include "core/base/progress_bar.h"
#include "core/model/random_model.h"
#include "core/model/random_model_paper.h"
#include "tools/commands.h"
#include "tools/tool_model.h"

namespace xlstmd::tools {
namespace {

constexpr char kLarge[] = "xlstm";
constexpr char kPaper[] = "xlstm-paper";

// The flags only the other family reads; naming one is a usage error rather than silently
// ignored.
std::vector<std::string> OtherFamilysFlags(bool paper) {
  if (paper) return {"qk-dim-factor", "v-dim-factor"};
  return {"slstm-at",      "slstm-heads", "conv",         "slstm-conv",
          "qkv-blocksize", "proj-factor", "ffn-act",      "group-norm-weight",
          "bias",          "tie-weights", "slstm-layout", "context-length"};
}

struct MkmodelArgs {
  std::string family = kLarge;
  int64_t embedding_dim = 0, num_blocks = 0, num_heads = 4, vocab = 0, seed = 0, threads = 0;
  double qk_dim_factor = 0.5, v_dim_factor = 1.0, ffn_proj_factor = 2.667;
  std::string slstm_at = "none";
  int64_t slstm_heads = 4, conv = 4, slstm_conv = 4, qkv_blocksize = 4, context_length = 2048;
  double proj_factor = 2.0;
  std::string ffn_act = "gelu", slstm_layout = "cuda";
  bool group_norm_weight = true, bias = false, tie_weights = false;
  std::string dtype = "f32";
  std::string out;
  bool force = false;
};

void DeclareFlags(FlagSet& flags, MkmodelArgs& a) {
  flags.Choice("family", &a.family, {kLarge, kPaper},
               "model family: xlstm (family A, xLSTM-Large) or xlstm-paper (family B, the "
               "paper's xLSTMLMModel)");
  flags.Int("embedding-dim", &a.embedding_dim, 1, int64_t{1} << 20, "E", true);
  flags.Int("num-blocks", &a.num_blocks, 1, 4096, "number of blocks", true);
  flags.Int("vocab", &a.vocab, 1, int64_t{1} << 24, "vocabulary size", true);
  flags.Int("num-heads", &a.num_heads, 1, 4096,
            "mLSTM heads (required with xlstm; the default is xlstm-paper's)");
  flags.Double("ffn-proj-factor", &a.ffn_proj_factor, 1e-6, 64,
               "FFN width factor (the default is xlstm's; xlstm-paper: the sLSTM blocks' "
               "FFN, default 1.3 there)");
  flags.Double("qk-dim-factor", &a.qk_dim_factor, 1e-6, 64, "xlstm: qk_dim = int(E * factor)");
  flags.Double("v-dim-factor", &a.v_dim_factor, 1e-6, 64, "xlstm: v_dim = int(E * factor)");
  flags.String("slstm-at", &a.slstm_at,
               "xlstm-paper: sLSTM block indices, comma-separated (e.g. 0,2), all, or none");
  flags.SetValueHint("slstm-at", "LIST");
  flags.Int("slstm-heads", &a.slstm_heads, 1, 4096, "xlstm-paper: sLSTM heads (divide E)");
  flags.Int("conv", &a.conv, 0, 1024, "xlstm-paper: mLSTM conv1d kernel size (0 = no conv)");
  flags.Int("slstm-conv", &a.slstm_conv, 0, 1024,
            "xlstm-paper: sLSTM conv1d kernel size (0 = no conv)");
  flags.Int("qkv-blocksize", &a.qkv_blocksize, 1, 4096,
            "xlstm-paper: mLSTM q/k/v headwise block size");
  flags.Double("proj-factor", &a.proj_factor, 1e-6, 64,
               "xlstm-paper: mLSTM up-projection, Din = ceil(factor * E / 64) * 64");
  flags.Choice("ffn-act", &a.ffn_act, {"gelu", "swish", "relu", "relu^2", "sigmoid", "selu"},
               "xlstm-paper: FFN gate activation");
  flags.Bool("group-norm-weight", &a.group_norm_weight,
             "xlstm-paper: write sLSTM group_norm.weight (--group-norm-weight=false: none)");
  flags.Bool("bias", &a.bias, "xlstm-paper: linear-layer biases (upstream bias: true)");
  flags.Bool("tie-weights", &a.tie_weights, "xlstm-paper: LM head = embedding (no lm_head)");
  flags.Choice("slstm-layout", &a.slstm_layout, {"cuda", "vanilla"},
               "xlstm-paper: storage layout of the sLSTM recurrent kernel and bias");
  flags.Int("context-length", &a.context_length, 1, int64_t{1} << 30,
            "xlstm-paper: config context_length (upstream's mask size; not a limit here)");
  flags.Choice("weight-dtype", &a.dtype, {"f32", "bf16"}, "on-disk weight dtype");
  flags.Renamed("dtype", "weight-dtype");
  flags.Int("seed", &a.seed, 0, INT64_MAX, "PRNG seed (the same seed gives the same weights)");
  flags.String("out", &a.out, "output directory (created if missing)", true);
  flags.Bool("force", &a.force, "overwrite a model already in --out");
  flags.Int("threads", &a.threads, 0, 1024, "generator threads (0 = one per core)");
}

// "none" / "" -> no sLSTM blocks, "all" -> every block, else comma-separated indices (their
// range is checked with the rest of the spec).
bool ParseSlstmAt(const std::string& text, int64_t num_blocks, std::vector<int64_t>* out,
                  std::string* error) {
  out->clear();
  if (text.empty() || text == "none") return true;
  if (text == "all") {
    for (int64_t b = 0; b < num_blocks; ++b) out->push_back(b);
    return true;
  }
  for (const absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t b = 0;
    if (!ParseInt64(std::string(part), &b)) {
      *error = absl::StrCat("--slstm-at: '", part, "' is not a block index (or use all / none)");
      return false;
    }
    out->push_back(b);
  }
  return true;
}

core::PaperModelSpec PaperSpec(const MkmodelArgs& a, const FlagSet& flags) {
  core::PaperModelSpec spec;
  spec.embedding_dim = a.embedding_dim;
  spec.num_blocks = a.num_blocks;
  spec.vocab = a.vocab;
  spec.context_length = a.context_length;
  spec.bias = a.bias;
  spec.tie_weights = a.tie_weights;
  spec.mlstm_heads = a.num_heads;
  spec.mlstm_conv = a.conv;
  spec.qkv_proj_blocksize = a.qkv_blocksize;
  spec.mlstm_proj_factor = a.proj_factor;
  spec.slstm_heads = a.slstm_heads;
  spec.slstm_conv = a.slstm_conv;
  spec.group_norm_weight = a.group_norm_weight;
  spec.slstm_layout = a.slstm_layout == "vanilla" ? core::SlstmWeightLayout::kVanilla
                                                  : core::SlstmWeightLayout::kCuda;
  // The shared flag's default is family A's; family B keeps upstream's 1.3 unless given.
  if (flags.WasSet("ffn-proj-factor")) spec.ffn_proj_factor = a.ffn_proj_factor;
  spec.ffn_act = a.ffn_act;
  spec.dtype = a.dtype == "bf16" ? kernels::DType::kBF16 : kernels::DType::kF32;
  spec.seed = static_cast<uint64_t>(a.seed);
  spec.threads = static_cast<int>(a.threads);
  spec.overwrite = a.force;
  return spec;
}

core::RandomModelSpec LargeSpec(const MkmodelArgs& a) {
  core::RandomModelSpec spec;
  spec.embedding_dim = a.embedding_dim;
  spec.num_blocks = a.num_blocks;
  spec.num_heads = a.num_heads;
  spec.vocab = a.vocab;
  spec.qk_dim_factor = a.qk_dim_factor;
  spec.v_dim_factor = a.v_dim_factor;
  spec.ffn_proj_factor = a.ffn_proj_factor;
  spec.dtype = a.dtype == "bf16" ? kernels::DType::kBF16 : kernels::DType::kF32;
  spec.seed = static_cast<uint64_t>(a.seed);
  spec.threads = static_cast<int>(a.threads);
  spec.overwrite = a.force;
  return spec;
}

}  // namespace

int RunMkmodel(int argc, char** argv) {
  MkmodelArgs a;
  FlagSet flags("mkmodel",
                "Writes config.json and safetensors weights (sharded above 2 GiB) of an xLSTM\n"
                "model with random, realistically scaled weights: --family xlstm (default;\n"
                "HF names of xLSTM-7B) or --family xlstm-paper (upstream xLSTMLMModel names and\n"
                "config tree, mLSTM and sLSTM blocks). Flags marked xlstm: or xlstm-paper: apply\n"
                "to that family only. The bytes depend only on the flags (not on --threads).");
  DeclareFlags(flags, a);
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  const bool paper = a.family == kPaper;
  for (const std::string& name : OtherFamilysFlags(paper)) {
    if (flags.WasSet(name)) {
      flags.PrintError(
          absl::StrCat("--", name, " applies to --family ", paper ? kLarge : kPaper, " only"));
      return kExitUsage;
    }
  }
  absl::Status status;
  base::ProgressBar bar("writing weights");  // on a terminal only
  auto progress = [&bar](uint64_t done, uint64_t total) { bar.Update(done, total); };
  if (paper) {
    core::PaperModelSpec spec = PaperSpec(a, flags);
    spec.progress = progress;
    std::string error;
    if (!ParseSlstmAt(a.slstm_at, a.num_blocks, &spec.slstm_at, &error)) {
      flags.PrintError(error);
      return kExitUsage;
    }
    if (absl::Status s = core::ValidatePaperModelSpec(spec); !s.ok()) {
      flags.PrintError(std::string(s.message()));
      return kExitUsage;
    }
    status = core::WritePaperRandomModel(spec, a.out);
  } else {
    if (!flags.WasSet("num-heads")) {
      flags.PrintError("missing required flag --num-heads (for --family xlstm)");
      return kExitUsage;
    }
    core::RandomModelSpec spec = LargeSpec(a);
    spec.progress = progress;
    if (absl::Status s = core::ValidateRandomModelSpec(spec); !s.ok()) {
      flags.PrintError(std::string(s.message()));
      return kExitUsage;
    }
    status = core::WriteRandomModel(spec, a.out);
  }
  bar.Clear();
  if (!status.ok()) return ReportRuntimeError("mkmodel", status);
  std::error_code ec;
  uintmax_t bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator(a.out, ec)) {
    if (entry.path().extension() == ".safetensors") bytes += entry.file_size(ec);
  }
  std::printf("wrote %s: %s, %lld blocks, embedding %lld, vocab %lld, %s, %.1f MB of weights "
              "(random, seed %lld)\n",
              a.out.c_str(), a.family.c_str(), static_cast<long long>(a.num_blocks),
              static_cast<long long>(a.embedding_dim), static_cast<long long>(a.vocab),
              a.dtype.c_str(), static_cast<double>(bytes) / 1e6, static_cast<long long>(a.seed));
  return kExitOk;
}

}  // namespace xlstmd::tools
