// Per-ISA inner kernels. Each ISA file fills one IsaKernels table; the drivers in
// gemm.cpp pick a table at run time (cpu_features.cpp) and never branch on ISA.
#pragma once
#include <cmath>
#include <cstdint>

namespace lutlm {

struct Int4TileArgs {
  const uint8_t* codes;   // tile codes, kStepBytes per step
  const uint16_t* d;      // [groups][16] fp16 scales of this tile
  const uint16_t* m;      // [groups][16] fp16 minimums, or nullptr (symmetric: m = -8d)
  int groups;
  int group_steps;        // group_size / kInt4StepK
};

struct IsaKernels {
  const char* name;
  // Lookup tables for one activation row x[Kp] (zero padded, finite, max|x| in
  // [2^-62, 2^62]). Ternary fills Kp/8 steps of kTernaryTableBytes and returns the
  // table scale max_j(|x[2j]| + |x[2j+1]|) / 127 (0 for an all-zero row). INT4 fills
  // Kp/4 steps of kInt4TableBytes and one table scale per group. Every ISA produces
  // the same bytes: same fp32 operations, round-half-even.
  float (*ternary_tables)(const float* x, int64_t Kp, int8_t* tab);
  void (*int4_tables)(const float* x, int64_t Kp, int group_size, int8_t* tab, float* tscale);
  // Ternary LUT: acc[r] += sum over steps of table lookups (exact in int32).
  void (*lut_ternary_tile)(const uint8_t* codes, const int8_t* tables, int steps,
                           int32_t acc[16]);
  // INT4 LUT: y[r] += sum_g d[g][r] * tscale[g] * L[g][r] + (m + 8d)[g][r] * xsum[g],
  // where L = sum over group g of T[P0] + 2T[P1] + 4T[P2] - 8T[P3] (the m term only
  // when m is given).
  void (*lut_int4_tile)(const Int4TileArgs& w, const int8_t* tables, const float* tscale,
                        const float* xsum, float y[16]);
  // The MAD kernels read a tile decoded to int8 in quad layout: wq[k/4][16 rows][4],
  // i.e. 64 bytes per 4 values of k (one broadcast 32-bit load of x8 serves 16 rows).
  // Ternary: acc[r] += sum_k x8[k] * w[r][k] with w in {-1,0,1}; k_len % 32 == 0.
  // x_sum = sum_k x8[k], for kernels that multiply by w+1 (unsigned) and subtract it.
  void (*mad_ternary_tile)(const int8_t* x8, int32_t x_sum, const int8_t* wq, int k_len,
                           int32_t acc[16]);
  // INT4 with codes q in 0..15 and activations quantized per weight group (scale xs[g]),
  // for `rows` (1..kMadRows) rows of activations at once (row r at x8 + r * x_stride,
  // xs / xsum8 + r * g_stride, y + 16 r; each weight load serves every row). Per row:
  // dot = sum_{k in g} x8[k] * q[r][k] (exact), then y[r] = fma(d, dot*xs[g], y[r]);
  // fma(m, xsum8[g]*xs[g], y[r]) when m is given, else
  // y[r] = fma(d, (dot - 8*xsum8[g])*xs[g], y[r]), in this order for every ISA: all of
  // them call int4_mad_group_epilogue (int4_epilogue.h).
  void (*mad_int4_tile_rows)(int rows, const int8_t* x8, int64_t x_stride, const float* xs,
                             const int32_t* xsum8, int64_t g_stride, const uint8_t* wq,
                             const uint16_t* d, const uint16_t* m, int groups, int group_size,
                             float* y);
  // mad_int4_tile_rows from the nibble layout (quant_types.h), decoded in registers once
  // for all the rows: bit-identical to mad_int4_tile_rows on the decoded codes. Pays off for
  // few rows of x (decode GEMVs: one row, two with act_bits 16).
  void (*mad_int4_nibble_tile_rows)(int rows, const int8_t* x8, int64_t x_stride,
                                    const float* xs, const int32_t* xsum8, int64_t g_stride,
                                    const uint8_t* codes, const uint16_t* d, const uint16_t* m,
                                    int groups, int group_size, float* y);
  // INT8 (wq is the packed weight itself, q in -128..127; x8 in -127..127): per group
  // t = sum_{k in g} x8[k] * q[r][k] (exact), then y[r] = fma(d, t*xs[g], y[r]).
  // xsum8 is for kernels that multiply by q+128 (unsigned) and subtract 128*xsum8[g].
  void (*mad_int8_tile)(const int8_t* x8, const float* xs, const int32_t* xsum8, const int8_t* wq,
                        const uint16_t* d, int groups, int group_size, float y[16]);
  // IEEE half <-> float for n values (round to nearest even), used by the KV cache.
  void (*fp16_to_fp32)(const uint16_t* src, float* dst, int n);
  void (*fp32_to_fp16)(const float* src, uint16_t* dst, int n);
  // fp32 dot product: eight fma lanes (lane i takes elements i mod 8), summed as
  // ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), then the n % 8 tail by fma, in every ISA.
  float (*dot_f32)(const float* a, const float* b, int n);
  // y[i] = exp(x[i]) for x[i] <= 88 (below -87.3: 0), by exp_f32_step's operations in
  // every ISA (relative error ~2e-7). Attention's softmax.
  void (*exp_f32)(const float* x, float* y, int n);
  // Attention over one block of keys: out[i] = dot_f32(q, k + i*d, d) for i < n, and
  // acc[j] = fma(p[i], v[i*d + j], acc[j]) for i = 0..n-1 in turn.
  void (*dots_f32)(const float* q, const float* k, int n, int d, float* out);
  void (*axpys_f32)(const float* p, const float* v, int n, int d, float* acc);
  // Method::kAuto uses LUT for M up to these, MAD above (measured: bench/RESULTS.md).
  int lut_max_m_ternary;
  int lut_max_m_int4;
};

extern const IsaKernels kScalarKernels;
// Scalar functions shared by ISAs without their own.
float ternary_tables_scalar(const float* x, int64_t Kp, int8_t* tab);
void int4_tables_scalar(const float* x, int64_t Kp, int group_size, int8_t* tab, float* tscale);
void fp16_to_fp32_scalar(const uint16_t* src, float* dst, int n);
void fp32_to_fp16_scalar(const float* src, uint16_t* dst, int n);
float dot_f32_scalar(const float* a, const float* b, int n);
#if defined(LUTLM_HAVE_AVX2)
extern const IsaKernels kAvx2Kernels;
extern const IsaKernels kAvx512Kernels;
#endif
#if defined(LUTLM_HAVE_NEON)
extern const IsaKernels kNeonKernels;
#endif

// Round half to even for |v| < 2^22 without a libm call (needs -ffp-contract=off,
// set for the whole build, so that v is rounded to float before the addition).
inline int8_t round_to_i8(float v) {
  const float r = (v + 12582912.0f) - 12582912.0f;
  return (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
}

// float -> IEEE half, round to nearest even; NaN becomes a quiet NaN, like F16C.
inline uint16_t fp32_to_fp16_bits(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000;
  u &= 0x7fffffff;
  if (u >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (u > 0x7f800000 ? 0x200 | ((u >> 13) & 0x3ff) : 0));
  if (u >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  // rounds past 65504
  if (u < 0x38800000) {  // half subnormal or zero: let an fp32 add do the rounding
    const uint32_t magic_u = (127 - 15 + 23 - 10 + 1) << 23;
    float a, magic;
    __builtin_memcpy(&a, &u, 4);
    __builtin_memcpy(&magic, &magic_u, 4);
    a += magic;
    __builtin_memcpy(&u, &a, 4);
    return (uint16_t)(sign | (u - magic_u));
  }
  const uint32_t odd = (u >> 13) & 1;
  u += ((uint32_t)(15 - 127) << 23) + 0xfff + odd;
  return (uint16_t)(sign | (u >> 13));
}

// The 16 subset sums of x[0..3] (entry idx = sum of x[i] for the bits i of idx), in
// the fp32 order every INT4 table builder uses: sums[idx] = sums[idx - top bit] + x[top].
inline void quad_subset_sums(const float* x, float sums[16]) {
  sums[0] = 0.0f;
  for (int idx = 1; idx < 16; ++idx) {
    const int hb = 31 - __builtin_clz(idx);
    sums[idx] = sums[idx & ~(1 << hb)] + x[hb];
  }
}

// How far ahead the MAD kernels that read packed weights directly (INT4 nibbles, INT8)
// prefetch them: decode GEMVs stream small matrices from DRAM, too short for the
// hardware prefetcher alone to reach full bandwidth (measured: bench/RESULTS.md).
constexpr int kNibblePrefetchBytes = 4096;

// INT4 nibble layout -> quad layout (quant_types.h): octet o's low nibbles are quad 2o,
// its high nibbles quad 2o + 1.
inline void unpack_nibble_octets(const uint8_t* codes, int octets, uint8_t* wq) {
  for (int o = 0; o < octets; ++o, codes += 64, wq += 128)
    for (int j = 0; j < 64; ++j) {
      wq[j] = codes[j] & 0x0f;
      wq[64 + j] = codes[j] >> 4;
    }
}

constexpr int kMadRows = 4;

// mad_int4_tile_rows for ISAs without their own: one row at a time.
template <void (*QuadKernel)(const int8_t*, const float*, const int32_t*, const uint8_t*,
                             const uint16_t*, const uint16_t*, int, int, float*)>
void mad_int4_rows_one_by_one(int rows, const int8_t* x8, int64_t x_stride, const float* xs,
                              const int32_t* xsum8, int64_t g_stride, const uint8_t* wq,
                              const uint16_t* d, const uint16_t* m, int groups, int group_size,
                              float* y) {
  for (int r = 0; r < rows; ++r)
    QuadKernel(x8 + r * x_stride, xs + r * g_stride, xsum8 + r * g_stride, wq, d, m, groups,
               group_size, y + 16 * r);
}

// mad_int4_nibble_tile_rows for ISAs without their own: each group decoded, then the
// quad kernel on it, row by row (so the fp32 operations are the same).
template <void (*QuadKernel)(const int8_t*, const float*, const int32_t*, const uint8_t*,
                             const uint16_t*, const uint16_t*, int, int, float*)>
void mad_int4_nibbles_by_group(int rows, const int8_t* x8, int64_t x_stride, const float* xs,
                               const int32_t* xsum8, int64_t g_stride, const uint8_t* codes,
                               const uint16_t* d, const uint16_t* m, int groups, int group_size,
                               float* y) {
  uint8_t wq[128 * 16];  // one group of up to 128 k, 16 rows
  for (int g = 0; g < groups; ++g) {
    unpack_nibble_octets(codes + (size_t)g * group_size * 8, group_size / 8, wq);
    for (int r = 0; r < rows; ++r)
      QuadKernel(x8 + r * x_stride + (size_t)g * group_size, xs + r * g_stride + g,
                 xsum8 + r * g_stride + g, wq, d + g * 16, m ? m + g * 16 : nullptr, 1,
                 group_size, y + 16 * r);
  }
}

// exp(x) the way every exp_f32 computes it: n = round(x log2 e) (half to even),
// r = x - n ln 2 in two fma steps (Cody-Waite), a degree-5 polynomial for
// (exp(r) - 1 - r) / r^2 in fma steps, then exp(r) * 2^n through the exponent bits.
constexpr float kExpLo = -87.3f, kExpHi = 88.0f;
constexpr float kExpC[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                            4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
inline float exp_f32_step(float x) {
  if (x < kExpLo) return 0.0f;
  x = x > kExpHi ? kExpHi : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = std::fma(n, -0.693359375f, x);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = kExpC[0];
  for (int i = 1; i < 6; ++i) p = std::fma(p, r, kExpC[i]);
  const float e = std::fma(p, r * r, r) + 1.0f;
  const int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, 4);
  return e * scale;
}

// IEEE half -> float, exact (no F16C needed).
inline float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      exp = 127 - 15 + 1;
      while ((man & 0x400) == 0) { man <<= 1; exp--; }
      man &= 0x3ff;
      bits = sign | (exp << 23) | (man << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

}  // namespace lutlm
