#include "core/model/state_layout.h"

#include "absl/strings/str_format.h"

namespace xlstmd::core {
namespace {
int64_t AlignUp16(int64_t n) { return (n + 15) / 16 * 16; }
}  // namespace

StateLayout StateLayout::ForMlstmStack(int64_t num_blocks, int64_t heads, int64_t dqk,
                                       int64_t dv) {
  StateLayout l;
  l.heads_ = heads;
  l.dqk_ = dqk;
  l.dv_ = dv;
  int64_t off = 0;
  for (int64_t b = 0; b < num_blocks; ++b) {
    MlstmBlockStateOffsets o;
    o.c_offset = off;
    off = AlignUp16(off + heads * dqk * dv);
    o.n_offset = off;
    off = AlignUp16(off + heads * dqk);
    o.m_offset = off;
    off = AlignUp16(off + heads);
    l.blocks_.push_back(o);
  }
  l.floats_per_slot_ = off;
  return l;
}

std::string StateLayout::Describe() const {
  return absl::StrFormat("mlstm-v1:L=%d,H=%d,dqk=%d,dv=%d,align=16", num_blocks(), heads_, dqk_,
                         dv_);
}

}  // namespace xlstmd::core
