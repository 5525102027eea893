#include "core/tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace xlstmd::core {
namespace {

// Unicode White_Space as class items: Oniguruma's \s. PCRE2's own \s (with UCP) also
// matches U+180E, which lost White_Space in Unicode 6.3.
constexpr std::string_view kWhiteSpaceItems =
    R"(\t-\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
// Oniguruma's Unicode \w; PCRE2's UCP \w is [\p{L}\p{N}_], which differs on marks and No.
constexpr std::string_view kWordItems = R"(\p{Alphabetic}\p{M}\p{Nd}\p{Pc})";
// Oniguruma's \h is a hex digit, not PCRE2's horizontal space.
constexpr std::string_view kHexItems = "0-9A-Fa-f";

size_t Utf8CharLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};

// One small match block per thread, shared by every pattern: only the whole-match offsets
// are read, which every ovector holds.
pcre2_match_data* ThreadMatchData() {
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create(1, nullptr));
  return md.get();
}

std::string EscapeLiteral(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    const bool alnum = (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z');
    if (u < 0x80 && !alnum) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

using Span = std::pair<size_t, size_t>;
struct Part {
  size_t begin, end;
  bool flag;  // is_match on input, "remove" on output
};

// Delimiter behaviours of HF's NormalizedString::split, over the match/gap partition.
std::vector<Part> ApplyBehavior(std::vector<Part> parts, SplitBehavior behavior) {
  std::vector<Part> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      return parts;
    case SplitBehavior::kIsolated:
      for (Part& p : parts) p.flag = false;
      return parts;
    case SplitBehavior::kContiguous:          // a run of matches (or of gaps) is one piece
    case SplitBehavior::kMergedWithPrevious:  // a match ends the piece before it
      for (const Part& p : parts) {
        const bool merge = behavior == SplitBehavior::kContiguous ? p.flag == previous_match
                                                                  : p.flag && !previous_match;
        if (merge && !out.empty()) {
          out.back().end = p.end;
        } else {
          out.push_back({p.begin, p.end, false});
        }
        previous_match = p.flag;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->flag && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back({it->begin, it->end, false});
        }
        previous_match = it->flag;
      }
      return {out.rbegin(), out.rend()};
  }
  return parts;
}

}  // namespace

bool IsUnicodeWhiteSpace(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

absl::StatusOr<std::string> OnigurumaToPcre2(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  size_t class_body = 0;  // index of the first byte of the current class body
  for (size_t i = 0; i < p.size();) {
    const char c = p[i];
    if (c == '\\') {
      if (i + 1 >= p.size()) return absl::InvalidArgumentError("regex ends with a backslash");
      const char e = p[i + 1];
      std::string_view items;
      bool negated = false;
      switch (e) {
        case 's':
          items = kWhiteSpaceItems;
          break;
        case 'S':
          items = kWhiteSpaceItems;
          negated = true;
          break;
        case 'w':
          items = kWordItems;
          break;
        case 'W':
          items = kWordItems;
          negated = true;
          break;
        case 'h':
          items = kHexItems;
          break;
        case 'H':
          items = kHexItems;
          negated = true;
          break;
        default:
          break;
      }
      if (!items.empty()) {
        if (in_class && negated) {
          return absl::InvalidArgumentError(absl::StrCat(
              "unsupported regex construct: \\", std::string(1, e), " inside a character class"));
        }
        if (in_class) {
          out.append(items);
        } else {
          out.append(negated ? "[^" : "[");
          out.append(items);
          out.push_back(']');
        }
      } else {
        out.push_back(c);
        out.push_back(e);
      }
      i += 2;
      continue;
    }
    if (in_class) {
      if (c == '[') {
        if (i + 1 < p.size() && p[i + 1] == ':') {  // POSIX bracket, same in both engines
          const size_t end = p.find(":]", i + 2);
          if (end == std::string_view::npos) {
            return absl::InvalidArgumentError("unterminated POSIX class in regex");
          }
          out.append(p.substr(i, end + 2 - i));
          i = end + 2;
          continue;
        }
        return absl::InvalidArgumentError("unsupported regex construct: nested character class");
      }
      if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') {
        return absl::InvalidArgumentError(
            "unsupported regex construct: character class intersection &&");
      }
      if (c == ']' && i > class_body) in_class = false;
      out.push_back(c);
      ++i;
      continue;
    }
    out.push_back(c);
    ++i;
    if (c == '[') {
      in_class = true;
      if (i < p.size() && p[i] == '^') out.push_back(p[i++]);
      class_body = i;
    }
  }
  if (in_class) return absl::InvalidArgumentError("unterminated character class in regex");
  return out;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(const std::string& pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    std::array<PCRE2_UCHAR, 256> message{};
    pcre2_get_error_message(error_code, message.data(), message.size());
    return absl::InvalidArgumentError(absl::StrCat("regex /", pattern, "/ does not compile at ",
                                                   error_offset, ": ",
                                                   reinterpret_cast<char*>(message.data())));
  }
  // Without JIT (e.g. an unsupported CPU) the interpreter gives the same answers, slower.
  const bool jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return std::unique_ptr<Regex>(new Regex(code, jit));
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

absl::Status Regex::FindAll(std::string_view text, std::vector<Span>* matches) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = ThreadMatchData();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    // The text was validated once up front, so PCRE2's own UTF check is skipped.
    const int rc =
        jit_ ? pcre2_jit_match(code, subject, text.size(), start, 0, md, nullptr)
             : pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(rc, message.data(), message.size());
      return absl::ResourceExhaustedError(
          absl::StrCat("regex match failed: ", reinterpret_cast<char*>(message.data())));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] > ov[0]) {
      matches->emplace_back(ov[0], ov[1]);
      start = ov[1];
    } else {
      // An empty match yields no piece; step over one character to make progress.
      if (ov[0] >= text.size()) break;
      start = ov[0] + Utf8CharLength(static_cast<uint8_t>(text[ov[0]]));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PreTokenizer> PreTokenizer::Create(std::vector<PreTokenizerStep> steps) {
  std::vector<Compiled> compiled;
  for (size_t i = 0; i < steps.size(); ++i) {
    PreTokenizerStep& step = steps[i];
    Compiled c;
    if (step.kind == PreTokenizerStep::Kind::kByteLevel) {
      if (i + 1 != steps.size()) {
        return absl::InvalidArgumentError(
            "unsupported pre_tokenizer: ByteLevel must be the last step of a Sequence");
      }
      if (step.use_regex) {
        auto translated = OnigurumaToPcre2(kGpt2Pattern);
        if (!translated.ok()) return translated.status();
        auto regex = Regex::Compile(*translated);
        if (!regex.ok()) return regex.status();
        c.regex = std::move(*regex);
      }
    } else if (!step.pattern.empty()) {
      std::string pcre2_pattern;
      if (step.pattern_is_regex) {
        auto translated = OnigurumaToPcre2(step.pattern);
        if (!translated.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("Split pattern: ", translated.status().message()));
        }
        pcre2_pattern = std::move(*translated);
      } else {
        pcre2_pattern = EscapeLiteral(step.pattern);
      }
      auto regex = Regex::Compile(pcre2_pattern);
      if (!regex.ok()) return regex.status();
      c.regex = std::move(*regex);
    }
    c.spec = std::move(step);
    compiled.push_back(std::move(c));
  }
  return PreTokenizer(std::move(compiled));
}

