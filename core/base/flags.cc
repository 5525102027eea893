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
    const std::string err = f->set(value);
    if (!err.empty()) {
      PrintError(absl::StrCat("--", name, ": ", err));
      return ParseOutcome::kError;
    }
    f->source = FlagSource::kCommandLine;
  }
  // Environment twins fill in only what the command line left alone, so a flag always wins
  // and a stale variable shadowed by a flag cannot fail the start.
  if (!env_prefix_.empty()) {
    for (Flag& f : flags_) {
      if (f.source == FlagSource::kCommandLine) continue;
      const std::string var = EnvName(f.name);
      const std::optional<std::string> value = env_lookup_ ? env_lookup_(var) : std::nullopt;
      if (!value.has_value() || value->empty()) continue;
      const std::string err = f.set(*value);
      if (!err.empty()) {
        PrintError(absl::StrCat("environment variable ", var, ": ", err));
        return ParseOutcome::kError;
      }
      f.source = FlagSource::kEnvironment;
    }
  }
  for (const Flag& f : flags_) {
    if (f.required && f.source == FlagSource::kDefault) {
      PrintError(absl::StrCat("missing required flag --", f.name));
      return ParseOutcome::kError;
    }
  }
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
