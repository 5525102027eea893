// StateLayout: the exact float32 layout of one session's recurrent state for a given model.
//
// Family A (xLSTM-Large): per block, in block order, C [heads, dqk, dv], then n [heads, dqk],
// then m [heads]. Family B (paper): an mLSTM block holds C, n, m likewise (dqk = dv = DH) and
// then its conv window [ks-1, Din]; an sLSTM block holds h, c, n, m ([E] each, head-major) and
// then its conv window [ks-1, E] (no window when ks <= 1). Each section starts on a 16-float
// (64-byte) boundary so SIMD code can load it aligned; the sections tile the slot in order. A
// slot of the state arena is `floats_per_slot` floats. The layout is immutable and cheap to
// copy.
#ifndef XLSTMD_CORE_MODEL_STATE_LAYOUT_H_
#define XLSTMD_CORE_MODEL_STATE_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

namespace xlstmd::core {

struct ModelConfig;

// Section kinds; the numbers are part of the snapshot format (docs/snapshot-format.md).
enum class StateSectionKind : uint32_t {
  kC = 1, kN = 2, kM = 3,            // mLSTM cell
  kConv = 4,                         // causal-conv input window
  kSh = 5, kSc = 6, kSn = 7, kSm = 8  // sLSTM cell
};
const char* StateSectionName(StateSectionKind kind);  // "C", "n", "m", "conv", "h", ...

struct StateSection {
  StateSectionKind kind;
  int64_t block;
  int64_t offset;  // floats from the slot start
  int64_t floats;  // up to the next section (alignment padding included)
};

// Where one block's state lives in a slot. mLSTM blocks: C, n, m at c/n/m_offset. sLSTM blocks
// (slstm): h, c, n, m vectors at h/c/n/m_offset. conv_offset: the conv window, -1 if none.
struct MlstmBlockStateOffsets {
  int64_t c_offset;  // floats from the slot start
  int64_t n_offset;
  int64_t m_offset;
  int64_t conv_offset = -1;
  int64_t h_offset = -1;
  bool slstm = false;
};

class StateLayout {
 public:
  StateLayout() = default;
  static StateLayout ForMlstmStack(int64_t num_blocks, int64_t heads, int64_t dqk, int64_t dv);
  // Family B; the config must be a parsed family-B config.
  static StateLayout ForPaper(const ModelConfig& config);

  int64_t floats_per_slot() const { return floats_per_slot_; }
  int64_t bytes_per_slot() const { return floats_per_slot_ * 4; }
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  const MlstmBlockStateOffsets& block(int64_t b) const { return blocks_[b]; }
  const std::vector<StateSection>& sections() const { return sections_; }
  bool paper() const { return paper_; }
  // The mLSTM cells' dims (0 when a family-B model has no mLSTM block).
  int64_t heads() const { return heads_; }
  int64_t dqk() const { return dqk_; }
  int64_t dv() const { return dv_; }
  // A stable description ("mlstm-v1:L=2,H=4,dqk=16,dv=32,align=16", or "paper-v1:..."), part
  // of the state fingerprint.
  std::string Describe() const;

 private:
  int64_t Add(StateSectionKind kind, int64_t block, int64_t floats);

  std::vector<MlstmBlockStateOffsets> blocks_;
  std::vector<StateSection> sections_;
  int64_t floats_per_slot_ = 0;
  int64_t heads_ = 0, dqk_ = 0, dv_ = 0;
  bool paper_ = false;
  std::string paper_desc_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_STATE_LAYOUT_H_
