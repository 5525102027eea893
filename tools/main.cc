// `xlstm`: the companion tool of xlstmd. Dispatches `xlstm <subcommand> [flags]`.
#include <cstdio>
#include <cstring>

#include "tools/commands.h"

namespace xlstmd::tools {
namespace {

struct Subcommand {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);
};

constexpr Subcommand kSubcommands[] = {
    {"mkmodel", "write a model directory (family A or B) with random weights", RunMkmodel},
    {"score", "run a token sequence; write logits and final state to safetensors", RunScore},
    {"generate", "greedy generation from a prompt of token ids", RunGenerate},
    {"bench", "measure hardware limits, decode and prefill throughput (JSON lines)", RunBench},
    {"bench-state", "measure state restore/spill per tier vs memcpy and file I/O (JSON)",
     RunBenchState},
    {"quantize", "write an int8 or q4 copy of a checkpoint (served as stored)", RunQuantize},
    {"quality", "compare quantized weights' logits and perplexity with the float model", RunQuality},
    {"tokenize", "encode text (or JSON lines) to token ids", RunTokenize},
    {"detokenize", "decode token ids to text", RunDetokenize},
    {"chat", "interactive streaming chat with a running xlstmd", RunChat},
    {"loadgen", "drive a running xlstmd with concurrent multi-turn sessions (JSON)", RunLoadgen},
    {"sessions", "list, get, delete, fork, rewind, export or import sessions of an xlstmd",
     RunSessions},
    {"info", "the model a running xlstmd serves (dimensions, state size, backend)", RunInfo},
    {"health", "exit 0 when a running xlstmd serves (grpc.health.v1; for HEALTHCHECKs)",
     RunHealth},
};

void PrintUsage(std::FILE* out) {
  std::fputs("usage: xlstm <subcommand> [flags]\n\nsubcommands:\n", out);
  for (const Subcommand& s : kSubcommands) std::fprintf(out, "  %-12s %s\n", s.name, s.summary);
  std::fputs("\nRun `xlstm <subcommand> --help` for its flags; `xlstm --version` prints the\n"
             "version, git commit, build type and compiled backends.\n",
             out);
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs("xlstm: error: missing subcommand (see xlstm --help)\n", stderr);
    return kExitUsage;
  }
  const char* cmd = argv[1];
  if (std::strcmp(cmd, "--help") == 0 || std::strcmp(cmd, "-h") == 0 ||
      std::strcmp(cmd, "help") == 0) {
    PrintUsage(stdout);
    return kExitOk;
  }
  if (std::strcmp(cmd, "--version") == 0) return RunVersion();
  for (const Subcommand& s : kSubcommands) {
    if (std::strcmp(cmd, s.name) == 0) return s.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "xlstm: error: unknown subcommand '%s' (see xlstm --help)\n", cmd);
  return kExitUsage;
}

}  // namespace
}  // namespace xlstmd::tools

int main(int argc, char** argv) { return xlstmd::tools::Main(argc, argv); }
