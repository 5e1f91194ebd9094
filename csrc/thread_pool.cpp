#include "thread_pool.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "cpu_features.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define LUTLM_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define LUTLM_PAUSE() asm volatile("yield")
#else
#define LUTLM_PAUSE() ((void)0)
#endif

namespace lutlm {

namespace {
constexpr auto kSpinTime = std::chrono::microseconds(200);

// A bad value is an error, not a silent fallback: LUTLM_NUM_THREADS=abc (or 0, or 500 on
// a laptop) is a typo, and running with some other count hides it.
int default_threads() {
  const char* env = std::getenv("LUTLM_NUM_THREADS");
  if (env == nullptr || *env == '\0') return cpu_info().physical_cores;
  std::string text(env);
  const int max = max_num_threads();
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(env, &end, 10);
  while (end != nullptr && std::isspace((unsigned char)*end)) ++end;
  if (errno != 0 || end == env || *end != '\0' || n < 1 || n > max) {
    throw std::invalid_argument("LUTLM_NUM_THREADS=" + text + " is not a thread count: " +
                                "expected an integer from 1 to " + std::to_string(max) +
                                " (4 x the " + std::to_string(cpu_info().logical_cpus) +
                                " logical CPUs)");
  }
  return (int)n;
}
}  // namespace

int max_num_threads() { return 4 * std::max(1, cpu_info().logical_cpus); }

ThreadPool& ThreadPool::instance(int n) {
  // Initialized once; if default_threads() throws, the next call tries again.
  static ThreadPool pool(n >= 1 ? n : default_threads());
  return pool;
}

ThreadPool::ThreadPool(int n) { start(n); }
ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::start(int n) {
  stopping_ = false;
  // A worker must wait for the generation after the one current now, not after the
  // one current when its thread happens to start running.
  const uint64_t gen = generation_.load(std::memory_order_acquire);
  for (int i = 1; i < n; ++i) workers_.emplace_back([this, gen] { worker_loop(gen); });
}

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::set_num_threads(int n) {
  std::lock_guard<std::mutex> call(call_mu_);
  if (n == num_threads()) return;
  stop();
  start(n);
}

void ThreadPool::run_tasks() {
  for (int t = next_task_.fetch_add(1); t < num_tasks_; t = next_task_.fetch_add(1)) (*fn_)(t);
}

void ThreadPool::worker_loop(uint64_t seen) {
  for (;;) {
    auto until = std::chrono::steady_clock::now() + kSpinTime;
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen) {
      if (stopping_.load()) return;
      LUTLM_PAUSE();
      if (++spins % 64 == 0 && std::chrono::steady_clock::now() > until) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] {
          return stopping_.load() || generation_.load(std::memory_order_acquire) != seen;
        });
      }
    }
    seen = generation_.load(std::memory_order_acquire);
    run_tasks();
    busy_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(int num_tasks, const std::function<void(int)>& fn) {
  if (num_tasks <= 0) return;
  std::lock_guard<std::mutex> call(call_mu_);
  if (workers_.empty() || num_tasks == 1) {
    for (int t = 0; t < num_tasks; ++t) fn(t);
    return;
  }
  fn_ = &fn;
  num_tasks_ = num_tasks;
  next_task_.store(0);
  busy_.store((int)workers_.size());
  {
    std::lock_guard<std::mutex> lk(mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  run_tasks();
  // Workers are normally just behind; on an oversubscribed machine one may have been
  // descheduled, so stop burning the core it needs after a short spin.
  for (int spins = 0; busy_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 4096) {
      LUTLM_PAUSE();
    } else {
      std::this_thread::yield();
    }
  }
  fn_ = nullptr;
}

}  // namespace lutlm
