// libFuzzer builds: `XLSTMD_FUZZ_WRITE_SEEDS=DIR target` writes the target's seeds into DIR
// (seed-<n>) and exits, so scripts/fuzz.sh can start each run from a real corpus.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  const char* dir = std::getenv("XLSTMD_FUZZ_WRITE_SEEDS");
  if (dir == nullptr || *dir == '\0') return 0;
  const std::vector<std::string> seeds = xlstmd::fuzz::FuzzSeeds();
  for (size_t i = 0; i < seeds.size(); ++i) {
    const std::string path = std::string(dir) + "/seed-" + std::to_string(i);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(seeds[i].data(), static_cast<std::streamsize>(seeds[i].size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      std::exit(1);
    }
  }
  std::fprintf(stderr, "wrote %zu seeds to %s\n", seeds.size(), dir);
  std::exit(0);
}
