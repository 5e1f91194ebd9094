// GEMM drivers: activation preprocessing (int8 quantization or lookup tables),
// tiling over output rows, the thread pool, and dispatch between the lookup-table
// (LUT) and int8 dot-product (MAD) methods.
//
// Error model (tested in tests/test_gemm.py, documented in docs/ARCHITECTURE.md):
//  * MAD quantizes activations to int8 with scale s = max|x| / 127 per row (ternary)
//    or per weight group (INT4, INT8), so |x - s*x8| <= s/2 per element, and then computes
//    W . (s*x8) exactly in integers up to the fp32 scaling.
//  * LUT quantizes each table (sums of 2 or 4 activations) with scale
//    t = max|entry| / 127: each lookup is off by at most t/2.
//  * A row of x that holds NaN or Inf gives a row of NaN in y.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_features.h"
#include "kernels.h"
#include "ops.h"
#include "quant_types.h"
#include "thread_pool.h"

namespace lutlm {

namespace {

// K is processed in blocks this long by the MAD kernels, so a decoded tile
// (16 x 512 bytes) and the activation block stay in L1/L2.
constexpr int kMadKBlock = 512;
// Up to this many activation rows (act_bits 16 counts two per row of x), MAD over
// nibble-layout INT4 decodes the weights in registers, again for every kMadRows rows
// (the codes are in L1 by then: decoding costs less than a pass over a decoded buffer,
// 10-20 % on the 3-17 token verification steps of prompt lookup at act_bits 16); above
// (prefill), once per K-block into a buffer that every row reads.
constexpr int64_t kNibbleFusedMaxRows = 32;
// A task's slice of packed weights should stay in L2 while all M rows pass over it.
constexpr int64_t kTaskBytes = 256 * 1024;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

bool row_is_finite(const float* x, int64_t K) {
  for (int64_t k = 0; k < K; ++k)
    if (!std::isfinite(x[k])) return false;
  return true;
}

// Copies row x[K] into xpad[Kp] (zero padded), multiplied by a power of two f chosen
// so that max|x| lies in [2^-62, 2^62]: then 127/max and sums of four activations
// stay finite in fp32. Scaling by a power of two is exact, so results computed on
// xpad are divided by f. Returns f, or 0 when the row holds NaN or Inf.
float normalize_row(const float* x, int64_t K, int64_t Kp, float* xpad) {
  if (!row_is_finite(x, K)) return 0.0f;
  float amax = 0.0f;
  for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(x[k]));
  float f = 1.0f;
  if (amax > 0.0f && (amax < 0x1p-62f || amax > 0x1p62f)) f = std::ldexp(1.0f, -std::ilogb(amax));
  for (int64_t k = 0; k < K; ++k) xpad[k] = x[k] * f;
  std::fill(xpad + K, xpad + Kp, 0.0f);
  return f;
}

// int8 quantization of x[K] into x8[Kp] (zero padded) in blocks of `block` values, one
// scale per block: x8 = round(x * 127/max|x_block|). Per row for ternary (BitNet's
// per-token activations), per weight group for INT4 and INT8 (like GGUF's Q8_0
// activations).
void quantize_row(const float* x, int64_t K, int64_t Kp, int64_t block, float* xbuf, int8_t* x8,
                  float* scale, uint8_t* bad) {
  std::fill(x8, x8 + Kp, 0);
  std::fill(scale, scale + Kp / block, 0.0f);
  const float f = normalize_row(x, K, Kp, xbuf);
  *bad = f == 0.0f;
  if (*bad) return;
  for (int64_t b0 = 0; b0 < Kp; b0 += block) {
    float amax = 0.0f;
    for (int64_t k = b0; k < b0 + block; ++k) amax = std::max(amax, std::fabs(xbuf[k]));
    if (amax == 0.0f) continue;
    scale[b0 / block] = amax / 127.0f / f;
    const float inv = 127.0f / amax;
    for (int64_t k = b0; k < b0 + block; ++k) x8[k] = round_to_i8(xbuf[k] * inv);
  }
}

// act_bits 16 for the LUT: a second set of tables holding what the first one's int8
// rounding lost (table - t*q), with its own per-group scale; the kernel runs once per
// set. Same order of fp32 operations as the ISA table builders, so every ISA agrees.
void int4_residual_tables(const float* x, int64_t Kp, int group_size, const int8_t* tab,
                          const float* tscale, int8_t* tab2, float* tscale2) {
  const int64_t quads = group_size / kInt4StepK;
  std::vector<float> res((size_t)quads * 16);
  for (int64_t g = 0; g < Kp / group_size; ++g) {
    float amax = 0.0f;
    for (int64_t q = 0; q < quads; ++q) {
      const int64_t s = g * quads + q;
      float sums[16];
      quad_subset_sums(x + 4 * s, sums);
      for (int idx = 0; idx < 16; ++idx) {
        const float r = sums[idx] - (float)tab[s * kInt4TableBytes + idx] * tscale[g];
        res[q * 16 + idx] = r;
        amax = std::max(amax, std::fabs(r));
      }
    }
    tscale2[g] = amax / 127.0f;
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t q = 0; q < quads; ++q) {
      int8_t* t = tab2 + (g * quads + q) * kInt4TableBytes;
      for (int idx = 0; idx < 16; ++idx) {
        t[idx] = round_to_i8(res[q * 16 + idx] * inv);
        t[16 + idx] = (int8_t)-t[idx];
      }
    }
  }
}

