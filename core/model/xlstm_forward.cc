// XlstmModel's forward pass (xlstm-spec.md 3.2): Prefill, Step and the shared block loop.
//
// A forward call runs as one or more windows of at most `capacity` token rows (the workspace
// reserved at start-up is never outgrown while serving). Each window copies its index arrays
// (token ids, slots, row ranges, logit rows) to the backend once, runs every block over its
// rows, and appends the logits of the rows that want them to the logits buffer. Sequences are
// packed into windows in order and a sequence split across windows is split at a multiple of
// the chunk size, so the chunks, and hence the results, are those of one unwindowed call, and
// the rows that get logits come out in call order.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/model/xlstm_model.h"
#include "core/model/xlstm_model_internal.h"

namespace xlstmd::core {

namespace kn = ::xlstmd::kernels;
using kernels::Backend;

// The block loop over the window's rows, whose embeddings are in ws_->x. In step mode row r
// is one session continuing from slot slots[r]; otherwise sequence s owns rows
// [row_begin[s], row_begin[s] + length[s]) and continues from slots[s].
void XlstmModel::RunBlocks(const Window& win, const IndexArrays& dev, const IndexArrays& host,
                           int64_t chunk_size, bool step) {
  if (config_.family == ModelFamily::kPaper) {
    RunPaperBlocks(win, dev, host, chunk_size, step);
    return;
  }
  const ModelConfig& c = config_;
  Workspace& w = *ws_;
  Backend& be = *backend_;
  const int64_t rows = win.rows();
  const int64_t E = c.embedding_dim, NH = c.num_heads, QK = c.qk_dim(), VD = c.v_dim();
  const int64_t F = c.ffn_dim(), P = 2 * QK + 2 * VD + 2 * NH;
  // Column offsets inside the fused projection output.
  const int64_t oq = 0, ok = QK, ov = 2 * QK, oo = 2 * QK + VD, oi = 2 * QK + 2 * VD, of = oi + NH;
  const kn::MlstmDims dims{NH, c.dqk(), c.dv(), c.eps, 1.0f / std::sqrt(static_cast<float>(c.dqk()))};
  float* arena = arena_.as<float>();

  for (size_t b = 0; b < blocks_.size(); ++b) {
    const BlockWeights& bw = *blocks_[b];
    const MlstmBlockStateOffsets& so = layout_.block(static_cast<int64_t>(b));
    const kn::MlstmStateRef state{arena, layout_.floats_per_slot(), so.c_offset, so.n_offset,
                                  so.m_offset};
    be.RmsNorm({w.x, bw.norm_mlstm_w, bw.norm_mlstm_b, w.hn, rows, E, E, E, c.norm_eps});
    be.MatMul({w.hn, bw.w_in.get(), w.proj, rows, E, P, false, !step});
    if (bw.in_bias != nullptr) be.BiasSoftCap({w.proj, bw.in_bias, rows, P, P, 0.0f});
    // Input and forget gates are adjacent: one bias + soft-cap pass for both.
    be.BiasSoftCap({w.proj + oi, bw.gate_bias, rows, 2 * NH, P, c.gate_soft_cap});
    if (step) {
      be.MlstmStep({w.proj + oq, w.proj + ok, w.proj + ov, w.proj + oi, w.proj + of, w.hcell,
                    dev.slots, rows, P, P, P, P, P, VD, dims, state});
    } else {
      be.MlstmChunkwise({w.proj + oq, w.proj + ok, w.proj + ov, w.proj + oi, w.proj + of,
                         w.hcell, dev.slots, dev.row_begin, dev.length, host.row_begin,
                         host.length, static_cast<int64_t>(win.slots.size()), chunk_size, P, P,
                         P, P, P, VD, dims, state});
    }
    be.HeadNormGate({w.hcell, w.proj + oo, bw.mh_norm_w, bw.mh_norm_b, w.hgate, rows, NH,
                     c.dv(), VD, P, VD, c.norm_eps});
    be.MatMul({w.hgate, bw.w_out.get(), w.x, rows, VD, E, true, !step});
    if (bw.out_b != nullptr) be.BiasSoftCap({w.x, bw.out_b, rows, E, E, 0.0f});

    be.RmsNorm({w.x, bw.norm_ffn_w, bw.norm_ffn_b, w.hn, rows, E, E, E, c.norm_eps});
    be.MatMul({w.hn, bw.w_ffn_up.get(), w.ffn, rows, E, 2 * F, false, !step});
    if (bw.ffn_up_b != nullptr) be.BiasSoftCap({w.ffn, bw.ffn_up_b, rows, 2 * F, 2 * F, 0.0f});
    be.SwiGlu({w.ffn, w.ffn + F, w.act, rows, F, 2 * F, F});
    be.MatMul({w.act, bw.w_ffn_down.get(), w.x, rows, F, E, true, !step});
    if (bw.ffn_down_b != nullptr) be.BiasSoftCap({w.x, bw.ffn_down_b, rows, E, E, 0.0f});
  }
}

// Final norm + lm_head + soft cap for the window's logit rows (all rows when `all_rows`,
// else the residual rows listed in dev.gather), appended to the logits buffer. When the
// buffer is full, its rows go to `spill` (the vector API) or the call fails. `prefill`: the
// window holds prompt pieces (MatMulParams::prefill).
absl::Status XlstmModel::AppendLogits(const Window& win, const IndexArrays& dev, bool all_rows,
                                      bool prefill, std::vector<float>* spill) {
  const ModelConfig& c = config_;
  Workspace& w = *ws_;
  Backend& be = *backend_;
  const int64_t E = c.embedding_dim, V = c.vocab_size;
  const int64_t k = all_rows ? win.rows() : static_cast<int64_t>(win.gather.size());
  for (int64_t r0 = 0; r0 < k;) {
    if (w.logits_done == w.logits_capacity) XLSTMD_RETURN_IF_ERROR(FlushLogits(spill));
    const int64_t n = std::min(k - r0, w.logits_capacity - w.logits_done);
    const float* src = w.x + r0 * E;
    if (!all_rows) {
      be.GatherRows({w.x, dev.gather + r0, w.hn, n, E, E, E});
      src = w.hn;
    }
    if (c.add_out_norm) {
      // Family B's post-blocks norm is a LayerNorm (spec 4.5), family A's an RMSNorm.
      be.RmsNorm({src, out_norm_w_, out_norm_b_, w.hn, n, E, E, E, c.norm_eps,
                  c.family == ModelFamily::kPaper});
      src = w.hn;
    }
    float* out = w.logits.as<float>() + w.logits_done * V;
    be.MatMul({src, lm_head_.get(), out, n, E, V, false, prefill});
    if (c.output_logit_soft_cap > 0.0f) {
      be.BiasSoftCap({out, nullptr, n, V, V, c.output_logit_soft_cap});
    }
    w.logits_done += n;
    r0 += n;
  }
  return absl::OkStatus();
}

absl::Status XlstmModel::FlushLogits(std::vector<float>* spill) {
  Workspace& w = *ws_;
  if (spill == nullptr) {
    return absl::InternalError("logits buffer overflow (more logit rows than reserved)");
  }
  XLSTMD_ASSIGN_OR_RETURN(LogitsView view, FinishLogits());
  spill->insert(spill->end(), view.data, view.data + view.rows * view.vocab);
  w.logits_done = 0;
  return absl::OkStatus();
}

// Waits for the forward pass and returns the logits rows made so far in host memory.
absl::StatusOr<LogitsView> XlstmModel::FinishLogits() {
  Workspace& w = *ws_;
  const int64_t V = config_.vocab_size;
  const float* data = w.logits.as<float>();
  if (!backend_->HostVisible() && w.logits_done > 0) {
    backend_->CopyToHost(w.host_logits.get(), w.logits.get(),
                         static_cast<size_t>(w.logits_done * V) * sizeof(float));
    data = w.host_logits.as<float>();
  }
  XLSTMD_RETURN_IF_ERROR(SyncStream());
  return LogitsView{data, w.logits_done, V};
}

// Copies a window's index arrays to the backend in one piece and returns where they are on
// the host and on the backend.
void XlstmModel::UploadIndex(const Window& win, IndexArrays* host, IndexArrays* dev) {
  Workspace& w = *ws_;
  const int64_t C = w.capacity;
  // The host mirror is reused by the next window: it must not change while this window's
  // copy may still be reading it, hence the wait before every window but the first.
  *host = IndexAt(w.host_index.as<char>(), C);
  // An empty array (no gather rows in a decode step) may have a null data(): memcpy must not
  // see it even with size 0.
  auto copy = [](auto* dst, const auto& src) {
    if (!src.empty()) std::memcpy(dst, src.data(), src.size() * sizeof(src[0]));
  };
  copy(host->ids, win.ids);
  copy(host->slots, win.slots);
  copy(host->gather, win.gather);
  copy(host->row_begin, win.row_begin);
  copy(host->length, win.length);
  if (w.dev_index) {
    backend_->CopyToDevice(w.dev_index.get(), w.host_index.get(), w.host_index.bytes());
    *dev = IndexAt(w.dev_index.as<char>(), C);
  } else {
    *dev = *host;  // host-visible backend memory (the CPU): no copy
  }
}

// Embeds and runs one window (index arrays already uploaded), then appends its logits.
absl::Status XlstmModel::ComputeWindow(const Window& win, const IndexArrays& host,
                                       const IndexArrays& dev, int64_t chunk_size, bool step,
                                       LogitsMode mode, std::vector<float>* spill) {
  backend_->Embed({embedding_.get(), dev.ids, ws_->x, win.rows(), config_.embedding_dim});
  RunBlocks(win, dev, host, chunk_size, step);
  if (mode != LogitsMode::kNone) {
    XLSTMD_RETURN_IF_ERROR(AppendLogits(win, dev, mode == LogitsMode::kAll, !step, spill));
  }
  return absl::OkStatus();
}

absl::Status XlstmModel::RunWindow(const Window& win, int64_t chunk_size, bool step,
                                   LogitsMode mode, std::vector<float>* spill) {
  IndexArrays host, dev;
  UploadIndex(win, &host, &dev);
  return ComputeWindow(win, host, dev, chunk_size, step, mode, spill);
}

int64_t XlstmModel::StepBucket(int64_t rows) const {
  if (step_buckets_.empty()) return backend_->StepBucket(rows);
  for (int64_t b : step_buckets_) {
    if (rows <= b) return b;
  }
  return 0;
}

// A decode step padded to `bucket` rows (token -1, slot -1: no state touched, zero rows), so
// that every step of that size is the same op sequence: recorded once per bucket on a backend
// that records (CUDA graphs), replayed after. The index arrays are copied before, outside
// the recording, to the same reserved buffer every time.
absl::StatusOr<LogitsView> XlstmModel::PaddedStep(absl::Span<const int32_t> tokens,
                                                  absl::Span<const int32_t> slots,
                                                  int64_t bucket) {
  Window win;
  win.ids.assign(tokens.begin(), tokens.end());
  win.ids.resize(static_cast<size_t>(bucket), -1);
  win.slots.assign(slots.begin(), slots.end());
  win.slots.resize(static_cast<size_t>(bucket), -1);
  IndexArrays host, dev;
  UploadIndex(win, &host, &dev);
  const bool record = backend_->SupportsCapture() && !recording_failed_;
  // Recordings live in the backend, which several models may share: the key says whose.
  const int64_t key = (static_cast<int64_t>(serial_) << 20) | bucket;
  if (!record || !backend_->Replay(key)) {
    bool ran = false;
    if (record) {
      backend_->BeginCapture();
      absl::Status s = ComputeWindow(win, host, dev, 1, /*step=*/true, LogitsMode::kAll, nullptr);
      if (!s.ok()) {
        backend_->AbortCapture();
        return s;
      }
      // A recording the backend cannot make is not fatal: from now on steps run eagerly.
      ran = backend_->EndCapture(key).ok();
      recording_failed_ = !ran;
    }
    if (!ran) {
      ws_->logits_done = 0;
      XLSTMD_RETURN_IF_ERROR(
          ComputeWindow(win, host, dev, 1, /*step=*/true, LogitsMode::kAll, nullptr));
    }
  }
  ws_->logits_done = static_cast<int64_t>(tokens.size());  // the padding rows stay behind
  return FinishLogits();
}

absl::StatusOr<LogitsView> XlstmModel::Prefill(absl::Span<const PrefillSequence> seqs,
                                               const PrefillOptions& options) {
  return PrefillImpl(seqs, options, nullptr);
}

absl::StatusOr<LogitsView> XlstmModel::PrefillImpl(absl::Span<const PrefillSequence> seqs,
                                                   const PrefillOptions& options,
                                                   std::vector<float>* spill) {
  if (options.chunk_size < 1) return absl::InvalidArgumentError("chunk_size must be >= 1");
  std::vector<int32_t> slots;
  int64_t total = 0, logit_rows = 0;
  for (const PrefillSequence& s : seqs) {
    if (s.tokens.empty()) continue;
    XLSTMD_RETURN_IF_ERROR(ValidateTokens(s.tokens));
    slots.push_back(s.slot);
    total += static_cast<int64_t>(s.tokens.size());
    ++logit_rows;
  }
  XLSTMD_RETURN_IF_ERROR(ValidateSlots(slots));
  if (options.logits == LogitsMode::kAll) logit_rows = total;
  if (options.logits == LogitsMode::kNone) logit_rows = 0;
  XLSTMD_RETURN_IF_ERROR(PrepareForward(total, logit_rows, spill != nullptr));
  const int64_t C = ws_->capacity, L = options.chunk_size;
  Window win;
  auto flush = [&]() -> absl::Status {
    if (win.rows() == 0) return absl::OkStatus();
    XLSTMD_RETURN_IF_ERROR(RunWindow(win, L, /*step=*/false, options.logits, spill));
    win.Clear();
    // Wait before the host mirror is rewritten (see RunWindow).
    return SyncStream();
  };
  for (const PrefillSequence& s : seqs) {
    const int64_t len = static_cast<int64_t>(s.tokens.size());
    for (int64_t done = 0; done < len;) {
      int64_t room = C - win.rows();
      int64_t n = std::min(len - done, room);
      // A piece that leaves tokens behind ends on a chunk boundary (same chunks as unsplit).
      if (n < len - done && n >= L) n -= n % L;
      if (n < len - done && n < L && win.rows() > 0) {
        XLSTMD_RETURN_IF_ERROR(flush());
        continue;
      }
      win.slots.push_back(s.slot);
      win.row_begin.push_back(win.rows());
      win.length.push_back(n);
      win.ids.insert(win.ids.end(), s.tokens.begin() + done, s.tokens.begin() + done + n);
      done += n;
      if (done == len && options.logits == LogitsMode::kLast) {
        win.gather.push_back(static_cast<int32_t>(win.rows() - 1));
      }
      if (win.rows() == C && done < len) XLSTMD_RETURN_IF_ERROR(flush());
    }
  }
  if (win.rows() > 0) {
    XLSTMD_RETURN_IF_ERROR(RunWindow(win, L, /*step=*/false, options.logits, spill));
  }
  return FinishLogits();
}

absl::StatusOr<LogitsView> XlstmModel::Step(absl::Span<const int32_t> tokens,
                                            absl::Span<const int32_t> slots) {
  return StepImpl(tokens, slots, nullptr);
}

absl::StatusOr<LogitsView> XlstmModel::StepImpl(absl::Span<const int32_t> tokens,
                                                absl::Span<const int32_t> slots,
                                                std::vector<float>* spill) {
  if (tokens.size() != slots.size()) {
    return absl::InvalidArgumentError(absl::StrCat("Step got ", tokens.size(), " tokens but ",
                                                   slots.size(), " slots"));
  }
  XLSTMD_RETURN_IF_ERROR(ValidateTokens(tokens));
  XLSTMD_RETURN_IF_ERROR(ValidateSlots(slots));
  const int64_t rows = static_cast<int64_t>(tokens.size());
  const int64_t bucket = rows > 0 ? StepBucket(rows) : 0;
  XLSTMD_RETURN_IF_ERROR(PrepareForward(rows, rows, spill != nullptr));
  if (bucket > rows && !ws_->reserved) XLSTMD_RETURN_IF_ERROR(PrepareForward(bucket, bucket, true));
  if (bucket > 0 && bucket <= ws_->capacity && bucket <= ws_->logits_capacity) {
    return PaddedStep(tokens, slots, bucket);
  }
  const int64_t C = ws_->capacity;
  Window win;
  for (int64_t r0 = 0; r0 < rows; r0 += C) {
    if (r0 > 0) XLSTMD_RETURN_IF_ERROR(SyncStream());  // see RunWindow
    const int64_t n = std::min(C, rows - r0);
    win.Clear();
    win.ids.assign(tokens.begin() + r0, tokens.begin() + r0 + n);
    win.slots.assign(slots.begin() + r0, slots.begin() + r0 + n);
    XLSTMD_RETURN_IF_ERROR(RunWindow(win, 1, /*step=*/true, LogitsMode::kAll, spill));
  }
  return FinishLogits();
}

absl::Status XlstmModel::Prefill(absl::Span<const PrefillSequence> seqs,
                                 const PrefillOptions& options, std::vector<float>* logits) {
  std::vector<float> sink;
  std::vector<float>* out = logits != nullptr ? logits : &sink;
  out->clear();
  PrefillOptions o = options;
  if (logits == nullptr) o.logits = LogitsMode::kNone;
  XLSTMD_ASSIGN_OR_RETURN(LogitsView view, PrefillImpl(seqs, o, out));
  out->insert(out->end(), view.data, view.data + view.rows * view.vocab);
  return absl::OkStatus();
}

absl::Status XlstmModel::Step(absl::Span<const int32_t> tokens, absl::Span<const int32_t> slots,
                              std::vector<float>* logits) {
  std::vector<float> sink;
  std::vector<float>* out = logits != nullptr ? logits : &sink;
  out->clear();
  XLSTMD_ASSIGN_OR_RETURN(LogitsView view, StepImpl(tokens, slots, out));
  out->insert(out->end(), view.data, view.data + view.rows * view.vocab);
  return absl::OkStatus();
}

}  // namespace xlstmd::core