absl::Status PreTokenizer::ApplySplit(const Compiled& step, PreTokenized* io) const {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  out.reserve(io->pieces.size() * 2);
  std::vector<Span> matches;
  std::vector<Part> parts;
  // Split and ByteLevel's regex both isolate matches and keep the gaps between them.
  const bool byte_level = step.spec.kind == PreTokenizerStep::Kind::kByteLevel;
  const SplitBehavior behavior = byte_level ? SplitBehavior::kIsolated : step.spec.behavior;
  const bool invert = !byte_level && step.spec.invert;
  for (const auto& [begin, end] : io->pieces) {
    const std::string_view piece = io->text.substr(begin, end - begin);
    matches.clear();
    if (step.regex != nullptr) {
      if (absl::Status s = step.regex->FindAll(piece, &matches); !s.ok()) return s;
    }
    parts.clear();
    size_t prev = 0;
    for (const Span& m : matches) {
      if (m.first > prev) parts.push_back({prev, m.first, invert});
      parts.push_back({m.first, m.second, !invert});
      prev = m.second;
    }
    if (prev < piece.size()) parts.push_back({prev, piece.size(), invert});
    if (behavior == SplitBehavior::kIsolated) {
      // Hot path (every GPT-2/NeoX encode): no re-grouping needed.
      for (const Part& p : parts) out.emplace_back(begin + p.begin, begin + p.end);
      continue;
    }
    for (const Part& p : ApplyBehavior(std::move(parts), behavior)) {
      if (!p.flag && p.end > p.begin) out.emplace_back(begin + p.begin, begin + p.end);
    }
    parts = {};
  }
  io->pieces = std::move(out);
  return absl::OkStatus();
}

absl::Status PreTokenizer::Run(std::string_view text, PreTokenized* out) const {
  out->text = text;
  out->buffer.clear();
  out->pieces.clear();
  if (text.empty()) return absl::OkStatus();
  out->pieces.emplace_back(0, static_cast<uint32_t>(text.size()));
  for (const Compiled& step : steps_) {
    if (step.spec.kind == PreTokenizerStep::Kind::kByteLevel && step.spec.add_prefix_space) {
      // HF prepends a space to every piece that does not already start with one.
      std::string rewritten;
      std::vector<std::pair<uint32_t, uint32_t>> pieces;
      for (size_t i = 0; i < out->pieces.size(); ++i) {
        const std::string_view piece = out->piece(i);
        const auto begin = static_cast<uint32_t>(rewritten.size());
        if (piece.front() != ' ') rewritten.push_back(' ');
        rewritten.append(piece);
        pieces.emplace_back(begin, static_cast<uint32_t>(rewritten.size()));
      }
      out->buffer = std::move(rewritten);
      out->text = out->buffer;
      out->pieces = std::move(pieces);
    }
    if (step.regex != nullptr || step.spec.kind == PreTokenizerStep::Kind::kSplit) {
      if (absl::Status s = ApplySplit(step, out); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace xlstmd::core
