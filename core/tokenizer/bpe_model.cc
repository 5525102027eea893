#include "core/tokenizer/bpe_model.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "core/tokenizer/byte_level.h"
#include "core/base/utf8.h"

namespace xlstmd::core {
namespace {

constexpr size_t kSmallWordSymbols = 48;  // measured crossover vs the heap
constexpr int32_t kNoRank = INT32_MAX;

}  // namespace

absl::StatusOr<BpeModel> BpeModel::Create(const BpeModelSpec& spec) {
  BpeModel m;
  m.token_to_id_.reserve(spec.vocab.size());
  for (const auto& [token, id] : spec.vocab) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("negative vocab id ", id));
    m.token_to_id_.emplace(token, id);
    std::string bytes;
    if (spec.ignore_merges && ByteLevelDecode(token, &bytes)) m.bytes_to_id_.emplace(bytes, id);
  }
  m.byte_ids_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    AppendUtf8(kByteToUnicode[b], &ch);
    if (auto it = m.token_to_id_.find(ch); it != m.token_to_id_.end()) m.byte_ids_[b] = it->second;
  }
  if (spec.unk_token.has_value()) {
    auto it = m.token_to_id_.find(*spec.unk_token);
    if (it == m.token_to_id_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unk_token \"", *spec.unk_token, "\" is not in the vocabulary"));
    }
    m.unk_id_ = it->second;
  }
  m.merges_.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    auto l = m.token_to_id_.find(left);
    auto r = m.token_to_id_.find(right);
    if (l == m.token_to_id_.end() || r == m.token_to_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " (\"", left, "\" \"", right,
                                                     "\") names a token not in the vocabulary"));
    }
    auto merged = m.token_to_id_.find(absl::StrCat(left, right));
    if (merged == m.token_to_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " (\"", left, "\" \"", right,
                                                     "\") makes a token not in the vocabulary"));
    }
    // A repeated pair keeps its last rank: HF (Rust and JS) builds a map, later entries win.
    m.merges_.insert_or_assign(PairKey(l->second, r->second),
                               Merge{static_cast<int32_t>(rank), merged->second});
  }
  m.ignore_merges_ = spec.ignore_merges;
  return m;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = token_to_id_.find(absl::string_view(token.data(), token.size()));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::EncodeWord(std::string_view bytes, std::vector<int32_t>* out) const {
  if (bytes.empty()) return;
  if (ignore_merges_) {
    if (auto it = bytes_to_id_.find(absl::string_view(bytes.data(), bytes.size()));
        it != bytes_to_id_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  // Most words are short: their symbols live on the stack (no allocation per word).
  int32_t small[kSmallWordSymbols];
  std::vector<int32_t> large;
  const bool is_small = bytes.size() <= kSmallWordSymbols;
  if (!is_small) large.reserve(bytes.size());
  size_t n = 0;
  for (char c : bytes) {
    int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    // A byte with no token (never in GPT-2 style vocabularies) becomes unk, or is dropped
    // when there is none, as HF does.
    if (id < 0) id = unk_id_;
    if (id < 0) continue;
    if (is_small) {
      small[n++] = id;
    } else {
      large.push_back(id);
    }
  }
  if (is_small) {
    n = MergeSmall(small, n);
    out->insert(out->end(), small, small + n);
  } else {
    MergeLarge(&large);
    out->insert(out->end(), large.begin(), large.end());
  }
}

size_t BpeModel::MergeSmall(int32_t* s, size_t n) const {
  if (n < 2) return n;
  // ranks[i]: rank of the merge of (s[i], s[i + 1]).
  int32_t ranks[kSmallWordSymbols];
  int32_t new_ids[kSmallWordSymbols];
  auto fill = [&](size_t i) {
    const Merge* m = FindMerge(s[i], s[i + 1]);
    ranks[i] = m ? m->rank : kNoRank;
    new_ids[i] = m ? m->new_id : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) fill(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (ranks[i] < ranks[best]) best = i;  // strict: the leftmost wins ties
    }
    if (ranks[best] == kNoRank) break;
    s[best] = new_ids[best];
    for (size_t i = best + 1; i + 1 < n; ++i) {
      s[i] = s[i + 1];
      ranks[i] = ranks[i + 1];
      new_ids[i] = new_ids[i + 1];
    }
    --n;
    if (best > 0) fill(best - 1);
    if (best + 1 < n) fill(best);
  }
  return n;
}

void BpeModel::MergeLarge(std::vector<int32_t>* symbols) const {
  std::vector<int32_t>& s = *symbols;
  const auto n = static_cast<int32_t>(s.size());
  // Doubly linked list over positions; merged-away positions get id -1.
  std::vector<int32_t> prev(n), next(n);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push = [&](int32_t pos) {
    const int32_t right = next[pos];
    if (right < 0) return;
    if (const Merge* m = FindMerge(s[pos], s[right])) queue.push({m->rank, pos, m->new_id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    if (s[c.pos] < 0) continue;
    const int32_t right = next[c.pos];
    if (right < 0) continue;
    // Stale entry: the pair at this position changed since it was queued.
    const Merge* m = FindMerge(s[c.pos], s[right]);
    if (m == nullptr || m->new_id != c.new_id || m->rank != c.rank) continue;
    s[c.pos] = c.new_id;
    s[right] = -1;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    if (prev[c.pos] >= 0) push(prev[c.pos]);
    push(c.pos);
  }
  size_t w = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (s[i] >= 0) s[w++] = s[i];
  }
  s.resize(w);
}

}  // namespace xlstmd::core
