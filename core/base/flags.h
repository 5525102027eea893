// FlagSet: the tiny flag parser of the `xlstm` tool (CLI11 costs ~16 s per translation unit).
//
// Each subcommand declares its flags once — name, destination, default (the destination's
// initial value), range, help — then calls Parse. Accepted spellings: `--name value`,
// `--name=value`, and bare `--name` for boolean flags; `--help`/`-h` prints the usage.
// Validation failures (unknown flag, missing value, missing required flag, bad number,
// value out of range, positional argument) print exactly one line
// `xlstm <cmd>: error: ...` to stderr. Single-threaded; destinations must outlive Parse.
#ifndef XLSTMD_CORE_BASE_FLAGS_H_
#define XLSTMD_CORE_BASE_FLAGS_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace xlstmd::base {

enum class ParseOutcome {
  kOk,
  kHelp,   // usage printed to stdout: exit 0
  kError,  // one error line printed to stderr: exit 2
};

class FlagSet {
 public:
  // `command` is the subcommand name ("score"); `summary` one line for the usage text.
  FlagSet(std::string command, std::string summary);

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

  // argv[0] is the subcommand name; flags follow.
  ParseOutcome Parse(int argc, char** argv);
  // True when the flag appeared on the command line (after a successful Parse).
  bool WasSet(const std::string& name) const;

  // Prints `xlstm <cmd>: error: <message>` to stderr (for checks done after Parse).
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
    bool seen = false;
    // Parses and stores the value; returns an error message or "".
    std::function<std::string(const std::string&)> set;
  };
  Flag* Find(const std::string& name);
  void Add(Flag flag);

  std::string command_;
  std::string summary_;
  std::vector<Flag> flags_;
};

// Strict parsers shared with the subcommands: the whole string must be the number.
bool ParseInt64(const std::string& s, int64_t* out);
bool ParseDouble(const std::string& s, double* out);

}  // namespace xlstmd::base

#endif  // XLSTMD_CORE_BASE_FLAGS_H_
