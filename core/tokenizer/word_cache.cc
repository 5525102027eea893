#include "core/tokenizer/word_cache.h"

#include <atomic>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace xlstmd::core {
namespace {

struct ThreadCache {
  uint64_t owner = 0;
  // word -> [offset, offset + count) in `ids`
  absl::flat_hash_map<std::string, std::pair<uint32_t, uint32_t>> words;
  std::vector<int32_t> ids;

  void Reset(uint64_t new_owner) {
    owner = new_owner;
    words.clear();
    ids.clear();
  }
};

ThreadCache& Local(uint64_t owner) {
  thread_local ThreadCache cache;
  if (cache.owner != owner) cache.Reset(owner);
  return cache;
}

uint64_t NextCacheId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

WordCache::WordCache() : id_(NextCacheId()) {}

bool WordCache::Lookup(std::string_view word, std::vector<int32_t>* out) const {
  ThreadCache& c = Local(id_);
  auto it = c.words.find(absl::string_view(word.data(), word.size()));
  if (it == c.words.end()) return false;
  const int32_t* begin = c.ids.data() + it->second.first;
  out->insert(out->end(), begin, begin + it->second.second);
  return true;
}

void WordCache::Insert(std::string_view word, absl::Span<const int32_t> ids) const {
  ThreadCache& c = Local(id_);
  if (c.words.size() >= kMaxEntries) c.Reset(id_);
  const auto offset = static_cast<uint32_t>(c.ids.size());
  if (!c.words.try_emplace(std::string(word), offset, static_cast<uint32_t>(ids.size())).second) {
    return;
  }
  c.ids.insert(c.ids.end(), ids.begin(), ids.end());
}

}  // namespace xlstmd::core
