// Paged KV cache: writing new keys/values into their slots, and causal attention of
// a flat batch of queries over the cache (decode and prefill alike).
//
// Cache layout per layer: [num_blocks, block_size, n_kv_heads, head_dim] fp16.
// Sequence s owns the blocks block_tables[s][0..]; its token at position p lives in
// block block_tables[s][p / block_size], slot p % block_size. Query j of sequence s
// (0 <= j < q_len) sits at position ctx_len - q_len + j and attends to positions
// 0..itself, which is what makes chunked prefill and prefix caching work: the prefix
// is simply already in the cache.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_features.h"
#include "kernels.h"
#include "ops.h"
#include "thread_pool.h"

namespace lutlm {

namespace {

// Queries per task: a long prefill splits into many tasks so every thread gets work;
// each task converts the K/V blocks it reads to fp32 once for all its queries.
constexpr int kQueriesPerTask = 32;

}  // namespace

void write_kv_cache(const float* k, const float* v, const int32_t* slots, int64_t T,
                    int64_t row, uint16_t* k_cache, uint16_t* v_cache) {
  const IsaKernels& kern = active_kernels();
  for (int64_t t = 0; t < T; ++t) {
    if (slots[t] < 0) continue;  // padding token: nothing to store
    kern.fp32_to_fp16(k + t * row, k_cache + (int64_t)slots[t] * row, (int)row);
    kern.fp32_to_fp16(v + t * row, v_cache + (int64_t)slots[t] * row, (int)row);
  }
}

void paged_attention(const AttentionArgs& a, float* out) {
  const IsaKernels& kern = active_kernels();
  const int group = a.n_heads / a.n_kv_heads;
  const int64_t kv_row = (int64_t)a.n_kv_heads * a.head_dim;
  // Tasks: (sequence, kv head, chunk of queries); first_task[s] is sequence s's first.
  std::vector<int> first_task(a.num_seqs + 1, 0);
  for (int s = 0; s < a.num_seqs; ++s) {
    const int q_len = std::max(0, a.cu_q[s + 1] - a.cu_q[s]);
    const int chunks = (q_len + kQueriesPerTask - 1) / kQueriesPerTask;
    first_task[s + 1] = first_task[s] + chunks * a.n_kv_heads;
  }
  ThreadPool::instance().parallel_for(first_task[a.num_seqs], [&](int task) {
    const int s = (int)(std::upper_bound(first_task.begin(), first_task.end(), task) -
                        first_task.begin()) - 1;
    const int local = task - first_task[s];
    const int kvh = local % a.n_kv_heads, chunk = local / a.n_kv_heads;
    const int q0 = a.cu_q[s], q_len = a.cu_q[s + 1] - q0, ctx = a.ctx_lens[s];
    const int j0 = chunk * kQueriesPerTask, j1 = std::min(q_len, j0 + kQueriesPerTask);
    const int hd = a.head_dim, bs = a.block_size;
    const int64_t nq = (int64_t)(j1 - j0) * group;  // query rows of this task
    std::vector<float> m(nq, -std::numeric_limits<float>::infinity()), l(nq, 0.0f);
    std::vector<float> acc(nq * hd, 0.0f), kb((size_t)bs * hd), vb((size_t)bs * hd), p(bs);
    const int32_t* table = a.block_tables + (int64_t)s * a.max_blocks;
    const int last_pos = ctx - q_len + j1 - 1;  // causal: no query here sees beyond it
    for (int b = 0; b * bs <= last_pos; ++b) {
      const int64_t base = (int64_t)table[b] * bs * kv_row + (int64_t)kvh * hd;
      const int n = std::min(bs, ctx - b * bs);
      for (int i = 0; i < n; ++i) {
        kern.fp16_to_fp32(a.k_cache + base + i * kv_row, kb.data() + i * hd, hd);
        kern.fp16_to_fp32(a.v_cache + base + i * kv_row, vb.data() + i * hd, hd);
      }
      for (int j = j0; j < j1; ++j) {
        const int visible = std::min(n, ctx - q_len + j - b * bs + 1);
        if (visible <= 0) continue;
        for (int g = 0; g < group; ++g) {
          const int64_t r = (int64_t)(j - j0) * group + g;
          const float* qv = a.q + ((int64_t)(q0 + j) * a.n_heads + kvh * group + g) * hd;
          kern.dots_f32(qv, kb.data(), visible, hd, p.data());
          float bmax = -std::numeric_limits<float>::infinity();
          for (int i = 0; i < visible; ++i) bmax = std::max(bmax, p[i] *= a.scale);
          // Online softmax: what was accumulated is rescaled when the maximum grows.
          float* ar = acc.data() + r * hd;
          float corr = 1.0f;
          if (bmax > m[r]) {
            corr = exp_f32_step(m[r] - bmax);
            for (int d = 0; d < hd; ++d) ar[d] *= corr;
            m[r] = bmax;
          }
          for (int i = 0; i < visible; ++i) p[i] -= m[r];
          kern.exp_f32(p.data(), p.data(), visible);
          float sum = 0.0f;
          for (int i = 0; i < visible; ++i) sum += p[i];
          kern.axpys_f32(p.data(), vb.data(), visible, hd, ar);
          l[r] = l[r] * corr + sum;
        }
      }
    }
    for (int j = j0; j < j1; ++j)
      for (int g = 0; g < group; ++g) {
        const int64_t r = (int64_t)(j - j0) * group + g;
        float* o = out + ((int64_t)(q0 + j) * a.n_heads + kvh * group + g) * hd;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int d = 0; d < hd; ++d) o[d] = acc[r * hd + d] * inv;
      }
  });
}

}  // namespace lutlm
