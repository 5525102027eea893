// Sampler: picks one turn's tokens from the model's logits, one call per decode step.
//
// Each Sample() applies, in this order: the repetition penalty (CTRL / Hugging Face: for
// every token id already observed in the turn's context, a positive logit is divided by the
// penalty and a negative one multiplied); then either greedy (temperature == 0: argmax, ties
// to the lowest id, no randomness used) or temperature scaling, top-k, top-p (the smallest
// set of most likely tokens whose mass is >= top_p, computed over the top-k survivors; never
// empty), min-p (drop p < min_p * p_max), renormalisation and one draw from the turn's own
// SamplingRng. Candidates are ranked by (logit desc, id asc), a strict total order, so every
// cut is unique; the draw walks the survivors in id order.
//
// Determinism: the same config, seed, observed ids and logits give the same tokens,
// whatever else runs in the process. A Sampler owns all its state (RNG, seen set, scratch);
// there is no global state. One Sampler per turn, used by one thread at a time (the
// scheduler's); it is move-only because its scratch buffers are O(vocab).
//
// Caveat: top-p sums the mass of selected blocks in the order nth_element leaves them, so a
// nucleus whose mass lies within rounding (~1e-16) of top_p may be cut differently by another
// standard library (and exp() may differ across libms); one build always repeats itself.
//
// Cost per step for a vocabulary V: greedy is one O(V) pass with no allocation. Sampling is
// a few O(V) passes (softmax, masks, draw) plus O(V) expected selection (nth_element) for
// top-k and for top-p's bisection; nothing larger than 64 ids or the top-n logprobs is ever
// sorted. Scratch is allocated once, at construction.
#ifndef XLSTMD_CORE_SAMPLING_SAMPLER_H_
#define XLSTMD_CORE_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/sampling/rng.h"
#include "core/sampling/sampling_config.h"

namespace xlstmd::core {

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

// What Sample() reports besides the id. The logprobs are natural-log probabilities under
// the distribution the token was drawn from: after penalty, temperature, top-k, top-p and
// min-p, renormalised over the survivors. Greedy has no such distribution (it is a point
// mass), so for greedy they are the log-softmax of the penalised logits at temperature 1.
struct SampleInfo {
  int32_t token_id = 0;
  // The chosen token's logprob; filled only when config.logprobs > 0, else 0.
  float logprob = 0.0f;
  // Up to config.logprobs most likely tokens, logprob desc (ties: lower id first). When
  // sampling, only tokens that survived the filters appear, so there may be fewer. The
  // vector's capacity is reused across calls.
  std::vector<TokenLogprob> top_logprobs;
};

class Sampler {
 public:
  // Validates `config` (ValidateSamplingConfig) and builds the turn's sampler. The RNG is
  // seeded with config.seed, or with `fallback_seed` when config.seed is 0 (the server draws
  // one per turn, so "no seed" still gives a reproducible turn it can report).
  static absl::StatusOr<Sampler> Create(const SamplingConfig& config, int32_t vocab_size,
                                        uint64_t fallback_seed,
                                        const SamplingLimits& limits = SamplingLimits{});

  Sampler(Sampler&&) = default;
  Sampler& operator=(Sampler&&) = default;
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Records that `id` is in the turn's context (prompt tokens, for the repetition penalty).
  // Sample() observes its own result, so callers only feed the ids they append themselves.
  // Ids outside [0, vocab_size) are ignored. O(1).
  void Observe(int32_t id);
  void Observe(absl::Span<const int32_t> ids);

  // Picks the next token from `logits` (vocab_size floats, raw model output) and observes
  // it. `info` may be null. NaN logits are treated as -inf; if no token has a finite
  // logit the pick falls back to the argmax rule (lowest id among the largest).
  int32_t Sample(absl::Span<const float> logits, SampleInfo* info);

  uint64_t seed() const { return seed_; }
  int32_t vocab_size() const { return vocab_size_; }

 private:
  Sampler(const SamplingConfig& config, int32_t vocab_size, uint64_t seed);

  // work_ = logits with NaN -> -inf, +inf -> the largest float, and the repetition
  // penalty applied.
  void PrepareWork(absl::Span<const float> logits);
  // Logit desc, then id asc: a strict total order (work_ holds no NaN), so every cut and
  // every sorted list is unique whatever algorithm the standard library uses.
  struct Better {
    const float* x;
    bool operator()(int32_t a, int32_t b) const { return x[a] > x[b] || (x[a] == x[b] && a < b); }
  };
  // order_[n - 1] = the n-th best id and order_[0, n - 1) the better ones, sorted by rank
  // when `sorted` (always for n <= 64). 1 <= n <= vocab_size.
  void SelectBest(int32_t n, bool sorted);
  // The worst id of the smallest best-first prefix of the candidates order_[0, count)
  // whose weight_ sum reaches `target` (the worst candidate if rounding never gets there);
  // reorders order_[0, count).
  int32_t NucleusCutoff(int32_t count, double target);
  int32_t SampleFromWork(SampleInfo* info);
  void FillGreedyLogprobs(int32_t chosen, SampleInfo* info);

  SamplingConfig config_;
  int32_t vocab_size_;
  uint64_t seed_;
  SamplingRng rng_;

  std::vector<uint8_t> seen_;      // (vocab_size) 1 if observed; only with a penalty
  std::vector<int32_t> seen_ids_;  // distinct observed ids, in first-seen order
  std::vector<float> work_;        // (vocab_size) processed logits
  std::vector<float> weight_;      // (vocab_size) exp((logit - max) / T), 0 once filtered
  std::vector<int32_t> order_;     // (vocab_size) token ids, permuted by selection
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_SAMPLING_SAMPLER_H_
