// What this binary was built from: the project version and the git commit (12 hex digits,
// "-dirty" when the tree had uncommitted changes, "unknown" outside a git checkout). Written
// at build time by cmake/build_info.cmake.
#ifndef XLSTMD_SERVER_BUILD_INFO_H_
#define XLSTMD_SERVER_BUILD_INFO_H_

namespace xlstmd::server {

extern const char kBuildVersion[];
extern const char kBuildCommit[];
extern const char kBuildType[];  // CMAKE_BUILD_TYPE

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_BUILD_INFO_H_
