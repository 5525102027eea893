#include "core/model/weight_upload.h"

#include "core/model/state_layout.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/status_macros.h"
#include "kernels/quant.h"

namespace xlstmd::core {
namespace {

kernels::DType ToKernelDType(TensorDType t) {
  switch (t) {
    case TensorDType::kBF16:
      return kernels::DType::kBF16;
    case TensorDType::kF16:
      return kernels::DType::kF16;
    default:
      return kernels::DType::kF32;
  }
}

uint64_t HashSlice(const TensorSlice& s) {
  const uint64_t h = XXH3_64bits(s.data(), s.bytes());
  if (s.quant == kernels::DType::kF32) return h;
  const size_t scale_bytes =
      static_cast<size_t>(s.rows) * kernels::QuantScaleBytesPerRow(s.quant, s.cols);
  return XXH3_64bits_withSeed(s.scale_data(), scale_bytes, h);
}

std::string SliceKey(const TensorSlice& s) {
  return absl::StrCat(s.tensor->name, "[", s.row_begin, "+", s.rows, "x", s.cols, "]:",
                      s.quant == kernels::DType::kF32 ? TensorDTypeName(s.tensor->dtype)
                                                      : kernels::DTypeName(s.quant));
}

}  // namespace

void ConvertToF32(const void* src, TensorDType dtype, int64_t n, float* dst) {
  switch (dtype) {
    case TensorDType::kBF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = kernels::Bf16ToFloat(s[i]);
      break;
    }
    case TensorDType::kF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = kernels::HalfToFloat(s[i]);
      break;
    }
    default:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  }
}

WeightUploader::WeightUploader(kernels::Backend* backend, int threads)
    : backend_(backend),
      threads_(threads > 0 ? threads
                           : std::max(1, static_cast<int>(std::thread::hardware_concurrency()))) {}

void WeightUploader::AddMatrix(std::vector<TensorSlice> parts, kernels::WeightMatrixPtr* out,
                               kernels::DType storage) {
  matrices_.push_back({std::move(parts), out, storage});
}

absl::StatusOr<kernels::WeightMatrix*> WeightUploader::UploadQuantizedParts(const MatrixJob& job) {
  const TensorSlice& first = job.parts.front();
  int64_t rows = 0;
  for (const TensorSlice& p : job.parts) {
    if (p.quant != first.quant) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the parts of one matrix are stored in different formats (", p.tensor->name, " is ",
          p.quant == kernels::DType::kF32 ? TensorDTypeName(p.tensor->dtype)
                                          : kernels::DTypeName(p.quant),
          ", ", first.tensor->name, " is ", kernels::DTypeName(first.quant), ")"));
    }
    rows += p.rows;
  }
  const kernels::QuantizedMatrixView single{first.quant, first.rows, first.cols, first.data(),
                                            first.scale_data()};
  if (job.parts.size() == 1) return backend_->UploadQuantized(single);
  const size_t code_row = kernels::QuantCodeBytesPerRow(first.quant, first.cols);
  const size_t scale_row = kernels::QuantScaleBytesPerRow(first.quant, first.cols);
  std::vector<uint8_t> codes(static_cast<size_t>(rows) * code_row);
  std::vector<uint8_t> scales(static_cast<size_t>(rows) * scale_row);
  size_t at = 0;
  for (const TensorSlice& p : job.parts) {
    std::memcpy(codes.data() + at * code_row, p.data(), static_cast<size_t>(p.rows) * code_row);
    std::memcpy(scales.data() + at * scale_row, p.scale_data(),
                static_cast<size_t>(p.rows) * scale_row);
    at += static_cast<size_t>(p.rows);
  }
  return backend_->UploadQuantized(
      kernels::QuantizedMatrixView{first.quant, rows, first.cols, codes.data(), scales.data()});
}

void WeightUploader::AddVector(std::vector<TensorSlice> parts, int64_t total, float** out,
                               std::function<void(std::vector<float>&)> transform) {
  vector_jobs_.push_back({std::move(parts), total, out, std::move(transform)});
}

