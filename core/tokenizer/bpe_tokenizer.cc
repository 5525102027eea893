#include "core/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/json_file.h"
#include "core/base/status_macros.h"
#include "core/base/utf8.h"
#include "core/tokenizer/byte_level.h"
#include "core/tokenizer/tokenizer_json.h"

namespace xlstmd::core {

struct BpeTokenizer::Parts {
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  BpeModel model;
  std::vector<AddedToken> added_tokens;
  std::vector<std::pair<std::string, int32_t>> vocab;
};

namespace {

constexpr std::uintmax_t kMaxTokenizerFileBytes = 256u << 20;

bool Overlaps(const std::vector<std::pair<size_t, size_t>>& ranges, size_t begin, size_t end) {
  // Ranges are sorted: find the first that ends after `begin`.
  auto it =
      std::lower_bound(ranges.begin(), ranges.end(), begin,
                       [](const std::pair<size_t, size_t>& r, size_t b) { return r.second <= b; });
  return it != ranges.end() && it->first < end;
}

absl::Status IdTooLarge(int64_t id, int64_t limit, size_t file_bytes) {
  return absl::InvalidArgumentError(
      absl::StrCat("token id ", id, " is too large for a tokenizer file of ", file_bytes,
                   " bytes (ids must be below ", limit, ")"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromFile(
    const std::filesystem::path& path) {
  XLSTMD_ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(path, kMaxTokenizerFileBytes));
  return FromJson(text, path.string());
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromJson(std::string_view json_text,
                                                                     std::string_view source) {
  const absl::string_view name(source.data(), source.size());
  auto prefixed = [name](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(name, ": ", s.message()));
  };
  absl::StatusOr<TokenizerJsonSpec> spec = ParseTokenizerJson(json_text);
  if (!spec.ok()) return prefixed(spec.status());
  absl::StatusOr<Normalizer> normalizer = Normalizer::Create(spec->normalizer);
  if (!normalizer.ok()) return prefixed(normalizer.status());
  absl::StatusOr<PreTokenizer> pre = PreTokenizer::Create(std::move(spec->pre_tokenizer));
  if (!pre.ok()) return prefixed(pre.status());
  // The id tables are indexed by id, so a hostile id (2^31 - 1 in a 1 KB file) would allocate
  // gigabytes before anything else could fail. A tokenizer.json spells every id out, so ids
  // cannot densely exceed its size; small test files keep a floor of 2^16.
  const int64_t id_limit = std::max<int64_t>(static_cast<int64_t>(json_text.size()), 1 << 16);
  for (const auto& [token, id] : spec->model.vocab) {
    if (id >= id_limit) return prefixed(IdTooLarge(id, id_limit, json_text.size()));
  }
  for (const AddedToken& t : spec->added_tokens) {
    if (t.id >= id_limit) return prefixed(IdTooLarge(t.id, id_limit, json_text.size()));
  }
  absl::StatusOr<BpeModel> model = BpeModel::Create(spec->model);
  if (!model.ok()) return prefixed(model.status());
  Parts parts{std::move(*normalizer), std::move(*pre), std::move(*model),
              std::move(spec->added_tokens), std::move(spec->model.vocab)};
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer(std::move(parts)));
  // Normalized added tokens are looked for in normalized text, so normalize their content.
  std::vector<AddedTokenMatcher::Pattern> raw, normalized;
  std::string scratch;
  for (const AddedToken& token : tok->added_tokens_) {
    if (!ValidateUtf8(token.content).ok()) {
      return prefixed(absl::InvalidArgumentError("an added token is not valid UTF-8"));
    }
    if (!token.normalized) {
      raw.push_back({token.content, &token});
      continue;
    }
    absl::StatusOr<std::string_view> n = tok->normalizer_.Normalize(token.content, &scratch);
    if (!n.ok()) return prefixed(n.status());
    normalized.push_back({std::string(*n), &token});
  }
  tok->raw_matcher_ = AddedTokenMatcher(std::move(raw));
  tok->normalized_matcher_ = AddedTokenMatcher(std::move(normalized));
  return tok;
}

BpeTokenizer::BpeTokenizer(Parts parts)
    : normalizer_(std::move(parts.normalizer)),
      pre_tokenizer_(std::move(parts.pre_tokenizer)),
      model_(std::move(parts.model)),
      added_tokens_(std::move(parts.added_tokens)) {
  int32_t max_id = -1;
  for (const auto& [token, id] : parts.vocab) max_id = std::max(max_id, id);
  for (const AddedToken& t : added_tokens_) max_id = std::max(max_id, t.id);
  id_bytes_.resize(static_cast<size_t>(max_id + 1));
  id_present_.assign(id_bytes_.size(), false);
  is_special_.assign(id_bytes_.size(), false);
  for (auto& [token, id] : parts.vocab) {
    std::string bytes;
    // HF's ByteLevel decoder passes a token with characters outside the alphabet through
    // as its UTF-8 spelling.
    if (!ByteLevelDecode(token, &bytes)) bytes = token;
    id_bytes_[id] = std::move(bytes);
    id_present_[id] = true;
  }
  for (const AddedToken& t : added_tokens_) {
    id_bytes_[t.id] = t.content;
    id_present_[t.id] = true;
    added_by_content_.try_emplace(t.content, t.id);
    if (t.special && !is_special_[t.id]) {
      is_special_[t.id] = true;
      special_tokens_.push_back({t.content, t.id});
    }
  }
}

std::optional<int32_t> BpeTokenizer::AddedTokenId(std::string_view content) const {
  auto it = added_by_content_.find(absl::string_view(content.data(), content.size()));
  if (it == added_by_content_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<std::string_view> BpeTokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !id_present_[id]) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", id, " is not in the vocabulary (size ", vocab_size(), ")"));
  }
  return std::string_view(id_bytes_[id]);
}

void BpeTokenizer::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  const bool cacheable = cache_enabled_ && WordCache::Cacheable(word);
  if (cacheable && cache_.Lookup(word, ids)) return;
  const size_t before = ids->size();
  model_.EncodeWord(word, ids);
  if (cacheable) {
    cache_.Insert(word, absl::MakeConstSpan(ids->data() + before, ids->size() - before));
  }
}

absl::Status BpeTokenizer::EncodeNormalized(std::string_view text, PreTokenized* scratch,
                                            std::vector<int32_t>* ids) const {
  XLSTMD_RETURN_IF_ERROR(pre_tokenizer_.Run(text, scratch));
  for (size_t i = 0; i < scratch->pieces.size(); ++i) EncodeWord(scratch->piece(i), ids);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::Encode(std::string_view text,
                                                          const EncodeOptions& options) const {
  XLSTMD_RETURN_IF_ERROR(ValidateUtf8(text));
  if (text.size() > UINT32_MAX / 2) {
    return absl::InvalidArgumentError("text longer than 2 GiB");
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  const auto& literal = options.literal_ranges;
  std::vector<TextSegment> raw;
  raw_matcher_.Split(
      text,
      [&](size_t begin, size_t end) {
        return options.allow_special && !Overlaps(literal, begin, end);
      },
      &raw);
  std::vector<TextSegment> normalized_segments;
  std::string normalized_storage;
  PreTokenized scratch;
  for (const TextSegment& seg : raw) {
    if (seg.token_id >= 0) {
      ids.push_back(seg.token_id);
      continue;
    }
    XLSTMD_ASSIGN_OR_RETURN(
        const std::string_view normalized,
        normalizer_.Normalize(text.substr(seg.begin, seg.end - seg.begin), &normalized_storage));
    // Offsets inside normalized text no longer map to the input, so a piece that touches a
    // literal range gets no normalized special tokens at all.
    const bool specials = options.allow_special && !Overlaps(literal, seg.begin, seg.end);
    normalized_segments.clear();
    normalized_matcher_.Split(
        normalized, [specials](size_t, size_t) { return specials; }, &normalized_segments);
    for (const TextSegment& n : normalized_segments) {
      if (n.token_id >= 0) {
        ids.push_back(n.token_id);
      } else {
        XLSTMD_RETURN_IF_ERROR(
            EncodeNormalized(normalized.substr(n.begin, n.end - n.begin), &scratch, &ids));
      }
    }
  }
  return ids;
}

}  // namespace xlstmd::core