// Split NT tiles into tasks of about kTaskBytes of packed weights, with at least a
// few tasks per thread for balance.
int64_t tiles_per_task(int64_t NT, int64_t tile_bytes) {
  const int64_t threads = ThreadPool::instance().num_threads();
  int64_t by_cache = std::max<int64_t>(1, kTaskBytes / std::max<int64_t>(1, tile_bytes));
  int64_t by_balance = std::max<int64_t>(1, NT / (4 * threads));
  return std::max<int64_t>(1, std::min(by_cache, by_balance));
}

template <typename F>
void for_each_row(int64_t M, F&& f) {
  ThreadPool::instance().parallel_for((int)M, [&](int m) { f((int64_t)m); });
}

// Activations of group-wise weights (INT4, INT8) for the MAD kernels: int8 with one
// scale per weight group. act_bits 16: x = s1*x8 + s2*r8, where r8 quantizes what the
// first pass lost (error about 1/254 of int8's); rows M..2M-1 hold the residuals.
struct GroupActs {
  int64_t M, rows, Kp, G;
  std::vector<int8_t> x8;      // [rows][Kp]
  std::vector<float> scale;    // [rows][G]
  std::vector<int32_t> xsum8;  // [rows][G]: sum of x8 over the group
  std::vector<uint8_t> bad;    // [rows]: the row holds NaN or Inf
  const int8_t* x8_at(int64_t r, int64_t k) const { return x8.data() + r * Kp + k; }
  const float* scale_at(int64_t r, int64_t g) const { return scale.data() + r * G + g; }
  const int32_t* xsum8_at(int64_t r, int64_t g) const { return xsum8.data() + r * G + g; }
};

GroupActs quantize_groups(const float* x, int64_t M, int64_t K, int64_t Kp, int64_t gs,
                          int act_bits) {
  GroupActs a;
  a.M = M;
  a.rows = act_bits == 16 ? 2 * M : M;
  a.Kp = Kp;
  a.G = Kp / gs;
  a.x8.resize(a.rows * Kp);
  a.scale.resize(a.rows * a.G);
  a.xsum8.resize(a.rows * a.G);
  a.bad.resize(a.rows);
  std::vector<float> xbuf(a.rows * Kp);
  auto quantize = [&](const float* src, int64_t r) {
    int8_t* row = a.x8.data() + r * Kp;
    quantize_row(src, K, Kp, gs, xbuf.data() + r * Kp, row, a.scale.data() + r * a.G, &a.bad[r]);
    for (int64_t g = 0; g < a.G; ++g) {
      int32_t s = 0;
      for (int64_t k = g * gs; k < (g + 1) * gs; ++k) s += row[k];
      a.xsum8[r * a.G + g] = s;
    }
  };
  for_each_row(M, [&](int64_t m) {
    quantize(x + m * K, m);
    if (a.rows == M || a.bad[m]) return;
    std::vector<float> res(K);
    for (int64_t k = 0; k < K; ++k)
      res[k] = x[m * K + k] - a.x8[m * Kp + k] * a.scale[m * a.G + k / gs];
    quantize(res.data(), M + m);
  });
  return a;
}

