#include "core/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>

#include "core/base/check.h"
#include "core/base/status_macros.h"

namespace xlstmd::core {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Top-p's first probe and the size of the bracket it finally sorts (see NucleusCutoff).
constexpr int32_t kNucleusChunk = 64;

float Penalise(float logit, float penalty) {
  // A valid penalty can still overflow (1e-40 divides a logit of 1 to +inf); +inf would make
  // the softmax inf - inf = NaN, so it stays at the largest finite value, as PrepareWork
  // does for raw logits. (-inf just removes the token.)
  return logit > 0.0f ? std::min(logit / penalty, std::numeric_limits<float>::max())
                      : logit * penalty;
}

// Largest value, lowest id among equals; NaN never wins (every comparison with it is
// false). All -inf (or NaN) gives id 0.
// The first index of the largest non-NaN value (0 when there is none). The hot greedy path
// runs it over the whole vocabulary for every decoding turn on the engine thread, so it keeps
// kLanes independent (value, index) pairs that the compiler turns into vector compares and
// blends: a branchy scalar loop cost ~60 us per 50k-entry row, ~4% of a batch-64 step.
// Strict `>` keeps each lane's first occurrence, and the lowest index among the lanes that
// hold the maximum is the row's first occurrence, so the result equals the scalar rule.
int32_t ArgmaxLowestId(const float* x, int32_t n) {
  constexpr int32_t kLanes = 16;
  float m[kLanes];
  int32_t idx[kLanes];
  for (int32_t j = 0; j < kLanes; ++j) {
    m[j] = kNegInf;
    idx[j] = 0;
  }
  int32_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int32_t j = 0; j < kLanes; ++j) {
      const bool greater = x[i + j] > m[j];
      m[j] = greater ? x[i + j] : m[j];
      idx[j] = greater ? i + j : idx[j];
    }
  }
  float best = kNegInf;
  int32_t best_id = 0;
  for (int32_t j = 0; j < kLanes; ++j) {
    if (m[j] > best || (m[j] == best && m[j] != kNegInf && idx[j] < best_id)) {
      best = m[j];
      best_id = idx[j];
    }
  }
  for (; i < n; ++i) {  // the tail's indices are above every lane's
    if (x[i] > best) {
      best = x[i];
      best_id = i;
    }
  }
  return best_id;
}

}  // namespace

absl::StatusOr<Sampler> Sampler::Create(const SamplingConfig& config, int32_t vocab_size,
                                        uint64_t fallback_seed, const SamplingLimits& limits) {
  XLSTMD_RETURN_IF_ERROR(ValidateSamplingConfig(config, vocab_size, limits));
  return Sampler(config, vocab_size, config.seed != 0 ? config.seed : fallback_seed);
}

Sampler::Sampler(const SamplingConfig& config, int32_t vocab_size, uint64_t seed)
    : config_(config), vocab_size_(vocab_size), seed_(seed), rng_(seed) {
  const size_t v = static_cast<size_t>(vocab_size);
  const bool penalise = config.repetition_penalty != 1.0f;
  const bool sampling = config.temperature > 0.0f;
  const bool logprobs = config.logprobs > 0;
  // Everything a step needs is allocated here, so that Sample() never allocates (except
  // growing seen_ids_ and the caller's top_logprobs the first time).
  if (penalise) seen_.assign(v, 0);
  if (penalise || sampling || logprobs) work_.assign(v, 0.0f);
  if (sampling) weight_.assign(v, 0.0f);
  if (sampling || logprobs) order_.assign(v, 0);
}

void Sampler::Observe(int32_t id) {
  // Without a penalty nothing reads the seen set, so it is not kept.
  if (seen_.empty() || id < 0 || id >= vocab_size_) return;
  if (seen_[id] == 0) {
    seen_[id] = 1;
    seen_ids_.push_back(id);
  }
}

void Sampler::Observe(absl::Span<const int32_t> ids) {
  for (int32_t id : ids) Observe(id);
}

