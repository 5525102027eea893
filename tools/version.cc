// `xlstm --version`: the same facts as `xlstmd --version`, from the same generated header.
#include <cstdio>
#include <string>

#include "absl/strings/str_join.h"
#include "kernels/backend_registry.h"
#include "tools/commands.h"
#include "xlstmd_build_info.h"

namespace xlstmd::tools {

int RunVersion() {
  std::printf("xlstm %s (commit %s, %s build, backends: %s)\n", XLSTMD_VERSION,
              XLSTMD_GIT_COMMIT, XLSTMD_BUILD_TYPE,
              absl::StrJoin(kernels::CompiledBackends(), ", ").c_str());
  return kExitOk;
}

}  // namespace xlstmd::tools
