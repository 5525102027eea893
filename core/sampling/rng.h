// SamplingRng: the per-turn random source of the sampler. xoshiro256** (Blackman & Vigna)
// seeded through splitmix64, written out here so that a seed gives the same stream on every
// platform, compiler and standard library (std:: distributions are implementation-defined).
// One instance per turn, owned by its Sampler; no shared or global state. Not thread-safe.
#ifndef XLSTMD_CORE_SAMPLING_RNG_H_
#define XLSTMD_CORE_SAMPLING_RNG_H_

#include <cstdint>

namespace xlstmd::core {

// One step of splitmix64: advances *state and returns the next output.
inline uint64_t SplitMix64Next(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class SamplingRng {
 public:
  // Every seed, 0 included, is valid: splitmix64 never yields the all-zero xoshiro state
  // from four consecutive outputs.
  explicit SamplingRng(uint64_t seed) {
    uint64_t sm = seed;
    for (uint64_t& word : s_) word = SplitMix64Next(&sm);
  }

  uint64_t NextU64() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits: exactly representable, never 1.0.
  double NextDouble() { return static_cast<double>(NextU64() >> 11) * 0x1.0p-53; }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  uint64_t s_[4];
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_SAMPLING_RNG_H_
