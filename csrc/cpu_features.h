// Run-time CPU feature detection and selection of the kernel table.
#pragma once
#include <string>
#include <vector>

#include "kernels.h"

namespace lutlm {

struct CpuInfo {
  std::string arch;   // "x86_64" or "aarch64"
  std::string model;  // brand string where the OS tells it
  std::vector<std::string> features;  // SIMD features relevant to lutlm's kernels
  int physical_cores = 1;
  int logical_cpus = 1;
};

const CpuInfo& cpu_info();

// ISAs whose kernels are compiled in and supported by this CPU, best first.
std::vector<std::string> available_isas();

// The kernel table in use. Chosen at first use: LUTLM_ISA if set, else the best.
const IsaKernels& active_kernels();

// "auto" or a name from available_isas(); throws std::invalid_argument otherwise.
void set_isa(const std::string& name);

}  // namespace lutlm