absl::Status WeightUploader::RunMatrix(const MatrixJob& job) {
  const TensorSlice& first = job.parts.front();
  int64_t rows = 0;
  bool same_dtype = true;
  for (const TensorSlice& p : job.parts) {
    rows += p.rows;
    same_dtype = same_dtype && p.tensor->dtype == first.tensor->dtype;
  }
  const int64_t cols = first.cols;
  bool any_quantized = false;
  for (const TensorSlice& p : job.parts) any_quantized |= p.quant != kernels::DType::kF32;
  absl::StatusOr<kernels::WeightMatrix*> m;
  if (any_quantized) {
    m = UploadQuantizedParts(job);
  } else if (job.parts.size() == 1) {
    m = backend_->UploadMatrixAs(first.data(), ToKernelDType(first.tensor->dtype), rows, cols,
                                 job.storage);
  } else if (same_dtype) {
    const size_t esz = TensorDTypeSize(first.tensor->dtype);
    std::vector<uint8_t> host(static_cast<size_t>(rows * cols) * esz);
    size_t off = 0;
    for (const TensorSlice& p : job.parts) {
      std::memcpy(host.data() + off, p.data(), p.bytes());
      off += p.bytes();
    }
    m = backend_->UploadMatrixAs(host.data(), ToKernelDType(first.tensor->dtype), rows, cols,
                                 job.storage);
  } else {
    std::vector<float> host(static_cast<size_t>(rows * cols));
    int64_t off = 0;
    for (const TensorSlice& p : job.parts) {
      ConvertToF32(p.data(), p.tensor->dtype, p.rows * p.cols, host.data() + off);
      off += p.rows * p.cols;
    }
    m = backend_->UploadMatrixAs(host.data(), kernels::DType::kF32, rows, cols, job.storage);
  }
  if (!m.ok()) {
    return absl::Status(m.status().code(), absl::StrCat("uploading ", first.tensor->name,
                                                        " from ", first.tensor->file, ": ",
                                                        m.status().message()));
  }
  *job.out = kernels::WeightMatrixPtr(*m, kernels::WeightMatrixDeleter{backend_});
  return absl::OkStatus();
}

void WeightUploader::Progress(const std::vector<TensorSlice>& parts) {
  if (!progress_) return;
  std::lock_guard<std::mutex> lock(progress_mu_);
  for (const TensorSlice& p : parts) {
    if (p.tensor == nullptr) continue;
    report_.bytes_done += p.bytes();
    auto& [left, total] = file_bytes_[p.tensor->file];
    left -= std::min<uint64_t>(left, p.bytes());
    if (left == 0 && total != 0) {
      ++report_.files_done;
      report_.file = p.tensor->file;
      report_.file_done = true;
      report_.file_bytes = total;
      progress_(report_);
      total = 0;  // reported
    }
  }
  report_.file_done = false;
  progress_(report_);
}

