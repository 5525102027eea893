// `xlstm mkmodel`: writes a family-A model directory with random weights
// (core/model/random_model.h).
#include <cstdint>
#include <cstdio>
#include <string>

#include "core/model/random_model.h"
#include "tools/commands.h"
#include "core/base/flags.h"
#include "tools/tool_model.h"

namespace xlstmd::tools {

int RunMkmodel(int argc, char** argv) {
  std::string family = "xlstm";
  int64_t embedding_dim = 0, num_blocks = 0, num_heads = 0, vocab = 0, seed = 0, threads = 0;
  double qk_dim_factor = 0.5, v_dim_factor = 1.0, ffn_proj_factor = 2.667;
  std::string dtype = "f32";
  std::string out;
  bool force = false;
  FlagSet flags("mkmodel",
                "Writes config.json and safetensors weights (HF names, sharded above 2 GiB) of a\n"
                "family-A xLSTM model with random, realistically scaled weights. The bytes depend\n"
                "only on the flags (not on --threads).");
  flags.Choice("family", &family, {"xlstm"}, "model family (family A, model_type xlstm)");
  flags.Int("embedding-dim", &embedding_dim, 1, int64_t{1} << 20, "E", true);
  flags.Int("num-blocks", &num_blocks, 1, 4096, "number of blocks", true);
  flags.Int("num-heads", &num_heads, 1, 4096, "number of heads", true);
  flags.Int("vocab", &vocab, 1, int64_t{1} << 24, "vocabulary size", true);
  flags.Double("qk-dim-factor", &qk_dim_factor, 1e-6, 64, "qk_dim = int(E * factor)");
  flags.Double("v-dim-factor", &v_dim_factor, 1e-6, 64, "v_dim = int(E * factor)");
  flags.Double("ffn-proj-factor", &ffn_proj_factor, 1e-6, 64, "FFN width factor");
  flags.Choice("dtype", &dtype, {"f32", "bf16"}, "on-disk weight dtype");
  flags.Int("seed", &seed, 0, INT64_MAX, "PRNG seed", true);
  flags.String("out", &out, "output directory (created if missing)", true);
  flags.Bool("force", &force, "overwrite a model already in --out");
  flags.Int("threads", &threads, 0, 1024, "generator threads (0 = one per core)");
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  core::RandomModelSpec spec;
  spec.embedding_dim = embedding_dim;
  spec.num_blocks = num_blocks;
  spec.num_heads = num_heads;
  spec.vocab = vocab;
  spec.qk_dim_factor = qk_dim_factor;
  spec.v_dim_factor = v_dim_factor;
  spec.ffn_proj_factor = ffn_proj_factor;
  spec.dtype = dtype == "bf16" ? kernels::DType::kBF16 : kernels::DType::kF32;
  spec.seed = static_cast<uint64_t>(seed);
  spec.threads = static_cast<int>(threads);
  spec.overwrite = force;
  if (absl::Status s = core::ValidateRandomModelSpec(spec); !s.ok()) {
    flags.PrintError(std::string(s.message()));
    return kExitUsage;
  }
  if (absl::Status s = core::WriteRandomModel(spec, out); !s.ok()) {
    return ReportRuntimeError("mkmodel", s);
  }
  return kExitOk;
}

}  // namespace xlstmd::tools