int32_t Sampler::Sample(absl::Span<const float> logits, SampleInfo* info) {
  XLSTMD_CHECK(logits.size() == static_cast<size_t>(vocab_size_));
  if (info != nullptr) {
    info->logprob = 0.0f;
    info->top_logprobs.clear();
  }
  int32_t chosen;
  if (config_.temperature == 0.0f) {
    if (config_.logprobs == 0 && seen_ids_.empty()) {
      // The hot greedy path: one read-only pass, no copy.
      chosen = ArgmaxLowestId(logits.data(), vocab_size_);
    } else {
      PrepareWork(logits);
      chosen = ArgmaxLowestId(work_.data(), vocab_size_);
      if (info != nullptr && config_.logprobs > 0) FillGreedyLogprobs(chosen, info);
    }
  } else {
    PrepareWork(logits);
    chosen = SampleFromWork(info);
  }
  Observe(chosen);
  if (info != nullptr) info->token_id = chosen;
  return chosen;
}

void Sampler::PrepareWork(absl::Span<const float> logits) {
  constexpr float kMax = std::numeric_limits<float>::max();
  // NaN -> -inf and +inf -> max keep the comparisons below a strict total order and the
  // softmax finite; the argmax rule picks the same token as on the raw logits.
  for (int32_t i = 0; i < vocab_size_; ++i) {
    const float v = logits[i];
    work_[i] = std::isnan(v) ? kNegInf : std::min(v, kMax);
  }
  for (int32_t id : seen_ids_) work_[id] = Penalise(work_[id], config_.repetition_penalty);
}

void Sampler::SelectBest(int32_t n, bool sorted) {
  const Better better{work_.data()};
  int32_t* best = order_.data();
  if (n <= kNucleusChunk) {
    // One pass keeping a small sorted list: nearly every id is rejected by one compare
    // with the current n-th best, which beats a selection over all V for a few ids.
    int32_t count = 0;
    for (int32_t id = 0; id < vocab_size_; ++id) {
      if (count == n && !better(id, best[n - 1])) continue;
      int32_t pos = count < n ? count++ : n - 1;
      for (; pos > 0 && better(id, best[pos - 1]); --pos) best[pos] = best[pos - 1];
      best[pos] = id;
    }
    return;
  }
  std::iota(order_.begin(), order_.end(), 0);
  std::nth_element(best, best + (n - 1), best + vocab_size_, better);
  if (sorted) std::sort(best, best + (n - 1), better);
}

void Sampler::FillGreedyLogprobs(int32_t chosen, SampleInfo* info) {
  const float m = work_[chosen];
  if (m == kNegInf) return;  // no finite logit: nothing meaningful to report
  double z = 0.0;
  for (int32_t i = 0; i < vocab_size_; ++i) z += std::exp(work_[i] - m);
  const double log_z = std::log(z);
  auto logprob = [&](int32_t id) {
    return static_cast<float>(static_cast<double>(work_[id]) - m - log_z);
  };
  info->logprob = logprob(chosen);
  const int32_t n = std::min(config_.logprobs, vocab_size_);
  SelectBest(n, /*sorted=*/true);
  for (int32_t i = 0; i < n && work_[order_[i]] != kNegInf; ++i) {
    info->top_logprobs.push_back({order_[i], logprob(order_[i])});
  }
}

int32_t Sampler::NucleusCutoff(int32_t count, double target) {
  // Bisection by selection: order_[lo, hi) brackets the cut, order_[0, lo) are the best lo
  // candidates with mass `cum` < target. The first probe is a small chunk because LM
  // distributions usually put the nucleus in a few dozen tokens; after that each probe
  // halves the bracket, so the whole search is O(count) expected, and only the last
  // kNucleusChunk candidates are sorted.
  const Better better{work_.data()};
  int32_t* order = order_.data();
  int32_t lo = 0;
  int32_t hi = count;
  int32_t mid = std::min(kNucleusChunk, count);
  double cum = 0.0;
  while (hi - lo > kNucleusChunk) {
    std::nth_element(order + lo, order + mid, order + hi, better);
    double chunk = 0.0;
    for (int32_t i = lo; i < mid; ++i) chunk += weight_[order[i]];
    if (cum + chunk >= target) {
      hi = mid;
    } else {
      cum += chunk;
      lo = mid;
    }
    mid = lo + (hi - lo) / 2;
  }
  std::sort(order + lo, order + hi, better);
  for (int32_t i = lo; i < hi; ++i) {
    cum += weight_[order[i]];
    if (cum >= target) return order[i];
  }
  return order[hi - 1];  // rounding kept the walk just short of the chunk sums: keep all
}