absl::Status WeightUploader::Run() {
  if (progress_) {
    auto add = [this](const std::vector<TensorSlice>& parts) {
      for (const TensorSlice& p : parts) {
        if (p.tensor == nullptr) continue;
        auto& [left, total] = file_bytes_[p.tensor->file];
        left += p.bytes();
        total += p.bytes();
        report_.bytes_total += p.bytes();
      }
    };
    for (const MatrixJob& job : matrices_) add(job.parts);
    for (const VectorJob& job : vector_jobs_) add(job.parts);
    report_.files_total = static_cast<int>(file_bytes_.size());
  }
  // Vectors first (small, one thread), so that a shard counts as loaded as soon as its
  // matrices are: progress reports then finish the shards in order instead of all at the end.
  for (const VectorJob& job : vector_jobs_) {
    std::vector<float> host(static_cast<size_t>(job.total), 0.0f);
    int64_t off = 0;
    for (const TensorSlice& p : job.parts) {
      if (p.tensor != nullptr) {
        ConvertToF32(p.data(), p.tensor->dtype, p.rows * p.cols, host.data() + off);
        part_hashes_.emplace_back(SliceKey(p), HashSlice(p));
      }
      off += p.rows * p.cols;
    }
    // A model stored as bf16 is the bf16 model: its vectors (norm weights, biases) are
    // rounded as its matrices are, so an f32 checkpoint served as bf16 computes exactly what
    // the checkpoint converted to bf16 does (as torch's .to(bfloat16)); the values stay f32.
    if (backend_->WeightDType() == kernels::DType::kBF16) {
      for (float& v : host) v = kernels::Bf16ToFloat(kernels::FloatToBf16(v));
    }
    // Layout changes and the family-B norms' 1 + w act on the (rounded) stored values.
    if (job.transform) job.transform(host);
    XLSTMD_ASSIGN_OR_RETURN(kernels::DeviceBuffer dev,
                            kernels::Allocate(*backend_, host.size() * sizeof(float)));
    backend_->CopyToDevice(dev.get(), host.data(), host.size() * sizeof(float));
    *job.out = dev.as<float>();
    vector_bytes_ += dev.bytes();
    vectors_.push_back(std::move(dev));
    Progress(job.parts);
  }
  // Matrices in parallel (the backend allows concurrent UploadMatrix); the first error wins.
  std::atomic<size_t> next{0};
  std::mutex mu;
  absl::Status first_error;
  std::vector<std::vector<std::pair<std::string, uint64_t>>> hashes(matrices_.size());
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < matrices_.size();) {
      for (const TensorSlice& p : matrices_[i].parts) hashes[i].emplace_back(SliceKey(p), HashSlice(p));
      absl::Status s = RunMatrix(matrices_[i]);
      Progress(matrices_[i].parts);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.ok()) first_error = s;
      }
    }
  };
  std::vector<std::thread> pool;
  const int n = std::min<int>(threads_, static_cast<int>(matrices_.size()));
  for (int t = 1; t < n; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  XLSTMD_RETURN_IF_ERROR(first_error);
  for (size_t i = 0; i < matrices_.size(); ++i) {
    matrix_bytes_ += backend_->MatrixBytes(matrices_[i].out->get());
    for (auto& h : hashes[i]) part_hashes_.push_back(std::move(h));
  }
  return absl::OkStatus();
}

std::string WeightUploader::Digest(const ModelConfig& c) const {
  std::string canon = absl::StrFormat(
      "xlstm;E=%d;L=%d;H=%d;V=%d;qk=%d;v=%d;F=%d;cap=%g,%g;eps=%g,%g;bias=%d;outnorm=%d",
      c.embedding_dim, c.num_blocks, c.num_heads, c.vocab_size, c.qk_dim(), c.v_dim(),
      c.ffn_dim(), c.gate_soft_cap, c.output_logit_soft_cap, c.norm_eps, c.eps, c.use_bias,
      c.add_out_norm);
  if (c.family == ModelFamily::kPaper) {
    const PaperConfig& p = c.paper;
    absl::StrAppend(&canon, ";paper;", StateLayout::ForPaper(c).Describe(), ";bs=",
                    p.m_qkv_blocksize, ";F=", p.ff_dim(c.embedding_dim), ";act=", p.ff_act,
                    ";gn=", p.s_group_norm_weight, ";tie=", p.tie_weights, ";ffn=", p.s_ffn,
                    ";bias=", p.bias, p.m_bias, p.ff_bias,
                    ";vanilla=", p.s_vanilla_layout);
  }
  std::vector<std::pair<std::string, uint64_t>> sorted = part_hashes_;
  std::sort(sorted.begin(), sorted.end());
  for (const auto& [key, h] : sorted) absl::StrAppend(&canon, ";", key, "=", h);
  const XXH128_hash_t h = XXH3_128bits(canon.data(), canon.size());
  return absl::StrFormat("%016x%016x", h.high64, h.low64);
}

}  // namespace xlstmd::core
