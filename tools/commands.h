// The subcommands of the `xlstm` tool. Each takes (argc, argv) with argv[0] = the subcommand
// name and returns the process exit code: 0 success (or --help), 1 runtime failure (one line
// with the absl::Status message on stderr), 2 flag validation error (one line on stderr).
#ifndef XLSTMD_TOOLS_COMMANDS_H_
#define XLSTMD_TOOLS_COMMANDS_H_

#include "core/base/flags.h"

namespace xlstmd::tools {

using base::FlagSet;
using base::ParseDouble;
using base::ParseInt64;
using base::ParseOutcome;

inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;
inline constexpr int kExitUsage = 2;

// Parses a subcommand's flags. Returns the exit code to stop with (kExitOk after --help,
// kExitUsage after a flag error, both already reported) or -1 to go on.
inline int ParseOrExitCode(FlagSet& flags, int argc, char** argv) {
  switch (flags.Parse(argc, argv)) {
    case ParseOutcome::kHelp:
      return kExitOk;
    case ParseOutcome::kError:
      return kExitUsage;
    case ParseOutcome::kOk:
      break;
  }
  return -1;
}

int RunMkmodel(int argc, char** argv);
int RunScore(int argc, char** argv);
int RunGenerate(int argc, char** argv);
int RunBench(int argc, char** argv);
int RunBenchState(int argc, char** argv);
int RunTokenize(int argc, char** argv);
int RunDetokenize(int argc, char** argv);
int RunQuality(int argc, char** argv);
int RunQuantize(int argc, char** argv);
// gRPC clients of a running xlstmd (cmd_chat.cc, cmd_loadgen.cc).
int RunChat(int argc, char** argv);
int RunLoadgen(int argc, char** argv);
// Session management and model info of a running xlstmd (cmd_sessions.cc).
int RunSessions(int argc, char** argv);
int RunInfo(int argc, char** argv);
// grpc.health.v1 Check of a running xlstmd, for HEALTHCHECKs (cmd_health.cc).
int RunHealth(int argc, char** argv);
// `xlstm --version` (version.cc): version, git commit, build type, compiled backends.
int RunVersion();

}  // namespace xlstmd::tools

#endif  // XLSTMD_TOOLS_COMMANDS_H_
