// `xlstm bench`: prints JSON lines — first the measured hardware limits (DRAM read bandwidth,
// FMA peak), then one line per decode batch size and per prefill length with throughput and
// the roofline verdict (bench_cost.h, roofline.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/model/weight_format.h"
#include "core/base/status_macros.h"
#include "core/base/sample_pool.h"
#include "core/sampling/sampler.h"
#include "kernels/backend.h"
#include "kernels/backend_registry.h"
#include "nlohmann/json.hpp"
#include "tools/bench_cost.h"
#include "tools/bench_device.h"
#include "tools/commands.h"
#include "core/base/flags.h"
#include "tools/roofline.h"
#include "tools/tool_model.h"

namespace xlstmd::tools {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

struct BenchArgs {
  std::string model_dir;
  std::vector<int64_t> batches = {1, 8, 32, 64};
  std::vector<int64_t> prompt_lens = {512, 2048};
  int64_t threads = 0;
  WeightFlags weights;
  double seconds = 2.0;
  int64_t dram_mib = 2048;
  int64_t decode_prompt_len = 16;
  int64_t chunk_size = 64;
  std::vector<std::string> compare_dtypes;  // --compare-weight-dtypes
  int64_t rounds = 3;
  std::string backend = "cpu";
  std::string synthetic;       // --synthetic tiny|1b|7b (instead of --model)
  std::string synthetic_dir;   // where the synthetic model is written (removed after)
  int64_t device_probe_mib = 4096;
};

struct Limits {
  double dram_gbps = 0;
  double peak_gflops = 0;
  // The compute limit of prefill lines where it differs (a GPU's tensor cores); 0 = peak_gflops.
  double prefill_peak_gflops = 0;
  Limits ForPrefill() const {
    Limits l = *this;
    if (prefill_peak_gflops > 0) l.peak_gflops = prefill_peak_gflops;
    return l;
  }
};

// 4 significant digits keep the lines readable.
double Round4(double x) {
  if (!std::isfinite(x) || x == 0) return x;
  return std::stod(absl::StrFormat("%.4g", x));
}

void PrintLine(const Json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Json ResultLine(const char* phase, int64_t batch, int64_t prompt_len, double tokens, double seconds,
                const Work& work, const Limits& limits) {
  const Roofline r = Judge(work, limits.dram_gbps, limits.peak_gflops);
  const double tokens_per_s = tokens / seconds;
  const double limit_tokens_per_s = r.limit_seconds > 0 ? tokens / r.limit_seconds : 0;
  Json j;
  j["phase"] = phase;
  j["batch"] = batch;
  j["prompt_len"] = prompt_len;
  j["tokens_per_s"] = Round4(tokens_per_s);
  j["bound"] = r.bound;
  j["roofline_fraction"] = Round4(limit_tokens_per_s > 0 ? tokens_per_s / limit_tokens_per_s : 0);
  j[std::string(phase) == "decode" ? "ms_per_step" : "ms_per_prefill"] = Round4(seconds * 1e3);
  j["limit_tokens_per_s"] = Round4(limit_tokens_per_s);
  j["achieved_gbps"] = Round4(work.bytes / seconds / 1e9);
  j["achieved_gflops"] = Round4(work.flops / seconds / 1e9);
  j["mbytes_per_call"] = Round4(work.bytes / 1e6);
  j["gflop_per_call"] = Round4(work.flops / 1e9);
  return j;
}

// Where a pass's time goes: `pass` run `runs` times with the backend timing its ops (eagerly:
// no CUDA graphs meanwhile), as the mean ms per pass by class of op. Null where the backend
// cannot time ops.
template <typename F>
absl::StatusOr<Json> OpSplit(kernels::Backend& be, int runs, F&& pass) {
  if (!be.StartOpTiming().ok()) return Json();
  for (int i = 0; i < runs; ++i) {
    if (absl::Status s = pass(); !s.ok()) {
      (void)be.StopOpTiming();
      return s;
    }
  }
  XLSTMD_ASSIGN_OR_RETURN(const kernels::OpTimes t, be.StopOpTiming());
  Json j;
  j["gemm"] = Round4(t.gemm_ms / runs);
  j["mlstm"] = Round4(t.mlstm_ms / runs);
  j["rowops"] = Round4(t.rowops_ms / runs);
  j["gaps"] = Round4(t.gaps_ms() / runs);
  j["span"] = Round4(t.span_ms / runs);
  j["ops"] = t.ops / runs;
  return j;
}

absl::StatusOr<Json> BenchDecode(core::XlstmModel& model, const BenchArgs& a,
                                 const ModelCost& cost, const Limits& limits, int64_t batch) {
  XLSTMD_RETURN_IF_ERROR(model.AllocateSlots(static_cast<int32_t>(batch)));
  std::vector<std::vector<int32_t>> prompts;
  std::vector<core::PrefillSequence> seqs;
  std::vector<int32_t> slots, tokens;
  for (int64_t b = 0; b < batch; ++b) {
    prompts.push_back(RandomTokens(a.decode_prompt_len, model.vocab_size(), 100 + b));
    slots.push_back(static_cast<int32_t>(b));
  }
  for (int64_t b = 0; b < batch; ++b) seqs.push_back({prompts[b], slots[b]});
  core::PrefillOptions options;
  options.chunk_size = a.chunk_size;
  options.logits = core::LogitsMode::kNone;
  std::vector<float> logits;
  XLSTMD_RETURN_IF_ERROR(model.Prefill(seqs, options, &logits));
  tokens = RandomTokens(batch, model.vocab_size(), 7);
  XLSTMD_RETURN_IF_ERROR(model.Step(tokens, slots, &logits));  // warm-up
  int64_t steps = 0;
  const Clock::time_point start = Clock::now();
  double elapsed = 0;
  while (steps < 3 || elapsed < a.seconds) {
    tokens = RandomTokens(batch, model.vocab_size(), 1000 + static_cast<uint64_t>(steps));
    XLSTMD_RETURN_IF_ERROR(model.Step(tokens, slots, &logits));
    ++steps;
    elapsed = SecondsSince(start);
  }
  const double step_s = elapsed / static_cast<double>(steps);
  Json line = ResultLine("decode", batch, 0, static_cast<double>(batch), step_s,
                         DecodeStepWork(cost, batch), limits);
  XLSTMD_ASSIGN_OR_RETURN(Json split, OpSplit(model.backend(), 3, [&]() {
                            return model.Step(tokens, slots, &logits);
                          }));
  if (!split.is_null()) line["split_ms"] = std::move(split);
  return line;
}

// The scheduler samples every row of a step on its own thread after the forward pass: this
// line says what that costs at `batch` rows (top-p 0.95 at temperature 0.8, the costly
// common case: a partial sort per row), as a fraction of the measured decode step.
absl::StatusOr<Json> BenchSampling(int64_t vocab, int64_t batch, double step_ms, double seconds) {
  core::SamplingConfig config;
  config.temperature = 0.8f;
  config.top_p = 0.95f;
  std::vector<core::Sampler> samplers;
  for (int64_t b = 0; b < batch; ++b) {
    XLSTMD_ASSIGN_OR_RETURN(core::Sampler s,
                            core::Sampler::Create(config, static_cast<int32_t>(vocab), 1 + b));
    samplers.push_back(std::move(s));
  }
  std::vector<float> logits(static_cast<size_t>(batch * vocab));
  uint64_t x = 88172645463325252ull;
  // Roughly like a language model's: N(0, 2.5) (a sum of four uniforms), so the nucleus
  // holds hundreds to thousands of tokens rather than all of them or one.
  auto uniform = [&x]() {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return static_cast<float>(static_cast<double>(x >> 11) / 9007199254740992.0) - 0.5f;
  };
  for (float& l : logits) l = (uniform() + uniform() + uniform() + uniform()) * 4.33f;
  int64_t steps = 0;
  const Clock::time_point start = Clock::now();
  double elapsed = 0;
  while (steps < 2 || elapsed < seconds) {
    for (int64_t b = 0; b < batch; ++b) {
      samplers[b].Sample(absl::MakeConstSpan(logits).subspan(b * vocab, vocab), nullptr);
    }
    ++steps;
    elapsed = SecondsSince(start);
  }
  const double ms = elapsed / static_cast<double>(steps) * 1e3;
  // The same rows through the scheduler's pool (one thread per core, core/base/sample_pool.h).
  const int threads = static_cast<int>(std::min(16u, std::max(1u, std::thread::hardware_concurrency())));
  core::SamplePool pool(threads - 1);
  steps = 0;
  const Clock::time_point pstart = Clock::now();
  elapsed = 0;
  while (steps < 2 || elapsed < seconds) {
    pool.ForEach(batch, [&](int64_t b) {
      samplers[b].Sample(absl::MakeConstSpan(logits).subspan(b * vocab, vocab), nullptr);
    });
    ++steps;
    elapsed = SecondsSince(pstart);
  }
  const double pool_ms = elapsed / static_cast<double>(steps) * 1e3;
  Json j;
  j["phase"] = "sample";
  j["batch"] = batch;
  j["ms_per_step_1_thread"] = Round4(ms);
  j["ms_per_step"] = Round4(pool_ms);
  j["threads"] = threads;
  j["fraction_of_decode_step"] = Round4(step_ms > 0 ? pool_ms / step_ms : 0);
  return j;
}

absl::StatusOr<Json> BenchPrefill(core::XlstmModel& model, const BenchArgs& a,
                                  const ModelCost& cost, const Limits& limits,
                                  int64_t prompt_len) {
  XLSTMD_RETURN_IF_ERROR(model.AllocateSlots(1));
  const std::vector<int32_t> prompt = RandomTokens(prompt_len, model.vocab_size(), 5);
  const core::PrefillSequence seq{prompt, 0};
  core::PrefillOptions options;
  options.chunk_size = a.chunk_size;
  options.logits = core::LogitsMode::kLast;
  std::vector<float> logits;
  // The first run doubles as warm-up; it is kept only when it alone takes most of the budget.
  Clock::time_point start = Clock::now();
  XLSTMD_RETURN_IF_ERROR(model.Prefill({&seq, 1}, options, &logits));
  double elapsed = SecondsSince(start);
  int64_t runs = 1;
  if (elapsed < a.seconds / 2) {
    runs = 0;
    start = Clock::now();
    elapsed = 0;
    while (runs < 1 || elapsed < a.seconds) {
      model.ResetSlot(0);
      XLSTMD_RETURN_IF_ERROR(model.Prefill({&seq, 1}, options, &logits));
      ++runs;
      elapsed = SecondsSince(start);
    }
  }
  Json line = ResultLine("prefill", 1, prompt_len, static_cast<double>(prompt_len),
                         elapsed / static_cast<double>(runs),
                         PrefillWork(cost, prompt_len, a.chunk_size), limits.ForPrefill());
  XLSTMD_ASSIGN_OR_RETURN(Json split, OpSplit(model.backend(), 1, [&]() {
                            model.ResetSlot(0);
                            return model.Prefill({&seq, 1}, options, &logits);
                          }));
  if (!split.is_null()) line["split_ms"] = std::move(split);
  return line;
}

// A device backend: its own copy and GEMM probes, with the device's nominal figures beside
// them; the roofline uses the measured copy bandwidth and the nominal FP32 peak (the exact
// math mode is FP32 FMA), or the measured GEMM rate where the device reports no peak.
absl::StatusOr<Limits> MeasureBackendLimits(const BenchArgs& a, kernels::Backend& be) {
  XLSTMD_ASSIGN_OR_RETURN(const DeviceLimits d, MeasureDeviceLimits(be, a.device_probe_mib));
  Json c;
  c["limit"] = "device_copy_gbps";
  c["value"] = Round4(d.copy_gbps);
  c["nominal_gbps"] = Round4(d.nominal_gbps);
  c["fraction_of_nominal"] = Round4(d.nominal_gbps > 0 ? d.copy_gbps / d.nominal_gbps : 0);
  c["probe_gib_per_pass"] = Round4(d.probe_gib);
  c["device"] = d.description;
  PrintLine(c);
  Json g;
  g["limit"] = "device_fp32_gflops";
  g["value"] = Round4(d.nominal_fp32_gflops > 0 ? d.nominal_fp32_gflops : d.gemm_gflops);
  g["nominal"] = Round4(d.nominal_fp32_gflops);
  g["decode_gemm_gflops_256x8192x8192"] = Round4(d.gemm_gflops);
  PrintLine(g);
  // Prefill projections run on tensor cores: two bf16 products each under the exact math
  // mode (x split into hi + lo), one under bf16 math, so the limit is the nominal MMA peak
  // over that; the measured rate stands in where the architecture's rate is unknown.
  const int products = be.Math() == kernels::MathMode::kExact ? 2 : 1;
  Json mma;
  mma["limit"] = "device_prefill_gflops";
  mma["value"] = Round4(d.nominal_bf16_mma_gflops > 0 ? d.nominal_bf16_mma_gflops / products
                                                     : d.mma_gflops);
  mma["nominal_bf16_mma"] = Round4(d.nominal_bf16_mma_gflops);
  mma["bf16_products_per_projection"] = products;
  mma["prefill_gemm_gflops_2048x8192x8192"] = Round4(d.mma_gflops);
  mma["cuda_math"] = kernels::MathModeName(be.Math());
  PrintLine(mma);
  Limits l;
  l.dram_gbps = d.copy_gbps;
  l.peak_gflops = d.nominal_fp32_gflops > 0 ? d.nominal_fp32_gflops : d.gemm_gflops;
  l.prefill_peak_gflops = mma["value"].get<double>();
  return l;
}

Limits MeasureLimits(const BenchArgs& a, int threads, const std::string& kernel_isa) {
  Limits l;
  l.dram_gbps = MeasureDramReadGbps(threads, static_cast<size_t>(a.dram_mib) << 20, 5);
  Json d;
  d["limit"] = "dram_read_gbps";
  d["value"] = Round4(l.dram_gbps);
  d["threads"] = threads;
  d["buffer_mib"] = a.dram_mib;
  PrintLine(d);
  const FmaPeak peak = MeasureFmaPeak(threads, kernel_isa);
  l.peak_gflops = peak.gflops;
  Json f;
  f["limit"] = "fma_peak_gflops";
  f["isa"] = peak.isa;
  f["value"] = Round4(peak.gflops);
  f["threads"] = threads;
  PrintLine(f);
  return l;
}

// The host's DRAM and FMA probes for the CPU backend; the device's probes otherwise.
absl::StatusOr<Limits> LimitsFor(const BenchArgs& a, int threads, kernels::Backend& be) {
  if (be.HostVisible()) return MeasureLimits(a, threads, be.Isa());
  return MeasureBackendLimits(a, be);
}

Json ModelInfoLine(const BenchArgs& a, const ToolModel& m, const ModelCost& cost,
                   const Limits& limits) {
  const core::XlstmModel& model = *m.model;
  Json info;
  info["model"] = a.synthetic.empty() ? a.model_dir : "synthetic:" + a.synthetic;
  info["backend"] = m.backend->Name();
  info["isa"] = m.backend->Isa();
  info["threads"] = m.backend->Threads();
  info["cuda_math"] = kernels::MathModeName(m.backend->Math());
  info["weight_dtype"] = kernels::DTypeName(model.matrix_dtype());
  info["lm_head_dtype"] = kernels::DTypeName(model.lm_head_dtype());
  info["embedding_dtype"] = kernels::DTypeName(m.backend->WeightDType());
  info["weight_bytes"] = model.weight_bytes();
  // What one decode step streams: every matrix but the embedding, as stored (quantized codes
  // and scales for int8/q4), which is what the decode lines' GB/s and roofline count.
  info["weight_read_bytes_per_step"] = cost.weight_read_bytes;
  info["state_bytes_per_session"] = model.state_bytes_per_session();
  info["machine_balance_flop_per_byte"] = Round4(limits.peak_gflops / limits.dram_gbps);
  return info;
}

absl::Status RunBenchPhases(const BenchArgs& a, int threads) {
  // Load first so a bad directory fails fast; the limits are still printed first.
  XLSTMD_ASSIGN_OR_RETURN(ToolModel m, LoadToolModel(a.model_dir, a.weights, threads, a.backend));
  XLSTMD_ASSIGN_OR_RETURN(const Limits limits, LimitsFor(a, threads, *m.backend));
  core::XlstmModel& model = *m.model;
  const ModelCost cost = ComputeModelCost(model);
  PrintLine(ModelInfoLine(a, m, cost, limits));
  for (int64_t b : a.batches) {
    XLSTMD_ASSIGN_OR_RETURN(const Json line, BenchDecode(model, a, cost, limits, b));
    PrintLine(line);
    XLSTMD_ASSIGN_OR_RETURN(const Json sample,
                            BenchSampling(model.vocab_size(), b, line["ms_per_step"].get<double>(),
                                          std::min(a.seconds, 1.0)));
    PrintLine(sample);
  }
  for (int64_t p : a.prompt_lens) {
    XLSTMD_ASSIGN_OR_RETURN(const Json line, BenchPrefill(model, a, cost, limits, p));
    PrintLine(line);
  }
  return absl::OkStatus();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// --compare-weight-dtypes: the same checkpoint under several weight formats in one run. The
// formats take turns (round after round) on every measurement, so a noisy neighbour on a
// shared host slows them alike, and each summary line gives every format's median and its
// ratio to the first format's.
absl::Status RunBenchCompare(const BenchArgs& a, int threads) {
  std::vector<ToolModel> models;
  std::vector<ModelCost> costs;
  for (const std::string& dtype : a.compare_dtypes) {
    WeightFlags w = a.weights;
    w.weight_dtype = dtype;
    w.lm_head_dtype = a.weights.lm_head_dtype;
    XLSTMD_ASSIGN_OR_RETURN(ToolModel m, LoadToolModel(a.model_dir, w, threads, a.backend));
    costs.push_back(ComputeModelCost(*m.model));
    models.push_back(std::move(m));
  }
  XLSTMD_ASSIGN_OR_RETURN(const Limits limits, LimitsFor(a, threads, *models[0].backend));
  for (size_t i = 0; i < models.size(); ++i) {
    PrintLine(ModelInfoLine(a, models[i], costs[i], limits));
  }
  auto compare = [&](const char* phase, int64_t size, auto&& run) -> absl::Status {
    std::vector<std::vector<double>> tps(models.size()), frac(models.size());
    for (int64_t r = 0; r < a.rounds; ++r) {
      for (size_t i = 0; i < models.size(); ++i) {
        XLSTMD_ASSIGN_OR_RETURN(Json line, run(i));
        line["weight_dtype"] = kernels::DTypeName(models[i].model->matrix_dtype());
        line["round"] = r;
        PrintLine(line);
        tps[i].push_back(line["tokens_per_s"].get<double>());
        frac[i].push_back(line["roofline_fraction"].get<double>());
      }
    }
    Json sum;
    sum["summary"] = phase;
    sum[std::string(phase) == "decode" ? "batch" : "prompt_len"] = size;
    sum["rounds"] = a.rounds;
    const double base = Median(tps[0]);
    for (size_t i = 0; i < models.size(); ++i) {
      const std::string name = kernels::DTypeName(models[i].model->matrix_dtype());
      sum["median_tokens_per_s"][name] = Round4(Median(tps[i]));
      sum["median_roofline_fraction"][name] = Round4(Median(frac[i]));
      sum["ratio_vs_" + a.compare_dtypes[0]][name] = Round4(base > 0 ? Median(tps[i]) / base : 0);
    }
    PrintLine(sum);
    return absl::OkStatus();
  };
  for (int64_t b : a.batches) {
    XLSTMD_RETURN_IF_ERROR(compare("decode", b, [&](size_t i) {
      return BenchDecode(*models[i].model, a, costs[i], limits, b);
    }));
  }
  for (int64_t p : a.prompt_lens) {
    XLSTMD_RETURN_IF_ERROR(compare("prefill", p, [&](size_t i) {
      return BenchPrefill(*models[i].model, a, costs[i], limits, p);
    }));
  }
  return absl::OkStatus();
}

}  // namespace

int RunBench(int argc, char** argv) {
  BenchArgs a;
  FlagSet flags("bench",
                "Prints JSON lines: the measured DRAM read bandwidth and FMA peak, then decode\n"
                "throughput per --batch (B sessions stepped together after a short prefill) and\n"
                "prefill throughput per --prompt-len, each with its roofline bound and fraction.");
  flags.String("model", &a.model_dir, "model directory (config.json + safetensors)");
  flags.String("backend", &a.backend, "compute backend: cpu, cuda, cuda:N, auto");
  flags.String("synthetic", &a.synthetic,
               "instead of --model: a random bf16 model of shape tiny, 1b or 7b (xLSTM-7B's "
               "dims) written to --synthetic-dir for the run and removed after");
  flags.String("synthetic-dir", &a.synthetic_dir,
               "where --synthetic writes its model (default /dev/shm/xlstm-synthetic-PID)");
  flags.Int("device-probe-mib", &a.device_probe_mib, 64, 1 << 20,
            "bytes a device copy-probe pass reads and writes, MiB (device backends)");
  flags.IntList("batch", &a.batches, 1, 4096, "decode batch sizes");
  flags.IntList("prompt-len", &a.prompt_lens, 1, 1 << 20, "prefill lengths");
  flags.Int("threads", &a.threads, 0, 1024, "threads for limits and backend (0 = one per core)");
  a.weights.Declare(flags);
  flags.DurationSeconds("min-time", &a.seconds, 0.01, 3600,
                        "minimum timed duration of each measurement");
  flags.Renamed("seconds", "min-time", "s");
  flags.Int("dram-mib", &a.dram_mib, 16, 1 << 20, "DRAM probe buffer (must dwarf the L3)");
  flags.Int("decode-prompt-len", &a.decode_prompt_len, 1, 1 << 20,
            "prompt prefilled into each decode session");
  flags.Int("chunk-size", &a.chunk_size, 1, 1 << 20, "prefill chunk size");
  std::string compare;
  flags.String("compare-weight-dtypes", &compare,
               "comma-separated weight formats (e.g. bf16,int8,q4) measured in turns in one "
               "run, with summary lines of medians and ratios to the first; overrides "
               "--weight-dtype");
  flags.Int("rounds", &a.rounds, 1, 1000, "turns per measurement with --compare-weight-dtypes");
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  for (absl::string_view d : absl::StrSplit(compare, ',', absl::SkipEmpty())) {
    const std::string dtype(d);
    const auto& choices = core::WeightDTypeChoices();
    if (std::find(choices.begin(), choices.end(), dtype) == choices.end()) {
      flags.PrintError(absl::StrCat("--compare-weight-dtypes: unknown format \"", dtype, "\""));
      return kExitUsage;
    }
    a.compare_dtypes.push_back(dtype);
  }
  if (a.model_dir.empty() == a.synthetic.empty()) {
    flags.PrintError("give exactly one of --model DIR and --synthetic tiny|1b|7b");
    return kExitUsage;
  }
  int threads = static_cast<int>(a.threads);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::filesystem::path synthetic_dir;
  if (!a.synthetic.empty()) {
    // No model is written (up to 14 GB) for a backend that cannot run it.
    if (absl::StatusOr<std::unique_ptr<kernels::Backend>> probe =
            kernels::CreateBackend(a.backend, kernels::BackendOptions{});
        !probe.ok()) {
      return ReportRuntimeError("bench", probe.status());
    }
    synthetic_dir = a.synthetic_dir.empty() ? DefaultSyntheticDir()
                                            : std::filesystem::path(a.synthetic_dir);
    absl::StatusOr<std::filesystem::path> dir = WriteSyntheticModel(a.synthetic, synthetic_dir);
    if (!dir.ok()) {
      std::error_code ec;
      std::filesystem::remove_all(synthetic_dir, ec);
      return ReportRuntimeError("bench", dir.status());
    }
    a.model_dir = dir->string();
  }
  const absl::Status s =
      a.compare_dtypes.empty() ? RunBenchPhases(a, threads) : RunBenchCompare(a, threads);
  if (!synthetic_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(synthetic_dir, ec);
  }
  if (!s.ok()) return ReportRuntimeError("bench", s);
  return kExitOk;
}

}  // namespace xlstmd::tools