// The MAD loop of group-wise weights: tasks of tiles, each tile in K-blocks of
// kMadKBlock so a block's weights stay in cache while every activation row passes over
// it. block(t, kb, klen, scratch, acc) adds K-block [kb, kb + klen) of tile t into
// acc[rows][16] for all a.rows rows; scratch is scratch_bytes per task (for decoding).
template <typename Block>
void mad_group_tiles(const GroupActs& a, int64_t N, int64_t tile_bytes, size_t scratch_bytes,
                     Block&& block, float* y) {
  const int64_t M = a.M, NT = (N + kTileRows - 1) / kTileRows;
  const int64_t per_task = tiles_per_task(NT, tile_bytes);
  const int num_tasks = (int)((NT + per_task - 1) / per_task);
  ThreadPool::instance().parallel_for(num_tasks, [&](int task) {
    const int64_t t0 = task * per_task, t1 = std::min(NT, t0 + per_task);
    std::vector<uint8_t> scratch(scratch_bytes);
    std::vector<float> acc(a.rows * kTileRows);
    for (int64_t t = t0; t < t1; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t kb = 0; kb < a.Kp; kb += kMadKBlock)
        block(t, kb, (int)std::min<int64_t>(kMadKBlock, a.Kp - kb), scratch.data(), acc.data());
      if (a.rows > M)
        for (int64_t i = 0; i < M * kTileRows; ++i) acc[i] += acc[M * kTileRows + i];
      for (int64_t m = 0; m < M; ++m)
        for (int r = 0; r < kTileRows; ++r) {
          const int64_t n = t * kTileRows + r;
          if (n < N) y[m * N + n] = a.bad[m] ? kNaN : acc[m * kTileRows + r];
        }
    }
  });
}

}  // namespace

// Above the crossover M the MAD kernels win: their decode is paid once per K-block
// for all rows of x, while the LUT kernels pay their lookups per row.
int lut_max_m(bool int4) {
  const IsaKernels& k = active_kernels();
  return int4 ? k.lut_max_m_int4 : k.lut_max_m_ternary;
}

Method resolve_method(Method m, int64_t M, bool int4) {
  if (m != Method::kAuto) return m;
  return M <= lut_max_m(int4) ? Method::kLut : Method::kMad;
}

void gemm_ternary(const float* x, int64_t M, const TernaryWeights& w, Method method, float* y) {
  if (M == 0) return;
  const IsaKernels& kern = active_kernels();
  const int64_t N = w.N, K = w.K, Kp = w.Kp;
  const int64_t NT = (N + kTileRows - 1) / kTileRows, steps = Kp / kTernaryStepK;
  const int64_t tile_bytes = steps * kStepBytes;
  const int64_t per_task = tiles_per_task(NT, tile_bytes);
  const int num_tasks = (int)((NT + per_task - 1) / per_task);
  std::vector<float> rscale(M);
  std::vector<uint8_t> bad(M);

  auto store = [&](int64_t m, int64_t t, const int32_t acc[16]) {
    for (int r = 0; r < kTileRows; ++r) {
      const int64_t n = t * kTileRows + r;
      if (n < N) y[m * N + n] = bad[m] ? kNaN : (float)acc[r] * rscale[m] * w.scales[n];
    }
  };

  if (resolve_method(method, M, false) == Method::kLut) {
    std::vector<int8_t> tables(M * steps * kTernaryTableBytes);
    std::vector<float> xpad(M * Kp);
    for_each_row(M, [&](int64_t m) {
      const float f = normalize_row(x + m * K, K, Kp, xpad.data() + m * Kp);
      bad[m] = f == 0.0f;
      rscale[m] = bad[m] ? 0.0f
                         : kern.ternary_tables(xpad.data() + m * Kp, Kp,
                                               tables.data() + m * steps * kTernaryTableBytes) / f;
    });
    ThreadPool::instance().parallel_for(num_tasks, [&](int task) {
      const int64_t t0 = task * per_task, t1 = std::min(NT, t0 + per_task);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t t = t0; t < t1; ++t) {
          int32_t acc[16] = {0};
          kern.lut_ternary_tile(w.codes + t * tile_bytes,
                                tables.data() + m * steps * kTernaryTableBytes, (int)steps, acc);
          store(m, t, acc);
        }
    });
    return;
  }

  std::vector<int8_t> x8(M * Kp);
  std::vector<float> xbuf(M * Kp);
  const int64_t num_kb = (Kp + kMadKBlock - 1) / kMadKBlock;
  std::vector<int32_t> bsum(M * num_kb);  // sum of x8 over each K-block
  for_each_row(M, [&](int64_t m) {
    const int8_t* row = x8.data() + m * Kp;
    quantize_row(x + m * K, K, Kp, Kp, xbuf.data() + m * Kp, x8.data() + m * Kp, &rscale[m],
                 &bad[m]);
    for (int64_t b = 0; b < num_kb; ++b) {
      int32_t s = 0;
      for (int64_t k = b * kMadKBlock; k < std::min(Kp, (b + 1) * kMadKBlock); ++k) s += row[k];
      bsum[m * num_kb + b] = s;
    }
  });
  ThreadPool::instance().parallel_for(num_tasks, [&](int task) {
    const int64_t t0 = task * per_task, t1 = std::min(NT, t0 + per_task);
    std::vector<int8_t> w8((size_t)kTileRows * kMadKBlock);
    std::vector<int32_t> acc(M * kTileRows);
    for (int64_t t = t0; t < t1; ++t) {
      std::fill(acc.begin(), acc.end(), 0);
      for (int64_t kb = 0; kb < Kp; kb += kMadKBlock) {
        const int klen = (int)std::min<int64_t>(kMadKBlock, Kp - kb);
        decode_ternary_tile(w.codes + t * tile_bytes + (kb / kTernaryStepK) * kStepBytes,
                            klen / kTernaryStepK, w8.data());
        for (int64_t m = 0; m < M; ++m)
          kern.mad_ternary_tile(x8.data() + m * Kp + kb, bsum[m * num_kb + kb / kMadKBlock],
                                w8.data(), klen, acc.data() + m * kTileRows);
      }
      for (int64_t m = 0; m < M; ++m) store(m, t, acc.data() + m * kTileRows);
    }
  });
}

