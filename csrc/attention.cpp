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
#include "ops.h"
#include "thread_pool.h"

namespace lutlm {

namespace {

inline float dot(const float* a, const float* b, int n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

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
  // One task per (sequence, kv head): the block's keys and values are converted to
  // fp32 once and serve every query head of the group and every query of the sequence.
  const int num_tasks = a.num_seqs * a.n_kv_heads;
  ThreadPool::instance().parallel_for(num_tasks, [&](int task) {
    const int s = task / a.n_kv_heads, kvh = task % a.n_kv_heads;
    const int q0 = a.cu_q[s], q_len = a.cu_q[s + 1] - q0;
    const int ctx = a.ctx_lens[s];
    if (q_len <= 0) return;
    const int hd = a.head_dim, bs = a.block_size;
    const int64_t nq = (int64_t)q_len * group;  // query rows handled by this task
    std::vector<float> m(nq, -std::numeric_limits<float>::infinity()), l(nq, 0.0f);
    std::vector<float> acc(nq * hd, 0.0f), kb((size_t)bs * hd), vb((size_t)bs * hd), p(bs);
    const int32_t* table = a.block_tables + (int64_t)s * a.max_blocks;
    const int num_blocks = (ctx + bs - 1) / bs;
    for (int b = 0; b < num_blocks; ++b) {
      const int64_t base = (int64_t)table[b] * bs * kv_row + (int64_t)kvh * hd;
      const int n = std::min(bs, ctx - b * bs);
      for (int i = 0; i < n; ++i) {
        kern.fp16_to_fp32(a.k_cache + base + i * kv_row, kb.data() + i * hd, hd);
        kern.fp16_to_fp32(a.v_cache + base + i * kv_row, vb.data() + i * hd, hd);
      }
      for (int j = 0; j < q_len; ++j) {
        const int pos = ctx - q_len + j;  // causal: keys at positions <= pos
        const int visible = std::min(n, pos - b * bs + 1);
        if (visible <= 0) continue;
        for (int g = 0; g < group; ++g) {
          const int h = kvh * group + g;
          const int64_t r = (int64_t)j * group + g;
          const float* qv = a.q + ((int64_t)(q0 + j) * a.n_heads + h) * hd;
          float bmax = -std::numeric_limits<float>::infinity();
          for (int i = 0; i < visible; ++i) {
            p[i] = dot(qv, kb.data() + i * hd, hd) * a.scale;
            bmax = std::max(bmax, p[i]);
          }
          // Online softmax: rescale what was accumulated once per block.
          const float m_new = std::max(m[r], bmax);
          const float corr = std::exp(m[r] - m_new);
          float* ar = acc.data() + r * hd;
          float sum = 0.0f;
          for (int d = 0; d < hd; ++d) ar[d] *= corr;
          for (int i = 0; i < visible; ++i) {
            const float e = std::exp(p[i] - m_new);
            sum += e;
            const float* vr = vb.data() + i * hd;
            for (int d = 0; d < hd; ++d) ar[d] += e * vr[d];
          }
          l[r] = l[r] * corr + sum;
          m[r] = m_new;
        }
      }
    }
    for (int j = 0; j < q_len; ++j)
      for (int g = 0; g < group; ++g) {
        const int64_t r = (int64_t)j * group + g;
        float* o = out + ((int64_t)(q0 + j) * a.n_heads + kvh * group + g) * hd;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int d = 0; d < hd; ++d) o[d] = acc[r * hd + d] * inv;
      }
  });
}

}  // namespace lutlm
