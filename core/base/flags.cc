#include "core/base/flags.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace xlstmd::base {

bool ParseInt64(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 24) return false;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end != s.c_str() + s.size()) return false;
  *out = static_cast<int64_t>(v);
  return true;
}

bool ParseDouble(const std::string& s, double* out) {
  if (s.empty() || s.size() > 64) return false;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end != s.c_str() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

bool ParseDurationMs(const std::string& s, double* ms, bool* bare_number) {
  if (bare_number != nullptr) *bare_number = false;
  if (s.empty() || s.size() > 64) return false;
  double v = 0;
  if (ParseDouble(s, &v)) {
    if (v != 0) {
      if (bare_number != nullptr) *bare_number = true;
      return false;
    }
    *ms = 0;
    return true;
  }
  // A sequence of <number><unit> ("1h30m"), numbers non-negative; as in Go's and Abseil's
  // parsers, the units may come in any order.
  double total = 0;
  size_t i = 0;
  while (i < s.size()) {
    const size_t num_start = i;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
    const size_t unit_start = i;
    while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) ++i;
    double n = 0;
    if (unit_start == num_start || !ParseDouble(s.substr(num_start, unit_start - num_start), &n)) {
      return false;
    }
    const std::string unit = s.substr(unit_start, i - unit_start);
    double scale = 0;
    if (unit == "ms") {
      scale = 1;
    } else if (unit == "s") {
      scale = 1e3;
    } else if (unit == "m") {
      scale = 60e3;
    } else if (unit == "h") {
      scale = 3600e3;
    } else {
      return false;
    }
    total += n * scale;
  }
  if (!std::isfinite(total) || total > 9.0e15) return false;
  *ms = std::round(total);
  return true;
}

std::string FormatDurationMs(int64_t ms) {
  if (ms == 0) return "0";
  if (ms % 3600000 == 0) return absl::StrCat(ms / 3600000, "h");
  if (ms % 60000 == 0) return absl::StrCat(ms / 60000, "m");
  if (ms % 1000 == 0) return absl::StrCat(ms / 1000, "s");
  return absl::StrCat(ms, "ms");
}