void gemm_int4(const float* x, int64_t M, const Int4Weights& w, Method method, int act_bits,
               float* y) {
  if (M == 0) return;
  const IsaKernels& kern = active_kernels();
  const int64_t N = w.N, K = w.K, Kp = w.Kp, gs = w.group_size;
  const int64_t NT = (N + kTileRows - 1) / kTileRows, steps = Kp / kInt4StepK, G = Kp / gs;
  const int64_t tile_bytes = steps * kStepBytes;
  auto tile_args = [&](int64_t t, int64_t g0, int groups) {
    Int4TileArgs a;
    a.codes = w.codes + t * tile_bytes + g0 * (gs / kInt4StepK) * kStepBytes;
    a.d = w.d + (t * G + g0) * kTileRows;
    a.m = w.m ? w.m + (t * G + g0) * kTileRows : nullptr;
    a.groups = groups;
    a.group_steps = (int)(gs / kInt4StepK);
    return a;
  };

  // The nibble layout has no LUT form (bind_gemm.cpp refuses method "lut" for it).
  if (w.layout == Int4Layout::kPlanes && resolve_method(method, M, true) == Method::kLut) {
    const int64_t per_task = tiles_per_task(NT, tile_bytes);
    const int num_tasks = (int)((NT + per_task - 1) / per_task);
    std::vector<uint8_t> bad(M);
    auto store = [&](int64_t m, int64_t t, const float y16[16]) {
      for (int r = 0; r < kTileRows; ++r) {
        const int64_t n = t * kTileRows + r;
        if (n < N) y[m * N + n] = bad[m] ? kNaN : y16[r];
      }
    };
    const int sets = act_bits == 16 ? 2 : 1;  // set 1: residual tables (rows M..2M-1)
    std::vector<int8_t> tables(sets * M * steps * kInt4TableBytes);
    std::vector<float> xsum(M * G), zeros(G, 0.0f), tscale(sets * M * G), xpad(M * Kp);
    for_each_row(M, [&](int64_t m) {
      const float* xm = x + m * K;
      const float f = normalize_row(xm, K, Kp, xpad.data() + m * Kp);
      bad[m] = f == 0.0f;
      if (bad[m]) return;
      float* ts = tscale.data() + m * G;
      int8_t* tab = tables.data() + m * steps * kInt4TableBytes;
      kern.int4_tables(xpad.data() + m * Kp, Kp, (int)gs, tab, ts);
      if (sets == 2) {
        float* ts2 = tscale.data() + (M + m) * G;
        int4_residual_tables(xpad.data() + m * Kp, Kp, (int)gs, tab, ts,
                             tables.data() + (M + m) * steps * kInt4TableBytes, ts2);
        for (int64_t g = 0; g < G; ++g) ts2[g] /= f;
      }
      for (int64_t g = 0; g < G; ++g) {
        ts[g] /= f;
        double sum = 0.0;
        for (int64_t k = g * gs; k < std::min(K, (g + 1) * gs); ++k) sum += xm[k];
        xsum[m * G + g] = (float)sum;
      }
    });
    ThreadPool::instance().parallel_for(num_tasks, [&](int task) {
      const int64_t t0 = task * per_task, t1 = std::min(NT, t0 + per_task);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t t = t0; t < t1; ++t) {
          float y16[16] = {0};
          kern.lut_int4_tile(tile_args(t, 0, (int)G), tables.data() + m * steps * kInt4TableBytes,
                             tscale.data() + m * G, xsum.data() + m * G, y16);
          if (sets == 2)  // the minimum term was added by the first pass
            kern.lut_int4_tile(tile_args(t, 0, (int)G),
                               tables.data() + (M + m) * steps * kInt4TableBytes,
                               tscale.data() + (M + m) * G, zeros.data(), y16);
          store(m, t, y16);
        }
    });
    return;
  }

  const GroupActs a = quantize_groups(x, M, K, Kp, gs, act_bits);
  const bool fused = w.layout == Int4Layout::kNibbles && a.rows <= kNibbleFusedMaxRows;
  mad_group_tiles(
      a, N, tile_bytes, (size_t)kTileRows * kMadKBlock,
      [&](int64_t t, int64_t kb, int klen, uint8_t* w8, float* acc) {
        const Int4TileArgs ta = tile_args(t, kb / gs, (int)(klen / gs));
        if (fused) {  // the nibbles are decoded in registers, once per kMadRows rows
          for (int64_t r = 0; r < a.rows; r += kMadRows)
            kern.mad_int4_nibble_tile_rows((int)std::min<int64_t>(kMadRows, a.rows - r),
                                           a.x8_at(r, kb), a.Kp, a.scale_at(r, kb / gs),
                                           a.xsum8_at(r, kb / gs), a.G, ta.codes, ta.d, ta.m,
                                           ta.groups, (int)gs, acc + r * kTileRows);
          return;
        }
        if (w.layout == Int4Layout::kNibbles)
          unpack_nibble_octets(ta.codes, klen / 8, w8);
        else
          decode_int4_tile(ta.codes, klen / kInt4StepK, w8);
        for (int64_t r = 0; r < a.rows; r += kMadRows)
          kern.mad_int4_tile_rows((int)std::min<int64_t>(kMadRows, a.rows - r), a.x8_at(r, kb),
                                  a.Kp, a.scale_at(r, kb / gs), a.xsum8_at(r, kb / gs), a.G, w8,
                                  ta.d, ta.m, ta.groups, (int)gs, acc + r * kTileRows);
      },
      y);
}

