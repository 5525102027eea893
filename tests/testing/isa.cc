#include "tests/testing/isa.h"

#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"

namespace xlstmd::testing {
namespace {

using kernels::cpu::Isa;

bool CpuHas(Isa isa) {
  const kernels::cpu::CpuFeatures f = kernels::cpu::DetectCpuFeatures();
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return f.avx2_fma;
    case Isa::kAvx512:
      return f.avx512;
  }
  return false;
}

// Registered in every test binary that links this file's object (the kernel and golden suites
// reference TestIsas or IsaSkipReason): skips all tests of a run whose ISA cannot be tested.
class IsaEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const std::string reason = IsaSkipReason();
    if (!reason.empty()) GTEST_SKIP() << reason;
  }
};

const bool kRegistered = [] {
  ::testing::AddGlobalTestEnvironment(new IsaEnvironment);
  return true;
}();

}  // namespace

std::vector<Isa> TestIsas() {
  (void)kRegistered;
  Isa requested;
  if (kernels::cpu::IsaCap(&requested)) {
    if (!CpuHas(requested)) return {};
    return {requested};
  }
  std::vector<Isa> isas;
  for (Isa each : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (CpuHas(each)) isas.push_back(each);
  }
  return isas;
}

std::string IsaSkipReason() {
  const char* v = std::getenv("XLSTMD_CPU_ISA");
  if (v == nullptr || *v == '\0') return "";
  Isa requested;
  if (!kernels::cpu::IsaCap(&requested)) {
    return std::string("XLSTMD_CPU_ISA=") + v + " is not one of avx512, avx2, scalar";
  }
  if (CpuHas(requested)) return "";
  return std::string("XLSTMD_CPU_ISA=") + v + ": this CPU lacks " +
         kernels::cpu::IsaName(requested) + " (its best is " +
         kernels::cpu::IsaName(kernels::cpu::SelectIsa()) + "), so these tests did not run here";
}

}  // namespace xlstmd::testing
