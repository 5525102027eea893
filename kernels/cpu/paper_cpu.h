// CPU kernels of the xLSTM paper family (family B, xlstm-spec.md section 4): the headwise
// (block-diagonal) projections, the causal depthwise convolution with its window in the state
// slot, and the sLSTM cell. Parallel over independent pieces (rows, sequences, heads); who
// computes a piece never changes its arithmetic, so a row's result is the same alone or in a
// batch.
#ifndef XLSTMD_KERNELS_CPU_PAPER_CPU_H_
#define XLSTMD_KERNELS_CPU_PAPER_CPU_H_

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {

void Headwise(ThreadPool& pool, const HeadwiseParams& p, Isa isa = SelectIsa());
void CausalConv(ThreadPool& pool, const CausalConvParams& p, Isa isa = SelectIsa());
void SlstmSequence(ThreadPool& pool, const SlstmParams& p, Isa isa = SelectIsa());

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_PAPER_CPU_H_