void gemm_int8(const float* x, int64_t M, const Int8Weights& w, int act_bits, float* y) {
  if (M == 0) return;
  const IsaKernels& kern = active_kernels();
  const int64_t Kp = w.Kp, gs = w.group_size, G = Kp / gs, tile_bytes = kTileRows * Kp;
  const GroupActs a = quantize_groups(x, M, w.K, Kp, gs, act_bits);
  mad_group_tiles(
      a, w.N, tile_bytes, 0,
      [&](int64_t t, int64_t kb, int klen, uint8_t*, float* acc) {
        const int8_t* wq = w.codes + t * tile_bytes + kb * kTileRows;
        const uint16_t* d = w.d + (t * G + kb / gs) * kTileRows;
        for (int64_t r = 0; r < a.rows; ++r)
          kern.mad_int8_tile(a.x8_at(r, kb), a.scale_at(r, kb / gs), a.xsum8_at(r, kb / gs), wq, d,
                             (int)(klen / gs), (int)gs, acc + r * kTileRows);
      },
      y);
}

void gemm_f32(const float* x, int64_t M, const float* w, int64_t N, int64_t K, float* y) {
  if (M == 0) return;
  const IsaKernels& kern = active_kernels();
  const int64_t rows = std::max<int64_t>(16, kTaskBytes / (K * 4));
  const int64_t by_balance = std::max<int64_t>(16, N / (4 * ThreadPool::instance().num_threads()));
  const int64_t per_task = std::min(rows, by_balance);
  const int num_tasks = (int)((N + per_task - 1) / per_task);
  ThreadPool::instance().parallel_for(num_tasks, [&](int task) {
    const int64_t n0 = task * per_task, n1 = std::min(N, n0 + per_task);
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t m = 0; m < M; ++m) y[m * N + n] = kern.dot_f32(x + m * K, w + n * K, (int)K);
  });
}

}  // namespace lutlm
