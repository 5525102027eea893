#include "tools/roofline.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "tools/roofline_kernels.h"

namespace xlstmd::tools {
namespace {

using Clock = std::chrono::steady_clock;

bool HasAvx512() { return __builtin_cpu_supports("avx512f"); }
bool HasAvx2Fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

// Runs fn(t) on `threads` threads (t = 0 on the caller) and returns the wall seconds.
template <typename Fn>
double TimeParallel(int threads, Fn fn) {
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(fn, t);
  fn(0);
  for (std::thread& th : pool) th.join();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Portable 4-stream read for machines without AVX-512 (64-bit integer adds vectorize).
uint64_t ReadStreamsPortable(const uint64_t* base, size_t words) {
  const size_t part = words / 4;
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i < part; ++i) {
    a += base[i];
    b += base[part + i];
    c += base[2 * part + i];
    d += base[3 * part + i];
  }
  return a ^ b ^ c ^ d;
}

__attribute__((target("avx2,fma"))) float FmaLoopAvx2(int64_t iterations) {
  constexpr int kAcc = 12;
  const __m256 m = _mm256_set1_ps(0.999f);
  const __m256 c = _mm256_set1_ps(0.001f);
  __m256 acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
  }
  float out[8];
  __m256 sum = acc[0];
  for (int i = 1; i < kAcc; ++i) sum = _mm256_add_ps(sum, acc[i]);
  _mm256_storeu_ps(out, sum);
  return out[0] + out[7];
}

float FmaLoopScalar(int64_t iterations) {
  float acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = static_cast<float>(i);
  for (int64_t it = 0; it < iterations; ++it) {
    for (float& a : acc) a = a * 0.999f + 0.001f;
  }
  return acc[0] + acc[11];
}

}  // namespace

double MeasureDramReadGbps(int threads, size_t buffer_bytes, int passes) {
  threads = std::max(1, threads);
  // Every thread's share is a multiple of 4 streams x 2 lines (512 bytes).
  const size_t unit = static_cast<size_t>(threads) * 512;
  buffer_bytes = std::max(unit, buffer_bytes / unit * unit);
  void* raw = std::aligned_alloc(64, buffer_bytes);
  if (raw == nullptr) return 0;
  const size_t share = buffer_bytes / static_cast<size_t>(threads);
  char* buf = static_cast<char*>(raw);
  TimeParallel(threads, [&](int t) { std::memset(buf + share * t, 1, share); });
  const bool avx512 = HasAvx512();
  std::vector<double> sinks(static_cast<size_t>(threads) * 8, 0.0);  // a line apart
  double best = 0;
  for (int p = 0; p < passes; ++p) {
    const double seconds = TimeParallel(threads, [&](int t) {
      const char* mine = buf + share * t;
      double r = avx512 ? ReadStreamsAvx512(reinterpret_cast<const float*>(mine), share / 4)
                        : static_cast<double>(ReadStreamsPortable(
                              reinterpret_cast<const uint64_t*>(mine), share / 8));
      sinks[static_cast<size_t>(t) * 8] += r;
    });
    best = std::max(best, static_cast<double>(buffer_bytes) / seconds / 1e9);
  }
  std::free(raw);
  volatile double keep = sinks[0];
  (void)keep;
  return best;
}

FmaPeak MeasureFmaPeak(int threads, const std::string& kernel_isa) {
  threads = std::max(1, threads);
  FmaPeak out;
  float (*loop)(int64_t) = FmaLoopScalar;
  double flops_per_iteration = 12 * 2;
  out.isa = "scalar";
  const bool wide = kernel_isa == "avx512" || kernel_isa == "avx2";
  if (kernel_isa == "avx512" && HasAvx512()) {
    loop = FmaLoopAvx512;
    flops_per_iteration = 12 * 16 * 2;
    out.isa = "avx512_fma";
  } else if (wide && HasAvx2Fma()) {
    loop = FmaLoopAvx2;
    flops_per_iteration = 12 * 8 * 2;
    out.isa = "avx2_fma";
  }
  // Calibrate on one thread so each timed run lasts ~0.2 s.
  int64_t iterations = 1 << 16;
  volatile float sink = 0;
  for (;;) {
    const Clock::time_point start = Clock::now();
    sink = sink + loop(iterations);
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (s > 0.02) {
      iterations = static_cast<int64_t>(static_cast<double>(iterations) * 0.2 / s) + 1;
      break;
    }
    iterations *= 4;
  }
  std::vector<float> sinks(static_cast<size_t>(threads) * 16, 0.0f);
  for (int run = 0; run < 3; ++run) {
    const double seconds = TimeParallel(
        threads, [&](int t) { sinks[static_cast<size_t>(t) * 16] += loop(iterations); });
    const double flops = flops_per_iteration * static_cast<double>(iterations) * threads;
    out.gflops = std::max(out.gflops, flops / seconds / 1e9);
  }
  sink = sink + sinks[0];
  return out;
}

Roofline Judge(const Work& work, double dram_gbps, double peak_gflops) {
  Roofline r;
  const double memory_s = dram_gbps > 0 ? work.bytes / (dram_gbps * 1e9) : 0;
  const double compute_s = peak_gflops > 0 ? work.flops / (peak_gflops * 1e9) : 0;
  // bytes/flop > gbps/gflops  <=>  memory time > compute time.
  if (memory_s >= compute_s) {
    r.bound = "memory";
    r.limit_seconds = memory_s;
  } else {
    r.bound = "compute";
    r.limit_seconds = compute_s;
  }
  return r;
}

}  // namespace xlstmd::tools
