#include "cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>

namespace lutlm {
namespace {

bool has_feature(const CpuInfo& info, const char* f) {
  for (const auto& s : info.features)
    if (s == f) return true;
  return false;
}

// Physical cores = distinct (package, core) pairs in sysfs; SMT siblings share one.
int count_physical_cores(int logical) {
  std::set<std::pair<int, int>> cores;
  for (int cpu = 0; cpu < logical; ++cpu) {
    const std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream pkg(base + "physical_package_id"), core(base + "core_id");
    int p = 0, c = 0;
    if (!(pkg >> p) || !(core >> c)) return logical;
    cores.insert({p, c});
  }
  return cores.empty() ? logical : (int)cores.size();
}

std::string read_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0 || line.rfind("Model", 0) == 0) {
      auto pos = line.find(':');
      if (pos != std::string::npos) return line.substr(pos + 2);
    }
  }
  return "unknown";
}

CpuInfo detect() {
  CpuInfo info;
  info.logical_cpus = (int)std::thread::hardware_concurrency();
  if (info.logical_cpus < 1) info.logical_cpus = 1;
  info.physical_cores = count_physical_cores(info.logical_cpus);
  info.model = read_model_name();
#if defined(__x86_64__)
  info.arch = "x86_64";
  __builtin_cpu_init();
  const std::pair<const char*, bool> feats[] = {
      {"sse4.2", __builtin_cpu_supports("sse4.2")},
      {"avx", __builtin_cpu_supports("avx")},
      {"avx2", __builtin_cpu_supports("avx2")},
      {"fma", __builtin_cpu_supports("fma")},
      {"f16c", __builtin_cpu_supports("f16c")},
      {"avx512f", __builtin_cpu_supports("avx512f")},
      {"avx512bw", __builtin_cpu_supports("avx512bw")},
      {"avx512vl", __builtin_cpu_supports("avx512vl")},
      {"avx512vnni", __builtin_cpu_supports("avx512vnni")},
  };
  for (const auto& f : feats)
    if (f.second) info.features.push_back(f.first);
#elif defined(__aarch64__)
  info.arch = "aarch64";
  info.features.push_back("neon");
#else
  info.arch = "other";
#endif
  return info;
}

const IsaKernels* kernels_by_name(const std::string& name) {
  if (name == "scalar") return &kScalarKernels;
#if defined(LUTLM_HAVE_AVX2)
  if (name == "avx2") return &kAvx2Kernels;
  if (name == "avx512") return &kAvx512Kernels;
#endif
#if defined(LUTLM_HAVE_NEON)
  if (name == "neon") return &kNeonKernels;
#endif
  return nullptr;
}

const IsaKernels* choose(const std::string& name) {
  const auto avail = available_isas();
  const std::string pick = name == "auto" ? avail.front() : name;
  for (const auto& a : avail)
    if (a == pick) return kernels_by_name(pick);
  std::string msg = "ISA '" + name + "' is not available on this CPU; choose one of: auto";
  for (const auto& a : avail) msg += ", " + a;
  throw std::invalid_argument(msg);
}

std::atomic<const IsaKernels*> g_active{nullptr};

}  // namespace

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  const CpuInfo& info = cpu_info();
#if defined(LUTLM_HAVE_AVX2)
  // libgcc's feature bits already require the OS to save the YMM/ZMM state.
  const bool avx2 = has_feature(info, "avx2") && has_feature(info, "fma") && has_feature(info, "f16c");
  if (avx2 && has_feature(info, "avx512f") && has_feature(info, "avx512bw") &&
      has_feature(info, "avx512vl") && has_feature(info, "avx512vnni"))
    out.push_back("avx512");
  if (avx2) out.push_back("avx2");
#endif
#if defined(LUTLM_HAVE_NEON)
  if (has_feature(info, "neon")) out.push_back("neon");
#endif
  (void)info;
  out.push_back("scalar");
  return out;
}

const IsaKernels& active_kernels() {
  const IsaKernels* k = g_active.load(std::memory_order_acquire);
  if (!k) {
    const char* env = std::getenv("LUTLM_ISA");
    k = choose(env && *env ? env : "auto");
    g_active.store(k, std::memory_order_release);
  }
  return *k;
}

void set_isa(const std::string& name) { g_active.store(choose(name), std::memory_order_release); }

}  // namespace lutlm
