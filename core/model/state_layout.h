// StateLayout: the exact float32 layout of one session's recurrent state for a given model.
//
// Family A (xLSTM-Large): per block, in block order, C [heads, dqk, dv], then n [heads, dqk],
// then m [heads]; each section starts on a 16-float (64-byte) boundary so SIMD code can load
// it aligned. A slot of the state arena is `floats_per_slot` floats. The layout is immutable
// and cheap to copy.
#ifndef XLSTMD_CORE_MODEL_STATE_LAYOUT_H_
#define XLSTMD_CORE_MODEL_STATE_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

namespace xlstmd::core {

struct MlstmBlockStateOffsets {
  int64_t c_offset;  // floats from the slot start
  int64_t n_offset;
  int64_t m_offset;
};

class StateLayout {
 public:
  StateLayout() = default;
  static StateLayout ForMlstmStack(int64_t num_blocks, int64_t heads, int64_t dqk, int64_t dv);

  int64_t floats_per_slot() const { return floats_per_slot_; }
  int64_t bytes_per_slot() const { return floats_per_slot_ * 4; }
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  const MlstmBlockStateOffsets& block(int64_t b) const { return blocks_[b]; }
  int64_t heads() const { return heads_; }
  int64_t dqk() const { return dqk_; }
  int64_t dv() const { return dv_; }
  // A stable description ("mlstm-v1:L=2,H=4,dqk=16,dv=32"), part of the state fingerprint.
  std::string Describe() const;

 private:
  std::vector<MlstmBlockStateOffsets> blocks_;
  int64_t floats_per_slot_ = 0;
  int64_t heads_ = 0, dqk_ = 0, dv_ = 0;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_STATE_LAYOUT_H_
