// The byte-level BPE model: vocabulary, ranked merges, and the merge loop that turns the
// bytes of one pre-token into token ids. Each byte starts as the id of its byte-level
// alphabet character; then, repeatedly, the adjacent pair with the lowest merge rank (the
// leftmost on ties) is merged, exactly as the Rust `tokenizers` crate does. Short words use a
// quadratic scan (fastest under ~48 symbols); longer ones a heap over a linked list, so a
// 1 MB word costs O(n log n). Immutable after Create; safe to share across threads.
#ifndef XLSTMD_CORE_TOKENIZER_BPE_MODEL_H_
#define XLSTMD_CORE_TOKENIZER_BPE_MODEL_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace xlstmd::core {

struct BpeModelSpec {
  // Token strings as written in the file (byte-level alphabet), with their ids.
  std::vector<std::pair<std::string, int32_t>> vocab;
  // Merges in rank order, as (left, right) token strings.
  std::vector<std::pair<std::string, std::string>> merges;
  std::optional<std::string> unk_token;
  // Llama-3 style: a pre-token that is itself in the vocabulary is emitted whole.
  bool ignore_merges = false;
};

class BpeModel {
 public:
  // InvalidArgument when a merge names a token missing from the vocabulary, or when the
  // merged token is missing (messages name the merge and its rank).
  static absl::StatusOr<BpeModel> Create(const BpeModelSpec& spec);

  // Appends the ids for one pre-token given as raw bytes (not yet byte-level mapped).
  void EncodeWord(std::string_view bytes, std::vector<int32_t>* out) const;

  // The id of a token string (byte-level spelling), if present.
  std::optional<int32_t> TokenToId(std::string_view token) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const Merge* FindMerge(int32_t a, int32_t b) const {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  // Merges s[0, n) in place; returns the new length. n <= kSmallWordSymbols.
  size_t MergeSmall(int32_t* s, size_t n) const;
  void MergeLarge(std::vector<int32_t>* symbols) const;

  absl::flat_hash_map<std::string, int32_t> token_to_id_;  // byte-level spelling -> id
  absl::flat_hash_map<std::string, int32_t> bytes_to_id_;  // raw bytes -> id (ignore_merges)
  absl::flat_hash_map<uint64_t, Merge> merges_;            // (left id, right id) -> merge
  std::array<int32_t, 256> byte_ids_{};                    // -1 when a byte has no token
  int32_t unk_id_ = -1;
  bool ignore_merges_ = false;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_BPE_MODEL_H_
