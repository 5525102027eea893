#include "server/build_info.h"

// Generated into the build tree; only this file includes it, so a new commit recompiles
// one small file.
#include "xlstmd_build_info.h"

namespace xlstmd::server {

const char kBuildVersion[] = XLSTMD_VERSION;
const char kBuildCommit[] = XLSTMD_GIT_COMMIT;
const char kBuildType[] = XLSTMD_BUILD_TYPE;

}  // namespace xlstmd::server
