// One persistent pool for every kernel call. The calling thread works too, so a
// pool of n threads owns n-1 workers. Workers spin briefly after a job (decode
// calls come back-to-back) and then sleep on a condition variable.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lutlm {

// The most threads LUTLM_NUM_THREADS and `lutlm --threads` accept: 4 x the logical CPUs.
// More only oversubscribes the cores; a value above it is taken for a typo.
int max_num_threads();

class ThreadPool {
 public:
  // The pool, created on first use with n threads when n >= 1, else LUTLM_NUM_THREADS or
  // the physical cores. Throws std::invalid_argument for a malformed LUTLM_NUM_THREADS.
  static ThreadPool& instance(int n = 0);
  ~ThreadPool();

  int num_threads() const { return (int)workers_.size() + 1; }
  void set_num_threads(int n);  // n >= 1

  // Runs fn(task) for task in [0, num_tasks) across the pool; returns when all are done.
  void parallel_for(int num_tasks, const std::function<void(int)>& fn);

 private:
  explicit ThreadPool(int n);
  void start(int n);
  void stop();
  void worker_loop(uint64_t seen);
  void run_tasks();

  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> busy_{0};
  std::atomic<int> next_task_{0};
  std::atomic<bool> stopping_{false};
  const std::function<void(int)>* fn_ = nullptr;
  int num_tasks_ = 0;
};

}  // namespace lutlm
