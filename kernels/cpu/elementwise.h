// CPU implementations of the row-wise ops (norms, gates, embedding and row gathers). Parallel over rows.
// `isa` picks the AVX-512 loops for the transcendental-heavy ops (soft cap, SwiGLU, output
// gate) or the portable scalar ones; the default is the process-wide choice.
#ifndef XLSTMD_KERNELS_CPU_ELEMENTWISE_H_
#define XLSTMD_KERNELS_CPU_ELEMENTWISE_H_

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {

void RmsNorm(ThreadPool& pool, const RmsNormParams& p);
void Embed(ThreadPool& pool, const EmbedParams& p);
void BiasSoftCap(ThreadPool& pool, const BiasSoftCapParams& p, Isa isa = SelectIsa());
void SwiGlu(ThreadPool& pool, const SwiGluParams& p, Isa isa = SelectIsa());
void HeadNormGate(ThreadPool& pool, const HeadNormGateParams& p, Isa isa = SelectIsa());
void GatherRows(ThreadPool& pool, const GatherRowsParams& p);

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_ELEMENTWISE_H_
