// The contract between a fuzz target and its two drivers.
//
// Each tests/fuzz/*_fuzz.cc defines LLVMFuzzerTestOneInput (the libFuzzer entry point: it
// must accept any bytes without crashing, leaking or hanging) and FuzzSeeds (valid and
// near-valid inputs built from the project's own test knowledge and ../shared/golden).
//   - clang fuzz builds (XLSTMD_FUZZ=ON) link libFuzzer; seed_writer.cc writes FuzzSeeds()
//     into a corpus directory when XLSTMD_FUZZ_WRITE_SEEDS names one (scripts/fuzz.sh).
//   - every other build links replay_main.cc instead: ctest replays the seeds and every
//     input under tests/fuzz/regressions/<target>/ (crashes found once stay fixed).
#ifndef XLSTMD_TESTS_FUZZ_FUZZ_TARGET_H_
#define XLSTMD_TESTS_FUZZ_FUZZ_TARGET_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace xlstmd::fuzz {

std::vector<std::string> FuzzSeeds();

// The bytes of a file under ../shared (XLSTMD_SHARED_DIR), or "" when it cannot be read: a
// missing seed weakens a corpus but is no reason to stop fuzzing.
std::string SharedFile(const std::string& relative_path);

}  // namespace xlstmd::fuzz

#endif  // XLSTMD_TESTS_FUZZ_FUZZ_TARGET_H_
