// FlagSet: the tiny flag parser of the `xlstm` tool and the `xlstmd` daemon (CLI11 costs
// ~16 s per translation unit).
//
// Each command declares its flags once — name, destination, default (the destination's
// initial value), range, help — then calls Parse. Accepted spellings: `--name value`,
// `--name=value`, and bare `--name` for boolean flags; `--help`/`-h` prints the usage.
// Validation failures (unknown flag, missing value, missing required flag, bad number,
// value out of range, positional argument) print exactly one line
// `<program> [<cmd>]: error: ...` to stderr (`xlstm score: error: ...` for the tool).
//
// Environment twins (the daemon's, off by default): with an env prefix set, every flag
// `--foo-bar` also reads `<PREFIX>FOO_BAR`. Precedence: command line > environment >
// default. An empty variable counts as unset; a variable whose flag is given on the command
// line is not read at all. A bad value is one error line naming the variable.
//
// Durations always carry a unit ("30s", "500ms", "10m", "1h30m"; "0" needs none). Renamed
// flags keep their old spelling for one release as a hidden alias that still works (and
// still reads its old environment variable) but prints a warning naming the new flag.
// Single-threaded; destinations must outlive Parse.
#ifndef XLSTMD_CORE_BASE_FLAGS_H_
#define XLSTMD_CORE_BASE_FLAGS_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace xlstmd::base {

enum class ParseOutcome {
  kOk,
  kHelp,   // usage printed to stdout: exit 0
  kError,  // one error line printed to stderr: exit 2
};

// Where a flag's value came from (after Parse).
enum class FlagSource { kDefault, kEnvironment, kCommandLine };

// Reads one environment variable; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
// The process environment (getenv).
std::optional<std::string> GetEnv(const std::string& name);

class FlagSet {
 public:
  // `command` is the subcommand name ("score"), or "" for a program without subcommands;
  // `summary` one line for the usage text. The program name defaults to "xlstm".
  FlagSet(std::string command, std::string summary);

  // The program named in usage and error lines ("xlstmd").
  void set_program(std::string program) { program_ = std::move(program); }
  // Turns on environment twins: `--foo-bar` reads `<prefix>FOO_BAR` (see the file comment).
  // `lookup` replaces getenv (tests).
  void EnableEnvTwins(std::string prefix, EnvLookup lookup = GetEnv);
  // The environment variable of flag `name` ("" when env twins are off).
  std::string EnvName(const std::string& name) const;
  // Whether environment variable `var` is the twin of a flag (or of a flag's old name).
  bool IsEnvTwin(const std::string& var) const;

  void String(const std::string& name, std::string* dst, const std::string& help,
              bool required = false);
  // One of `choices`.
  void Choice(const std::string& name, std::string* dst, std::vector<std::string> choices,
              const std::string& help);
  void Int(const std::string& name, int64_t* dst, int64_t min, int64_t max, const std::string& help,
           bool required = false);
  void Double(const std::string& name, double* dst, double min, double max, const std::string& help,
              bool required = false);
  // Comma-separated integers, each in [min, max]; at least one.
  void IntList(const std::string& name, std::vector<int64_t>* dst, int64_t min, int64_t max,
               const std::string& help, bool required = false);
  void Bool(const std::string& name, bool* dst, const std::string& help);
  // A duration stored as a whole number of `unit` in [min, max] (in that unit): "1500ms" is
  // refused for a seconds flag rather than rounded. The usage shows the default with a unit.
  enum class Unit { kMilliseconds, kSeconds };
  void Duration(const std::string& name, int64_t* dst, Unit unit, int64_t min, int64_t max,
                const std::string& help);
  // A duration stored as (fractional) seconds in [min, max].
  void DurationSeconds(const std::string& name, double* dst, double min, double max,
                       const std::string& help);
  // `old_name` becomes a hidden alias of the declared flag `current`, with a warning on use.
  // `unit_suffix` ("s", "ms") is appended to the old flag's bare number, for old duration
  // flags whose name carried the unit (`--idle-ttl-s 30` = `--idle-ttl 30s`).
  void Renamed(const std::string& old_name, const std::string& current,
               const std::string& unit_suffix = "");
  // Replaces the placeholder shown for a declared flag's value in the usage ("STR" -> "DIR").
  void SetValueHint(const std::string& name, std::string hint);

  // argv[0] is the subcommand (or program) name; flags follow.
  ParseOutcome Parse(int argc, char** argv);
  // True when the flag was given on the command line or through its environment twin
  // (after a successful Parse).
  bool WasSet(const std::string& name) const;
  FlagSource Source(const std::string& name) const;

  // Prints `<program> [<cmd>]: error: <message>` to stderr (for checks done after Parse).
  void PrintError(const std::string& message) const;
  std::string Usage() const;

 private:
  struct Flag {
    std::string name;
    std::string help;
    std::string value_hint;  // "" for boolean flags
    std::string default_text;
    bool required = false;
    bool is_bool = false;
    FlagSource source = FlagSource::kDefault;
    // Parses and stores the value; returns "" or an error message without the flag's name
    // ("'x' is not an integer"): the caller prefixes `--name: ` or the variable's name.
    std::function<std::string(const std::string&)> set;
  };
  // A hidden old spelling of a flag, and the unit its bare number counted ("" if none).
  struct Rename {
    std::string old_name;
    std::string current;
    std::string unit_suffix;
    FlagSource source = FlagSource::kDefault;
  };
  Flag* Find(const std::string& name);
  void Add(Flag flag);
  Rename* FindRename(const std::string& old_name);
  // Sets `f` from `value` (from `origin`: "--name" or a variable's name), reached through its
  // old name `via` (or nullptr). Returns "" or the error line's text.
  std::string Apply(Flag* f, Rename* via, const std::string& value, const std::string& origin,
                    FlagSource source);
  // Queues a warning; Parse prints them only when it succeeds, so an error stays one line.
  void Warn(const std::string& message);
  // "xlstm score" or "xlstmd".
  std::string Prefix() const;

  std::string program_ = "xlstm";
  std::string command_;
  std::string summary_;
  std::string env_prefix_;  // "" = no environment twins
  EnvLookup env_lookup_;
  std::vector<Flag> flags_;
  std::vector<Rename> renames_;
  std::vector<std::string> warnings_;
  std::string pending_warning_;  // set by a setter (a bare-number duration), said by Apply
};

// Strict parsers shared with the subcommands: the whole string must be the number.
bool ParseInt64(const std::string& s, int64_t* out);
bool ParseDouble(const std::string& s, double* out);
// A duration with units ("1h30m", "250ms", "0.5s"; "0" alone needs none) in milliseconds,
// rounded to the nearest one. Units: ms, s, m, h. A bare number other than 0 is not a
// duration (`bare_number` is set so callers can say what to write instead).
bool ParseDurationMs(const std::string& s, double* ms, bool* bare_number = nullptr);
// The shortest exact spelling of `ms` milliseconds: "0", "250ms", "30s", "10m", "2h".
std::string FormatDurationMs(int64_t ms);

}  // namespace xlstmd::base

#endif  // XLSTMD_CORE_BASE_FLAGS_H_
