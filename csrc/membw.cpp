// Read-bandwidth probe: the ceiling for memory-bound GEMV, measured in the same
// run as the kernels it is compared with.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ops.h"
#include "thread_pool.h"

namespace lutlm {

double read_bandwidth_gbps(int64_t bytes, int reps) {
  ThreadPool& pool = ThreadPool::instance();
  const int threads = pool.num_threads();
  const int64_t words = bytes / 8 / threads / 8 * 8;  // per thread, multiple of 8
  std::vector<std::vector<uint64_t>> bufs(threads);
  pool.parallel_for(threads, [&](int t) {  // first touch by the reading thread
    bufs[t].assign(words, (uint64_t)t + 1);
  });
  std::vector<uint64_t> sink(threads * 8);
  auto run = [&] {
    pool.parallel_for(threads, [&](int t) {
      const uint64_t* p = bufs[t].data();
      uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
      for (int r = 0; r < reps; ++r)
        for (int64_t i = 0; i < words; i += 8) {
          a0 += p[i]; a1 += p[i + 1]; a2 += p[i + 2]; a3 += p[i + 3];
          a4 += p[i + 4]; a5 += p[i + 5]; a6 += p[i + 6]; a7 += p[i + 7];
        }
      sink[t * 8] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    });
  };
  run();  // warm up page tables and the pool
  const auto t0 = std::chrono::steady_clock::now();
  run();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile uint64_t keep = sink[0];
  (void)keep;
  return (double)words * 8 * threads * reps / secs / 1e9;
}

}  // namespace lutlm
