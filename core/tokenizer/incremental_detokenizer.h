// IncrementalDetokenizer: turns a stream of token ids into a stream of text that never
// contains half a UTF-8 character. Byte-level tokens can end mid-character (an emoji is often
// 2-4 tokens), so bytes that may still complete are held back until they do. Ill-formed
// bytes that can no longer complete become U+FFFD as soon as that is certain; an incomplete
// tail becomes U+FFFD only in Finish(). The concatenation of all Push() results plus
// Finish() equals Utf8Lossy(tokenizer.Decode(ids)) for every id sequence.
//
// One instance per stream; not thread-safe (a turn's tokens arrive on one thread). The
// tokenizer must outlive it.
#ifndef XLSTMD_CORE_TOKENIZER_INCREMENTAL_DETOKENIZER_H_
#define XLSTMD_CORE_TOKENIZER_INCREMENTAL_DETOKENIZER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/tokenizer/tokenizer.h"

namespace xlstmd::core {

class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}

  // Feeds one token and returns the text that became complete (often empty for a token that
  // ends mid-character). INVALID_ARGUMENT for an id outside the vocabulary; the stream is
  // unchanged then.
  absl::StatusOr<std::string> Push(int32_t id);

  // Ends the stream: returns the held-back bytes as U+FFFD (one per maximal ill-formed
  // subpart, as Utf8Lossy does), or "" when nothing is pending. The detokenizer is then
  // empty and may start a new stream.
  std::string Finish();

  // Bytes held back waiting for the rest of a character (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_INCREMENTAL_DETOKENIZER_H_
