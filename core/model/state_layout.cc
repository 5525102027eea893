#include "core/model/state_layout.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/model/config.h"

namespace xlstmd::core {
namespace {
int64_t AlignUp16(int64_t n) { return (n + 15) / 16 * 16; }
}  // namespace

const char* StateSectionName(StateSectionKind kind) {
  switch (kind) {
    case StateSectionKind::kC: return "C";
    case StateSectionKind::kN: return "n";
    case StateSectionKind::kM: return "m";
    case StateSectionKind::kConv: return "conv";
    case StateSectionKind::kSh: return "sLSTM h";
    case StateSectionKind::kSc: return "sLSTM c";
    case StateSectionKind::kSn: return "sLSTM n";
    case StateSectionKind::kSm: return "sLSTM m";
  }
  return "?";
}

// Appends a section at the end of the slot and returns its offset.
int64_t StateLayout::Add(StateSectionKind kind, int64_t block, int64_t floats) {
  const int64_t at = floats_per_slot_;
  floats_per_slot_ = AlignUp16(at + floats);
  sections_.push_back(StateSection{kind, block, at, floats_per_slot_ - at});
  return at;
}

StateLayout StateLayout::ForMlstmStack(int64_t num_blocks, int64_t heads, int64_t dqk,
                                       int64_t dv) {
  StateLayout l;
  l.heads_ = heads;
  l.dqk_ = dqk;
  l.dv_ = dv;
  for (int64_t b = 0; b < num_blocks; ++b) {
    MlstmBlockStateOffsets o;
    o.c_offset = l.Add(StateSectionKind::kC, b, heads * dqk * dv);
    o.n_offset = l.Add(StateSectionKind::kN, b, heads * dqk);
    o.m_offset = l.Add(StateSectionKind::kM, b, heads);
    l.blocks_.push_back(o);
  }
  return l;
}

StateLayout StateLayout::ForPaper(const ModelConfig& c) {
  const PaperConfig& p = c.paper;
  const int64_t e = c.embedding_dim;
  StateLayout l;
  l.paper_ = true;
  if (p.has_mlstm()) {
    l.heads_ = p.m_heads;
    l.dqk_ = l.dv_ = p.m_dh(e);
  }
  std::string map;
  for (int64_t b = 0; b < c.num_blocks; ++b) {
    MlstmBlockStateOffsets o;
    o.slstm = p.slstm[static_cast<size_t>(b)];
    if (o.slstm) {
      map += 's';
      o.h_offset = l.Add(StateSectionKind::kSh, b, e);
      o.c_offset = l.Add(StateSectionKind::kSc, b, e);
      o.n_offset = l.Add(StateSectionKind::kSn, b, e);
      o.m_offset = l.Add(StateSectionKind::kSm, b, e);
      if (p.s_conv > 1) o.conv_offset = l.Add(StateSectionKind::kConv, b, (p.s_conv - 1) * e);
    } else {
      map += 'm';
      const int64_t dh = p.m_dh(e);
      o.c_offset = l.Add(StateSectionKind::kC, b, p.m_heads * dh * dh);
      o.n_offset = l.Add(StateSectionKind::kN, b, p.m_heads * dh);
      o.m_offset = l.Add(StateSectionKind::kM, b, p.m_heads);
      if (p.m_conv > 1) {
        o.conv_offset = l.Add(StateSectionKind::kConv, b, (p.m_conv - 1) * p.m_inner(e));
      }
    }
    l.blocks_.push_back(o);
  }
  l.paper_desc_ = absl::StrCat("paper-v1:L=", c.num_blocks, ",map=", map, ",E=", e);
  if (p.has_mlstm()) {
    absl::StrAppend(&l.paper_desc_, ",mH=", p.m_heads, ",Din=", p.m_inner(e), ",mks=", p.m_conv);
  }
  if (p.has_slstm()) absl::StrAppend(&l.paper_desc_, ",sH=", p.s_heads, ",sks=", p.s_conv);
  absl::StrAppend(&l.paper_desc_, ",align=16");
  return l;
}

std::string StateLayout::Describe() const {
  if (paper_) return paper_desc_;
  return absl::StrFormat("mlstm-v1:L=%d,H=%d,dqk=%d,dv=%d,align=16", num_blocks(), heads_, dqk_,
                         dv_);
}

}  // namespace xlstmd::core
