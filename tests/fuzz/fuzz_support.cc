#include <cstdlib>
#include <fstream>
#include <sstream>

#include "tests/fuzz/fuzz_target.h"

namespace xlstmd::fuzz {

std::string SharedFile(const std::string& relative_path) {
  const char* env = std::getenv("XLSTMD_SHARED_DIR");
  const std::string dir = env != nullptr && *env != '\0' ? env : XLSTMD_SHARED_DIR;
  std::ifstream in(dir + "/" + relative_path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return in ? out.str() : std::string();
}

}  // namespace xlstmd::fuzz
