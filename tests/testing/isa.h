// The CPU instruction sets a kernel test runs its cases on, and the per-ISA ctest runs.
//
// ctest runs the kernel and golden suites once per ISA (tests/CMakeLists.txt: prefixes
// isa_avx512., isa_avx2., isa_scalar.) with XLSTMD_CPU_ISA set. In such a run the suites test
// exactly that ISA, and when the CPU lacks it IsaEnvironment skips every test saying so, so
// an untested ISA shows as skipped in the ctest summary instead of passing silently.
#ifndef XLSTMD_TESTS_TESTING_ISA_H_
#define XLSTMD_TESTS_TESTING_ISA_H_

#include <string>
#include <vector>

#include "kernels/cpu/cpu_features.h"

namespace xlstmd::testing {

// Without XLSTMD_CPU_ISA: every ISA this CPU runs, scalar first. With it: that ISA alone
// (empty when the CPU lacks it).
std::vector<kernels::cpu::Isa> TestIsas();

// "" when the tests can run as XLSTMD_CPU_ISA asks, else why not (an unknown value, or an ISA
// this CPU lacks).
std::string IsaSkipReason();

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_TESTING_ISA_H_
