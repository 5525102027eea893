// CPU implementations of the row-wise ops (norms, gates, embedding gather). Parallel over rows.
#ifndef XLSTMD_KERNELS_CPU_ELEMENTWISE_H_
#define XLSTMD_KERNELS_CPU_ELEMENTWISE_H_

#include "kernels/cpu/thread_pool.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {

void RmsNorm(ThreadPool& pool, const RmsNormParams& p);
void Embed(ThreadPool& pool, const EmbedParams& p);
void BiasSoftCap(ThreadPool& pool, const BiasSoftCapParams& p);
void SwiGlu(ThreadPool& pool, const SwiGluParams& p);
void HeadNormGate(ThreadPool& pool, const HeadNormGateParams& p);

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_ELEMENTWISE_H_
