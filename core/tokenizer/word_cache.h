// WordCache: a bounded map from a pre-token's bytes to its BPE ids. Text repeats the same
// words over and over, and a hash lookup is several times cheaper than re-running the merges.
//
// The storage is per thread (thread_local), so lookups take no lock: a shared cache with a
// mutex measured slower than no cache at all. Each thread holds the entries of the last
// WordCache it used (a thread that alternates between two tokenizers just refills it), and at
// most kMaxEntries words (~3 MB) — when full it is cleared, which is cheaper than LRU
// bookkeeping, and the hot words come straight back. Only words up to kMaxWordBytes are
// cached. All methods are const and safe to call from any thread.
#ifndef XLSTMD_CORE_TOKENIZER_WORD_CACHE_H_
#define XLSTMD_CORE_TOKENIZER_WORD_CACHE_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/types/span.h"

namespace xlstmd::core {

class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 48;
  static constexpr size_t kMaxEntries = 1 << 15;

  WordCache();
  WordCache(const WordCache&) = delete;
  WordCache& operator=(const WordCache&) = delete;

  static bool Cacheable(std::string_view word) { return word.size() <= kMaxWordBytes; }

  // On a hit appends the ids to `out` and returns true.
  bool Lookup(std::string_view word, std::vector<int32_t>* out) const;
  void Insert(std::string_view word, absl::Span<const int32_t> ids) const;

 private:
  const uint64_t id_;  // unique per instance, never reused (unlike an address)
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_WORD_CACHE_H_
