// Builds without libFuzzer: runs the target over its seeds and over every file named on the
// command line (directories are walked), as a regression test. Exit 0 when every input
// returned; a crash is the failure.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/fuzz/fuzz_target.h"

namespace {

void Run(const std::string& bytes) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace

int main(int argc, char** argv) {
  size_t inputs = 0;
  for (const std::string& seed : xlstmd::fuzz::FuzzSeeds()) {
    Run(seed);
    ++inputs;
  }
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(argv[i], ec)) {
      for (const auto& entry : std::filesystem::recursive_directory_iterator(argv[i])) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
    } else {
      files.emplace_back(argv[i]);
    }
    for (const auto& path : files) {
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        std::fprintf(stderr, "cannot read %s\n", path.c_str());
        return 2;
      }
      std::ostringstream bytes;
      bytes << in.rdbuf();
      std::fprintf(stderr, "replaying %s\n", path.c_str());
      Run(bytes.str());
      ++inputs;
    }
  }
  std::printf("%zu inputs replayed without a crash\n", inputs);
  return 0;
}
