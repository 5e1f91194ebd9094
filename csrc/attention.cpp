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

// Tasks are (sequence, run of queries, run of keys): queries in runs of kQueriesPerTask,
// keys in runs of kKeysPerSplit, each task a partial softmax, merged in key order.
// The split points are fixed positions, so a query's result depends only on its own
// sequence: not on the batch, how the prompt was chunked, or the thread count.
constexpr int kQueriesPerTask = 32;
constexpr int kKeysPerSplit = 512;

struct Task {
  int seq, j0, j1;   // queries j0..j1-1 of the sequence
  int key0, key1;    // key positions key0..key1-1 (before the causal cut)
  int64_t partial;   // first row of this task's partial results
};

struct QueryRun {
  int seq, j0, j1;
  size_t first_task, num_tasks;  // its key splits, in key order
};

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

void qkv_rope_cache(const float* qkv, int64_t T, int64_t n_heads, int64_t n_kv_heads,
                    int64_t head_dim, const int64_t* positions, const float* inv_freq,
                    bool interleaved, const int32_t* slots, uint16_t* k_cache,
                    uint16_t* v_cache, float* q) {
  const int64_t qs = n_heads * head_dim, kvs = n_kv_heads * head_dim, width = qs + 2 * kvs;
  std::vector<float> k((size_t)T * kvs), v((size_t)T * kvs);
  const float* src = qkv;
  for (int64_t t = 0; t < T; ++t, src += width) {
    std::copy(src, src + qs, q + t * qs);
    std::copy(src + qs, src + qs + kvs, k.data() + t * kvs);
    std::copy(src + qs + kvs, src + width, v.data() + t * kvs);
  }
  rope(q, positions, inv_freq, T, n_heads, head_dim, interleaved);
  rope(k.data(), positions, inv_freq, T, n_kv_heads, head_dim, interleaved);
  write_kv_cache(k.data(), v.data(), slots, T, kvs, k_cache, v_cache);
}

