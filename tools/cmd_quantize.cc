// `xlstm quantize`: writes a copy of a checkpoint whose projection matrices (and, unless told
// otherwise, the LM head) are stored quantized, int8 or q4, in the canonical layout of
// kernels/quant.h: `NAME` holds the codes (I8 [rows, cols], or U8 [rows, Q4RowBytes(cols)]
// for q4) and `NAME_scale` the scales (F32 [rows] / F16 [rows, groups]). The embedding, the
// norms and every vector are copied unchanged, as are config.json (with an
// "xlstmd_quantization" entry added) and the other files of the directory (tokenizer, chat
// template). xlstm and xlstmd serve the result as stored; quantizing is deterministic, so it
// serves bit-identically to loading the source with the same --weight-dtype.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/file_io.h"
#include "core/base/json_file.h"
#include "core/base/progress_bar.h"
#include "core/base/status_macros.h"
#include "core/model/checkpoint.h"
#include "core/model/config.h"
#include "core/model/weight_format.h"
#include "core/model/weight_upload.h"
#include "kernels/backend.h"
#include "kernels/quant.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "tools/tool_model.h"

namespace xlstmd::tools {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

struct QuantizeArgs {
  std::string in, out;
  std::string weight_dtype = "q4";
  std::string lm_head_dtype = "auto";
  int64_t threads = 0;
};

// One stored tensor to quantize, and where its codes and scales go.
struct Job {
  const core::TensorView* tensor;
  kernels::DType dtype;
  std::vector<uint8_t> codes, scales;
};

absl::Status QuantizeTensor(Job* job) {
  const core::TensorView& t = *job->tensor;
  const int64_t rows = t.shape[0], cols = t.shape[1];
  const size_t cb = kernels::QuantCodeBytesPerRow(job->dtype, cols);
  const size_t sb = kernels::QuantScaleBytesPerRow(job->dtype, cols);
  job->codes.resize(static_cast<size_t>(rows) * cb);
  job->scales.resize(static_cast<size_t>(rows) * sb);
  std::vector<float> row(static_cast<size_t>(cols));
  const size_t src_row = static_cast<size_t>(cols) * core::TensorDTypeSize(t.dtype);
  for (int64_t r = 0; r < rows; ++r) {
    core::ConvertToF32(static_cast<const char*>(t.data) + static_cast<size_t>(r) * src_row,
                       t.dtype, cols, row.data());
    absl::Status s = kernels::QuantizeRow(job->dtype, row.data(), cols,
                                          job->codes.data() + static_cast<size_t>(r) * cb,
                                          job->scales.data() + static_cast<size_t>(r) * sb);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(t.name, " row ", r, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status RunJobs(std::vector<Job>& jobs, int threads) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  absl::Status first;
  uint64_t total = 0, done = 0;
  for (const Job& j : jobs) total += j.tensor->bytes;
  base::ProgressBar bar("quantizing");  // on a terminal only
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < jobs.size();) {
      absl::Status s = QuantizeTensor(&jobs[i]);
      std::lock_guard<std::mutex> lock(mu);
      if (!s.ok() && first.ok()) first = s;
      done += jobs[i].tensor->bytes;
      bar.Update(done, total);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  return first;
}

// NAME: the codes (I8 [rows, cols], or U8 [rows, Q4RowBytes(cols)] for q4); NAME_scale: the
// scales (F32 [rows], or F16 [rows, groups] for q4).
void AppendQuantized(const std::string& name, const Job& j, int64_t rows, int64_t cols,
                     std::vector<core::TensorToWrite>* out) {
  const bool q4 = j.dtype == kernels::DType::kQ4;
  out->push_back({name, q4 ? core::TensorDType::kU8 : core::TensorDType::kI8,
                  {rows, static_cast<int64_t>(kernels::QuantCodeBytesPerRow(j.dtype, cols))},
                  j.codes.data()});
  out->push_back({name + "_scale", q4 ? core::TensorDType::kF16 : core::TensorDType::kF32,
                  q4 ? std::vector<int64_t>{rows, kernels::Q4Groups(cols)}
                     : std::vector<int64_t>{rows},
                  j.scales.data()});
}

absl::Status Quantize(const QuantizeArgs& a) {
  XLSTMD_ASSIGN_OR_RETURN(const kernels::DType dtype, core::ParseWeightDType(a.weight_dtype));
  if (!kernels::IsQuantized(dtype)) {
    return absl::InvalidArgumentError("--weight-dtype must be int8 or q4");
  }
  kernels::DType head = dtype;
  if (a.lm_head_dtype != "auto") {
    XLSTMD_ASSIGN_OR_RETURN(head, core::ParseWeightDType(a.lm_head_dtype));
  }
  XLSTMD_ASSIGN_OR_RETURN(const core::ModelConfig config, core::LoadModelConfig(a.in));
  if (config.family == core::ModelFamily::kPaper) {
    return absl::UnimplementedError(absl::StrCat(
        a.in, " is a family-B (xlstm-paper) model: `xlstm quantize` writes family-A checkpoints "
              "only; serve it with --weight-dtype int8 or q4 to quantize its projections at load"));
  }
  XLSTMD_ASSIGN_OR_RETURN(std::unique_ptr<core::Checkpoint> ckpt, core::Checkpoint::Open(a.in));
  if (const std::optional<kernels::DType> already = core::CheckpointQuantization(*ckpt)) {
    return absl::InvalidArgumentError(absl::StrCat(a.in, " is quantized already (",
                                                   kernels::DTypeName(*already), ")"));
  }
  XLSTMD_ASSIGN_OR_RETURN(const core::XlstmTensors tensors,
                          core::ResolveXlstmTensors(*ckpt, config));
  std::error_code ec;
  if (fs::exists(a.out, ec) && !fs::is_empty(a.out, ec)) {
    return absl::AlreadyExistsError(absl::StrCat("--out ", a.out, " exists and is not empty"));
  }

  // The projection tensors (whole stored tensors: fused ones are quantized row by row, which
  // is the same as quantizing each logical part).
  std::set<const core::TensorView*> projections;
  for (const core::XlstmBlockTensors& b : tensors.blocks) {
    for (const core::TensorSlice* s : {&b.q, &b.k, &b.v, &b.ogate, &b.igate_w, &b.fgate_w,
                                       &b.out_proj, &b.ffn_gate, &b.ffn_up, &b.ffn_down}) {
      projections.insert(s->tensor);
    }
  }
  std::vector<Job> jobs;
  for (const core::TensorView* t : projections) jobs.push_back({t, dtype, {}, {}});
  const bool tied_head = tensors.lm_head.tensor == tensors.embedding.tensor;
  if (kernels::IsQuantized(head)) jobs.push_back({tensors.lm_head.tensor, head, {}, {}});
  const int threads = a.threads > 0 ? static_cast<int>(a.threads)
                                    : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  XLSTMD_RETURN_IF_ERROR(RunJobs(jobs, threads));

  std::map<const core::TensorView*, const Job*> by_tensor;
  for (const Job& j : jobs) by_tensor[j.tensor] = &j;
  std::vector<core::TensorToWrite> out;
  for (const std::string& name : ckpt->Names()) {
    const core::TensorView* t = ckpt->Find(name);
    auto it = by_tensor.find(t);
    // A tied head is quantized into a tensor of its own; the embedding stays float.
    if (it == by_tensor.end() || (tied_head && t == tensors.embedding.tensor)) {
      out.push_back({name, t->dtype, t->shape, t->data});
      continue;
    }
    AppendQuantized(name, *it->second, t->shape[0], t->shape[1], &out);
  }
  if (tied_head && kernels::IsQuantized(head)) {
    AppendQuantized("lm_head.weight", *by_tensor.at(tensors.lm_head.tensor),
                    tensors.lm_head.rows, tensors.lm_head.cols, &out);
  }

  fs::create_directories(a.out, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", a.out, ": ", ec.message()));
  // Everything but the weights and the config is copied as it is.
  for (const fs::directory_entry& e : fs::directory_iterator(a.in)) {
    const std::string n = e.path().filename().string();
    if (!e.is_regular_file() || n == "config.json" || n.rfind("model", 0) == 0) continue;
    fs::copy_file(e.path(), fs::path(a.out) / n, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot copy ", n, ": ", ec.message()));
  }
  XLSTMD_ASSIGN_OR_RETURN(const std::string config_text,
                          core::ReadSmallFile(fs::path(a.in) / "config.json", 16u << 20));
  Json cfg = Json::parse(config_text);
  cfg["xlstmd_quantization"] = {{"weights", kernels::DTypeName(dtype)},
                                {"lm_head", kernels::DTypeName(head)},
                                {"group_size", dtype == kernels::DType::kQ4 ? 32 : 0}};
  XLSTMD_RETURN_IF_ERROR(base::WriteTextFile(fs::path(a.out) / "config.json",
                                                   cfg.dump(2) + "\n"));
  XLSTMD_RETURN_IF_ERROR(core::WriteSafetensors(
      fs::path(a.out) / "model.safetensors", out,
      {{"format", "pt"}, {"xlstmd_quantization", kernels::DTypeName(dtype)}}));
  size_t bytes = 0;
  for (const core::TensorToWrite& t : out) {
    size_t n = core::TensorDTypeSize(t.dtype);
    for (int64_t d : t.shape) n *= static_cast<size_t>(d);
    bytes += n;
  }
  std::printf("wrote %s: %zu tensors, %zu quantized (%s, lm_head %s), %.1f MB\n", a.out.c_str(),
              out.size(), jobs.size(), kernels::DTypeName(dtype), kernels::DTypeName(head),
              static_cast<double>(bytes) / 1e6);
  return absl::OkStatus();
}

}  // namespace

int RunQuantize(int argc, char** argv) {
  QuantizeArgs a;
  FlagSet flags("quantize",
                "Writes a copy of a checkpoint with its projection matrices (and LM head)\n"
                "quantized: int8 with one scale per row, or q4 with one f16 scale per 32\n"
                "weights. The embedding and the norms stay as they are. xlstm and xlstmd serve\n"
                "the copy as stored (--weight-dtype auto).");
  flags.String("in", &a.in, "source model directory (float weights)", true);
  flags.String("out", &a.out, "output directory (must not exist, or be empty)", true);
  flags.Choice("weight-dtype", &a.weight_dtype, {"int8", "q4"}, "format of the projections");
  flags.Choice("lm-head-dtype", &a.lm_head_dtype, core::WeightDTypeChoices(),
               "format of the LM head; auto = as --weight-dtype; f32/bf16 keep it float");
  flags.Int("threads", &a.threads, 0, 1024, "threads (0 = one per core)");
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  absl::Status s = Quantize(a);
  if (!s.ok()) return ReportRuntimeError("quantize", s);
  return kExitOk;
}

}  // namespace xlstmd::tools
