// The runtime: CPU and kernel ISA, the thread pool, the LUT/MAD choice and the
// bandwidth probe that bench/ reads.
#include <pybind11/stl.h>

#include "bind_common.h"
#include "cpu_features.h"
#include "kernels.h"
#include "thread_pool.h"

namespace lutlm::bind {

void bind_runtime(py::module_& mod) {
  mod.def("cpu_info", [] {
    const CpuInfo& c = cpu_info();
    py::dict d;
    d["arch"] = c.arch;
    d["model"] = c.model;
    d["features"] = c.features;
    d["physical_cores"] = c.physical_cores;
    d["logical_cpus"] = c.logical_cpus;
    d["isa"] = std::string(active_kernels().name);
    d["available_isas"] = available_isas();
    d["num_threads"] = ThreadPool::instance().num_threads();
    d["lut_max_m"] = py::dict(py::arg("ternary") = lut_max_m(false), py::arg("int4") = lut_max_m(true));
    return d;
  }, "Detected CPU, kernel ISA in use, thread count and LUT/MAD crossover.");

  mod.def("set_isa", &set_isa, py::arg("name"),
          "Select the kernel ISA: 'auto' or one of cpu_info()['available_isas'].");
  mod.def("get_isa", [] { return std::string(active_kernels().name); });
  mod.def("set_num_threads", [](int n) {
    if (n < 1) fail("num_threads must be >= 1, got " + std::to_string(n));
    // Resizing waits for a kernel call in another thread to finish, then joins and
    // starts workers: not with the GIL held.
    py::gil_scoped_release nogil;
    // instance(n): a first call sets the count without reading LUTLM_NUM_THREADS.
    ThreadPool::instance(n).set_num_threads(n);
  }, py::arg("n"));
  mod.def("max_num_threads", &max_num_threads,
          "The most threads LUTLM_NUM_THREADS and `lutlm --threads` accept (4 x logical CPUs).");
  mod.def("get_num_threads", [] { return ThreadPool::instance().num_threads(); });
  mod.def("resolve_method", [](const std::string& method, int64_t M, bool int4) {
    return std::string(method_name(resolve_method(parse_method(method), M, int4)));
  }, py::arg("method"), py::arg("M"), py::arg("int4"));

  mod.def("read_bandwidth", [](int64_t bytes, int reps) {
    if (bytes < (1 << 20)) fail("bytes must be at least 1 MiB");
    if (reps < 1) fail("reps must be >= 1");
    py::gil_scoped_release nogil;
    return read_bandwidth_gbps(bytes, reps);
  }, py::arg("bytes"), py::arg("reps") = 3, "Read bandwidth in GB/s over `bytes` with all threads.");
}

}  // namespace lutlm::bind