std::optional<std::string> GetEnv(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

namespace {

std::string RangeError(const std::string& value, const std::string& lo, const std::string& hi) {
  return absl::StrCat(value, " is out of range [", lo, ", ", hi, "]");
}

// The setter of a number flag in [min, max]; `parse` reads the text, `what` says what it must
// be ("an integer") when it cannot.
template <typename T>
std::function<std::string(const std::string&)> RangedNumber(T* dst, T min, T max,
                                                            bool (*parse)(const std::string&, T*),
                                                            const char* what) {
  return [=](const std::string& v) -> std::string {
    T x = 0;
    if (!parse(v, &x)) return absl::StrCat("'", v, "' is not ", what);
    if (x < min || x > max) return RangeError(v, absl::StrCat(min), absl::StrCat(max));
    *dst = x;
    return "";
  };
}

}  // namespace

FlagSet::FlagSet(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

void FlagSet::EnableEnvTwins(std::string prefix, EnvLookup lookup) {
  env_prefix_ = std::move(prefix);
  env_lookup_ = std::move(lookup);
}

bool FlagSet::IsEnvTwin(const std::string& var) const {
  if (env_prefix_.empty()) return false;
  for (const Flag& f : flags_) {
    if (EnvName(f.name) == var) return true;
  }
  for (const Rename& r : renames_) {
    if (EnvName(r.old_name) == var) return true;
  }
  return false;
}

std::string FlagSet::EnvName(const std::string& name) const {
  if (env_prefix_.empty()) return "";
  std::string out = env_prefix_;
  for (const char c : name) {
    out.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  return out;
}

std::string FlagSet::Prefix() const {
  return command_.empty() ? program_ : absl::StrCat(program_, " ", command_);
}

void FlagSet::Add(Flag flag) { flags_.push_back(std::move(flag)); }

FlagSet::Flag* FlagSet::Find(const std::string& name) {
  for (Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

void FlagSet::String(const std::string& name, std::string* dst, const std::string& help,
                     bool required) {
  Add({name, help, "STR", *dst, required, false, FlagSource::kDefault,
       [dst](const std::string& v) -> std::string {
         *dst = v;
         return "";
       }});
}

void FlagSet::Choice(const std::string& name, std::string* dst, std::vector<std::string> choices,
                     const std::string& help) {
  const std::string hint = absl::StrJoin(choices, "|");
  Add({name, help, hint, *dst, false, false, FlagSource::kDefault,
       [dst, choices = std::move(choices), hint](const std::string& v) -> std::string {
         for (const std::string& c : choices) {
           if (v == c) {
             *dst = v;
             return "";
           }
         }
         return absl::StrCat("'", v, "' is not one of ", hint);
       }});
}

void FlagSet::Int(const std::string& name, int64_t* dst, int64_t min, int64_t max,
                  const std::string& help, bool required) {
  Add({name, help, "N", required ? "" : absl::StrCat(*dst), required, false, FlagSource::kDefault,
       RangedNumber(dst, min, max, ParseInt64, "an integer")});
}

void FlagSet::Double(const std::string& name, double* dst, double min, double max,
                     const std::string& help, bool required) {
  Add({name, help, "X", required ? "" : absl::StrCat(*dst), required, false, FlagSource::kDefault,
       RangedNumber(dst, min, max, ParseDouble, "a number")});
}

void FlagSet::IntList(const std::string& name, std::vector<int64_t>* dst, int64_t min, int64_t max,
                      const std::string& help, bool required) {
  Add({name, help, "N,N,...", absl::StrJoin(*dst, ","), required, false, FlagSource::kDefault,
       [dst, min, max](const std::string& v) -> std::string {
         // Also a JSON array ("[72, 101]"), as `xlstm tokenize` prints ids: tools chain.
         absl::string_view list = absl::StripAsciiWhitespace(v);
         if (list.size() >= 2 && list.front() == '[' && list.back() == ']') {
           list = list.substr(1, list.size() - 2);
         }
         std::vector<int64_t> out;
         for (const absl::string_view raw : absl::StrSplit(list, ',')) {
           const absl::string_view part = absl::StripAsciiWhitespace(raw);
           int64_t x = 0;
           if (!ParseInt64(std::string(part), &x)) {
             return absl::StrCat("'", part, "' is not an integer");
           }
           if (x < min || x > max) {
             return RangeError(std::string(part), absl::StrCat(min), absl::StrCat(max));
           }
           out.push_back(x);
         }
         *dst = std::move(out);
         return "";
       }});
}

void FlagSet::Bool(const std::string& name, bool* dst, const std::string& help) {
  Add({name, help, "", *dst ? "true" : "false", false, true, FlagSource::kDefault,
       [dst](const std::string& v) -> std::string {
         if (v == "true" || v == "1") {
           *dst = true;
         } else if (v == "false" || v == "0") {
           *dst = false;
         } else {
           return absl::StrCat("'", v, "' is not true or false");
         }
         return "";
       }});
}

namespace {

constexpr const char* kDurationHelp = "a duration with a unit (30s, 500ms, 10m, 1h)";

// Reads a duration flag's text into milliseconds; a bare number counts seconds (the spelling
// before units were required) and sets `*warning`.
std::string DurationMs(const std::string& v, double* ms, std::string* warning) {
  bool bare = false;
  if (ParseDurationMs(v, ms, &bare)) return "";
  if (!bare) return absl::StrCat("'", v, "' is not ", kDurationHelp);
  double seconds = 0;
  ParseDouble(v, &seconds);
  if (seconds < 0) return absl::StrCat("'", v, "' is not ", kDurationHelp);
  *ms = std::round(seconds * 1e3);
  *warning = absl::StrCat("a bare number (", v, ") is read as seconds for one more release; write ",
                          v, "s");
  return "";
}

}  // namespace

void FlagSet::Duration(const std::string& name, int64_t* dst, Unit unit, int64_t min, int64_t max,
                       const std::string& help) {
  const int64_t per = unit == Unit::kSeconds ? 1000 : 1;
  Add({name, help, "DURATION", FormatDurationMs(*dst * per), false, false, FlagSource::kDefault,
       [this, dst, per, min, max](const std::string& v) -> std::string {
         double ms = 0;
         const std::string err = DurationMs(v, &ms, &pending_warning_);
         if (!err.empty()) return err;
         if (std::fmod(ms, static_cast<double>(per)) != 0) {
           return absl::StrCat("'", v, "' is not a whole number of seconds");
         }
         const double x = ms / static_cast<double>(per);
         if (x < static_cast<double>(min) || x > static_cast<double>(max)) {
           return RangeError(v, FormatDurationMs(min * per), FormatDurationMs(max * per));
         }
         *dst = static_cast<int64_t>(x);
         return "";
       }});
}

void FlagSet::DurationSeconds(const std::string& name, double* dst, double min, double max,
                              const std::string& help) {
  Add({name, help, "DURATION", FormatDurationMs(static_cast<int64_t>(std::round(*dst * 1e3))),
       false, false, FlagSource::kDefault,
       [this, dst, min, max](const std::string& v) -> std::string {
         double ms = 0;
         const std::string err = DurationMs(v, &ms, &pending_warning_);
         if (!err.empty()) return err;
         const double x = ms / 1e3;
         if (x < min || x > max) {
           return RangeError(v, FormatDurationMs(static_cast<int64_t>(min * 1e3)),
                             FormatDurationMs(static_cast<int64_t>(max * 1e3)));
         }
         *dst = x;
         return "";
       }});
}

void FlagSet::Renamed(const std::string& old_name, const std::string& current,
                      const std::string& unit_suffix) {
  renames_.push_back({old_name, current, unit_suffix});
}

FlagSet::Rename* FlagSet::FindRename(const std::string& old_name) {
  for (Rename& r : renames_) {
    if (r.old_name == old_name) return &r;
  }
  return nullptr;
}

void FlagSet::Warn(const std::string& message) {
  warnings_.push_back(absl::StrCat(Prefix(), ": warning: ", message, "\n"));
}

std::string FlagSet::Apply(Flag* f, Rename* via, const std::string& value,
                           const std::string& origin, FlagSource source) {
  if (source == FlagSource::kCommandLine && f->source == FlagSource::kCommandLine) {
    // The same flag twice is fine (the last wins), but under its old and new names it is
    // almost certainly a half-migrated script.
    for (const Rename& r : renames_) {
      if (r.current == f->name && (via == nullptr) != (r.source == FlagSource::kDefault)) {
        return absl::StrCat("--", r.old_name, " and --", f->name,
                            " are the same flag (the first is its old name); give --", f->name,
                            " once");
      }
    }
  }
  std::string text = value;
  if (via != nullptr && !via->unit_suffix.empty()) {
    double n = 0;
    if (!ParseDouble(value, &n)) {
      return absl::StrCat(origin, ": '", value, "' is not a number (it counts ",
                          via->unit_suffix == "ms" ? "milliseconds" : "seconds", "; --", f->name,
                          " takes units, as 30s or 500ms)");
    }
    text = value + via->unit_suffix;
  }
  pending_warning_.clear();
  const std::string err = f->set(text);
  if (!err.empty()) return absl::StrCat(origin, ": ", err);
  if (via != nullptr) {
    const std::string now = source == FlagSource::kEnvironment ? EnvName(f->name)
                                                              : absl::StrCat("--", f->name);
    Warn(absl::StrCat(origin, " is renamed ", now,
                      "; the old name will be removed in the next release"));
    via->source = source;
  }
  if (!pending_warning_.empty()) Warn(absl::StrCat(origin, ": ", pending_warning_));
  pending_warning_.clear();
  f->source = source;
  return "";
}

void FlagSet::SetValueHint(const std::string& name, std::string hint) {
  if (Flag* f = Find(name)) f->value_hint = std::move(hint);
}

void FlagSet::PrintError(const std::string& message) const {
  std::fprintf(stderr, "%s: error: %s\n", Prefix().c_str(), message.c_str());
}

std::string FlagSet::Usage() const {
  std::string out = absl::StrCat("usage: ", Prefix(), " [flags]\n\n", summary_, "\n\nflags:\n");
  for (const Flag& f : flags_) {
    std::string left = absl::StrCat("  --", f.name);
    if (!f.is_bool) absl::StrAppend(&left, " ", f.value_hint);
    if (left.size() < 30) left.resize(30, ' ');
    absl::StrAppend(&out, left, " ", f.help);
    std::vector<std::string> notes;
    if (f.required) {
      notes.push_back("required");
    } else if (!f.default_text.empty()) {
      notes.push_back(absl::StrCat("default ", f.default_text));
    }
    if (!env_prefix_.empty()) notes.push_back(absl::StrCat("env ", EnvName(f.name)));
    if (!notes.empty()) absl::StrAppend(&out, " (", absl::StrJoin(notes, "; "), ")");
    absl::StrAppend(&out, "\n");
  }
  std::string help_left = "  --help";
  help_left.resize(30, ' ');
  absl::StrAppend(&out, help_left, " print this help\n");
  return out;
}

ParseOutcome FlagSet::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(Usage().c_str(), stdout);
      return ParseOutcome::kHelp;
    }
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
      PrintError(absl::StrCat("unexpected argument '", arg, "' (flags start with --)"));
      return ParseOutcome::kError;
    }
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    Flag* f = Find(name);
    Rename* via = f == nullptr ? FindRename(name) : nullptr;
    if (via != nullptr) f = Find(via->current);
    if (f == nullptr) {
      PrintError(absl::StrCat("unknown flag --", name, " (see ", Prefix(), " --help)"));
      return ParseOutcome::kError;
    }
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (f->is_bool) {
      value = "true";
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      PrintError(absl::StrCat("flag --", name, " needs a value"));
      return ParseOutcome::kError;
    }
    const std::string err =
        Apply(f, via, value, absl::StrCat("--", name), FlagSource::kCommandLine);
    if (!err.empty()) {
      PrintError(err);
      return ParseOutcome::kError;
    }
  }
  // Environment twins fill in only what the command line left alone, so a flag always wins
  // and a stale variable shadowed by a flag cannot fail the start.
  // Current names first, then old ones, so a variable under the new name wins.
  if (!env_prefix_.empty()) {
    for (Flag& f : flags_) {
      if (f.source != FlagSource::kDefault) continue;
      const std::string var = EnvName(f.name);
      const std::optional<std::string> value = env_lookup_ ? env_lookup_(var) : std::nullopt;
      if (!value.has_value() || value->empty()) continue;
      const std::string err = Apply(&f, nullptr, *value, absl::StrCat("environment variable ", var),
                                    FlagSource::kEnvironment);
      if (!err.empty()) {
        PrintError(err);
        return ParseOutcome::kError;
      }
    }
    for (Rename& r : renames_) {
      Flag* f = Find(r.current);
      if (f == nullptr || f->source != FlagSource::kDefault) continue;
      const std::string var = EnvName(r.old_name);
      const std::optional<std::string> value = env_lookup_ ? env_lookup_(var) : std::nullopt;
      if (!value.has_value() || value->empty()) continue;
      const std::string err = Apply(f, &r, *value, absl::StrCat("environment variable ", var),
                                    FlagSource::kEnvironment);
      if (!err.empty()) {
        PrintError(err);
        return ParseOutcome::kError;
      }
    }
  }
  for (const Flag& f : flags_) {
    if (f.required && f.source == FlagSource::kDefault) {
      PrintError(absl::StrCat("missing required flag --", f.name));
      return ParseOutcome::kError;
    }
  }
  for (const std::string& w : warnings_) std::fputs(w.c_str(), stderr);
  warnings_.clear();
  return ParseOutcome::kOk;
}

bool FlagSet::WasSet(const std::string& name) const { return Source(name) != FlagSource::kDefault; }

FlagSource FlagSet::Source(const std::string& name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return f.source;
  }
  return FlagSource::kDefault;
}

}  // namespace xlstmd::base