void paged_attention(const AttentionArgs& a, float* out) {
  const IsaKernels& kern = active_kernels();
  const int group = a.n_heads / a.n_kv_heads, hd = a.head_dim, bs = a.block_size;
  const int64_t kv_row = (int64_t)a.n_kv_heads * hd;
  // Splits are (sequence, query run, key run); each is computed as one task per kv
  // head, so a verification step or a single long decode still uses every thread.
  std::vector<Task> tasks;  // the splits
  std::vector<QueryRun> runs;
  int64_t partial_rows = 0;
  for (int s = 0; s < a.num_seqs; ++s) {
    const int q_len = a.cu_q[s + 1] - a.cu_q[s], ctx = a.ctx_lens[s];
    for (int j0 = 0; j0 < q_len; j0 += kQueriesPerTask) {
      const int j1 = std::min(q_len, j0 + kQueriesPerTask);
      const int keys = ctx - q_len + j1;  // the run's last query sees keys 0..keys-1
      runs.push_back({s, j0, j1, tasks.size(), 0});
      for (int k0 = 0; k0 < keys; k0 += kKeysPerSplit) {
        tasks.push_back({s, j0, j1, k0, std::min(keys, k0 + kKeysPerSplit), partial_rows});
        partial_rows += (int64_t)(j1 - j0) * a.n_heads;
      }
      runs.back().num_tasks = tasks.size() - runs.back().first_task;
    }
  }
  // Each split leaves (max, sum, unnormalized output) per query row for the merge.
  std::vector<float> part_m(partial_rows), part_l(partial_rows), part_acc(partial_rows * hd);

  const int num_work = (int)tasks.size() * a.n_kv_heads;
  ThreadPool::instance().parallel_for(num_work, [&](int wi) {
    const Task& t = tasks[wi / a.n_kv_heads];
    const int kvh = wi % a.n_kv_heads;
    const int q0 = a.cu_q[t.seq], q_len = a.cu_q[t.seq + 1] - q0, ctx = a.ctx_lens[t.seq];
    const int64_t nq = (int64_t)(t.j1 - t.j0) * group;  // rows: query x head of this kv head
    std::vector<float> m(nq, -std::numeric_limits<float>::infinity()), l(nq, 0.0f);
    std::vector<float> acc(nq * hd, 0.0f), p(bs), krow((size_t)bs * hd), vrow((size_t)bs * hd);
    const int32_t* table = a.block_tables + (int64_t)t.seq * a.max_blocks;
    const int last_pos = std::min(t.key1 - 1, ctx - q_len + t.j1 - 1);  // causal cut
    for (int b = t.key0 / bs; b * bs <= last_pos; ++b) {
      const int k_lo = std::max(t.key0, b * bs), k_hi = std::min(t.key1, (b + 1) * bs);
      if (k_lo >= k_hi) continue;
      const int64_t base = (int64_t)table[b] * bs * kv_row + (int64_t)kvh * hd;
      const int n = k_hi - b * bs;      // slots 0..n-1 of the block exist in the cache
      const int first = k_lo - b * bs;  // keys first..n-1 of the block are this task's
      // This kv head's keys and values, contiguous fp32 for the dot and axpy kernels.
      for (int i = first; i < n; ++i) {
        kern.fp16_to_fp32(a.k_cache + base + i * kv_row, krow.data() + (i - first) * hd, hd);
        kern.fp16_to_fp32(a.v_cache + base + i * kv_row, vrow.data() + (i - first) * hd, hd);
      }
      for (int j = t.j0; j < t.j1; ++j) {
        const int visible = std::min(n, ctx - q_len + j - b * bs + 1) - first;
        if (visible <= 0) continue;
        for (int g = 0; g < group; ++g) {
          const int h = kvh * group + g;
          const int64_t r = (int64_t)(j - t.j0) * group + g;
          const float* qv = a.q + ((int64_t)(q0 + j) * a.n_heads + h) * hd;
          kern.dots_f32(qv, krow.data(), visible, hd, p.data());
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
          kern.axpys_f32(p.data(), vrow.data(), visible, hd, ar);
          l[r] = l[r] * corr + sum;
        }
      }
    }
    for (int j = t.j0; j < t.j1; ++j)
      for (int g = 0; g < group; ++g) {
        const int64_t r = (int64_t)(j - t.j0) * group + g;
        const int64_t pr = t.partial + (int64_t)(j - t.j0) * a.n_heads + kvh * group + g;
        part_m[pr] = m[r];
        part_l[pr] = l[r];
        std::copy_n(acc.data() + r * hd, hd, part_acc.data() + pr * hd);
      }
  });

  // Merge each query run's splits in key order: m = max m_k, l = sum l_k e^(m_k - m),
  // out = sum acc_k e^(m_k - m) / l (one split: exactly acc / l).
  ThreadPool::instance().parallel_for((int)runs.size(), [&](int ri) {
    const QueryRun& run = runs[ri];
    const int64_t rows = (int64_t)(run.j1 - run.j0) * a.n_heads;
    std::vector<float> o(hd);
    for (int64_t r = 0; r < rows; ++r) {
      float mx = -std::numeric_limits<float>::infinity();
      for (size_t k = 0; k < run.num_tasks; ++k)
        mx = std::max(mx, part_m[tasks[run.first_task + k].partial + r]);
      float lsum = 0.0f;
      std::fill(o.begin(), o.end(), 0.0f);
      for (size_t k = 0; k < run.num_tasks; ++k) {
        const int64_t pr = tasks[run.first_task + k].partial + r;
        if (part_l[pr] == 0.0f) continue;  // no key of this split is visible to the row
        const float w = exp_f32_step(part_m[pr] - mx);
        lsum += part_l[pr] * w;
        kern.axpys_f32(&w, part_acc.data() + pr * hd, 1, hd, o.data());
      }
      const float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
      float* dst = out + ((int64_t)(a.cu_q[run.seq] + run.j0) * a.n_heads + r) * hd;
      for (int d = 0; d < hd; ++d) dst[d] = o[d] * inv;
    }
  });
}

}  // namespace lutlm