int32_t Sampler::SampleFromWork(SampleInfo* info) {
  const int32_t v = vocab_size_;
  const float* x = work_.data();
  const int32_t top = ArgmaxLowestId(x, v);
  const float m = x[top];
  if (m == kNegInf) return top;  // no finite logit: the argmax rule, no draw
  const float t = config_.temperature;
  const Better better{x};
  const bool use_top_k = config_.top_k > 0 && config_.top_k < v;
  const bool use_top_p = config_.top_p < 1.0f;
  const int32_t limit = use_top_k ? config_.top_k : v;

  // Filters only zero weights, and the draw walks ids in id order, so its result does not
  // depend on how selection permuted order_. A cut is the worst id that survives it, in
  // the (logit desc, id asc) order. `total` is the mass of the top-k survivors, the base
  // of top-p.
  int32_t cutoff = -1;
  if (use_top_k) {
    SelectBest(limit, /*sorted=*/false);  // order_[0, limit) = the top-k, unsorted
    cutoff = order_[limit - 1];
  }
  double total = 0.0;
  for (int32_t id = 0; id < v; ++id) {
    const float w = cutoff >= 0 && better(cutoff, id) ? 0.0f : std::exp((x[id] - m) / t);
    weight_[id] = w;
    total += w;
  }
  if (use_top_p) {
    // Candidates lighter than theta weigh less than limit * theta = (1 - top_p) * total all
    // together, so the heavier ones, which rank above them, already reach the nucleus
    // mass: only those go to the selection. This usually leaves a small fraction of V.
    const double top_p = config_.top_p;
    const double theta = (1.0 - top_p) * total / limit;
    int32_t n = 0;
    for (int32_t i = 0; i < limit; ++i) {
      const int32_t id = use_top_k ? order_[i] : i;
      if (weight_[id] >= theta) order_[n++] = id;  // n <= i: compaction in place is safe
    }
    // n >= 1 whenever the weights are finite (the top weighs 1 >= theta); keep the top
    // alone rather than read order_[-1] if they ever are not.
    cutoff = n > 0 ? NucleusCutoff(n, top_p * total) : top;
    for (int32_t id = 0; id < v; ++id) {
      if (better(cutoff, id)) weight_[id] = 0.0f;
    }
  }
  // min-p is relative to p_max, whose weight is exp(0) = 1, so it never drops the top.
  double mass = 0.0;
  for (int32_t id = 0; id < v; ++id) {
    if (weight_[id] < config_.min_p) weight_[id] = 0.0f;
    mass += weight_[id];
  }

  // The walk adds the same weights in the same order as `mass`, so it ends exactly at
  // `mass`; if rounding lets the target reach it anyway, the last survivor is chosen.
  const double target = rng_.NextDouble() * mass;
  double cum = 0.0;
  int32_t chosen = top;
  for (int32_t id = 0; id < v; ++id) {
    const float w = weight_[id];
    if (w <= 0.0f) continue;
    cum += w;
    chosen = id;
    if (cum > target) break;
  }

  if (info != nullptr && config_.logprobs > 0) {
    const double log_mass = std::log(mass);
    auto logprob = [&](int32_t id) {
      return static_cast<float>((static_cast<double>(x[id]) - m) / t - log_mass);
    };
    info->logprob = logprob(chosen);
    const int32_t n = std::min(config_.logprobs, v);
    SelectBest(n, /*sorted=*/true);
    // Survivors come first in this order; a zero weight marks the first filtered id.
    for (int32_t i = 0; i < n && weight_[order_[i]] > 0.0f; ++i) {
      info->top_logprobs.push_back({order_[i], logprob(order_[i])});
    }
  }
  return chosen;
}

}  // namespace xlstmd::core
