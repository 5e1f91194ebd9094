// AVX2 + FMA + F16C kernels. This file alone is compiled with -mavx2 -mfma -mf16c;
// cpu_features.cpp selects it only when the running CPU reports all three. The
// AVX-512 table (kernels_avx512.cpp) reuses the table builders and LUT kernels.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "int4_epilogue.h"
#include "kernels.h"
#include "kernels_x86.h"
#include "quant_types.h"

namespace lutlm {
namespace avx2 {

// Software prefetch distance of the LUT kernels, in 32-byte steps (2 KiB).
constexpr int kPrefetchSteps = 64;

// Both 128-bit lanes hold rows 0..7 of an int16 accumulator (for different slots):
// widen and add the lanes.
inline __m256i lanes_to_rows_epi32(__m256i a16) {
  return _mm256_add_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(a16)),
                          _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a16, 1)));
}

// Transposes the 4x4 byte blocks of each 128-bit lane: byte 4i+j -> 4j+i.
inline __m256i transpose4x4_epi8(__m256i v) {
  const __m256i idx = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                       0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm256_shuffle_epi8(v, idx);
}

// Round-half-even to int32 (cvtps uses the default rounding mode) and pack four
// vectors of 8 lanes to bytes: lane L of the result holds [a, b, c, d] for elements
// 4L..4L+3 of each input.
inline __m256i round_pack4(__m256 a, __m256 b, __m256 c, __m256 d, __m256 inv) {
  const __m256i ab = _mm256_packs_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(a, inv)),
                                        _mm256_cvtps_epi32(_mm256_mul_ps(b, inv)));
  const __m256i cd = _mm256_packs_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(c, inv)),
                                        _mm256_cvtps_epi32(_mm256_mul_ps(d, inv)));
  return _mm256_packs_epi16(ab, cd);
}

inline float hmax_ps(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// Same bytes as ternary_tables_scalar, 8 pairs (16 activations) at a time.
float ternary_tables_avx2(const float* x, int64_t Kp, int8_t* tab) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  for (int64_t k = 0; k < Kp; k += 16) {
    const __m256 a = _mm256_loadu_ps(x + k), b = _mm256_loadu_ps(x + k + 8);
    const __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    vmax = _mm256_max_ps(vmax, _mm256_add_ps(_mm256_and_ps(ev, absmask), _mm256_and_ps(od, absmask)));
  }
  const float amax = hmax_ps(vmax);
  if (amax == 0.0f) {
    std::memset(tab, 0, (size_t)(Kp / kTernaryStepK) * kTernaryTableBytes);
    return 0.0f;
  }
  const __m256 inv = _mm256_set1_ps(127.0f / amax);
  // Table of a pair from its bytes [s a b d -s -a -b -d] at offset 0 (A) or 8 (B):
  // entries -s, -a, -d, -b, 0, b, d, a, s (0x80 gives zero).
  const __m256i idx_a = _mm256_setr_epi8(4, 5, 7, 6, -128, 2, 3, 1, 0, -128, -128, -128, -128,
                                         -128, -128, -128, 4, 5, 7, 6, -128, 2, 3, 1, 0, -128,
                                         -128, -128, -128, -128, -128, -128);
  const __m256i idx_b = _mm256_add_epi8(idx_a, _mm256_setr_epi8(
      8, 8, 8, 8, 0, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 8, 0, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0));
  for (int64_t k = 0; k < Kp; k += 16, tab += 128) {
    const __m256 a = _mm256_loadu_ps(x + k), b = _mm256_loadu_ps(x + k + 8);
    // Lanes hold pairs in the order 0 1 4 5 | 2 3 6 7.
    const __m256 x0 = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 x1 = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    const __m256i q = transpose4x4_epi8(
        round_pack4(_mm256_add_ps(x0, x1), x0, x1, _mm256_sub_ps(x0, x1), inv));
    const __m256i nq = _mm256_sub_epi8(_mm256_setzero_si256(), q);
    const __m256i lo = _mm256_unpacklo_epi32(q, nq);  // pairs 0, 1 | 2, 3
    const __m256i hi = _mm256_unpackhi_epi32(q, nq);  // pairs 4, 5 | 6, 7
    const __m256i t02 = _mm256_shuffle_epi8(lo, idx_a), t13 = _mm256_shuffle_epi8(lo, idx_b);
    const __m256i t46 = _mm256_shuffle_epi8(hi, idx_a), t57 = _mm256_shuffle_epi8(hi, idx_b);
    __m256i* out = (__m256i*)tab;
    _mm256_storeu_si256(out + 0, _mm256_permute2x128_si256(t02, t13, 0x20));
    _mm256_storeu_si256(out + 1, _mm256_permute2x128_si256(t02, t13, 0x31));
    _mm256_storeu_si256(out + 2, _mm256_permute2x128_si256(t46, t57, 0x20));
    _mm256_storeu_si256(out + 3, _mm256_permute2x128_si256(t46, t57, 0x31));
  }
  return amax / 127.0f;
}

// Loads 8 quads (32 activations) as X[i] = element i of each quad; lanes hold the
// quads in the order 0 2 4 6 | 1 3 5 7.
inline void load_quads(const float* x, __m256 X[4]) {
  const __m256 a = _mm256_loadu_ps(x), b = _mm256_loadu_ps(x + 8);
  const __m256 c = _mm256_loadu_ps(x + 16), d = _mm256_loadu_ps(x + 24);
  const __m256 ab_lo = _mm256_unpacklo_ps(a, b), ab_hi = _mm256_unpackhi_ps(a, b);
  const __m256 cd_lo = _mm256_unpacklo_ps(c, d), cd_hi = _mm256_unpackhi_ps(c, d);
  X[0] = _mm256_shuffle_ps(ab_lo, cd_lo, _MM_SHUFFLE(1, 0, 1, 0));
  X[1] = _mm256_shuffle_ps(ab_lo, cd_lo, _MM_SHUFFLE(3, 2, 3, 2));
  X[2] = _mm256_shuffle_ps(ab_hi, cd_hi, _MM_SHUFFLE(1, 0, 1, 0));
  X[3] = _mm256_shuffle_ps(ab_hi, cd_hi, _MM_SHUFFLE(3, 2, 3, 2));
}

// Same bytes as int4_tables_scalar, 8 quads at a time.
void int4_tables_avx2(const float* x, int64_t Kp, int group_size, int8_t* tab, float* tscale) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t g = 0; g < Kp / group_size; ++g) {
    const float* xg = x + g * group_size;
    int8_t* tg = tab + (g * group_size / kInt4StepK) * kInt4TableBytes;
    __m256 vmax = zero;
    for (int k = 0; k < group_size; k += 32) {
      __m256 X[4];
      load_quads(xg + k, X);
      __m256 pos = _mm256_max_ps(X[0], zero), neg = _mm256_min_ps(X[0], zero);
      for (int i = 1; i < 4; ++i) {
        pos = _mm256_add_ps(pos, _mm256_max_ps(X[i], zero));
        neg = _mm256_add_ps(neg, _mm256_min_ps(X[i], zero));
      }
      vmax = _mm256_max_ps(vmax, _mm256_max_ps(pos, _mm256_sub_ps(zero, neg)));
    }
    const float amax = hmax_ps(vmax);
    tscale[g] = amax / 127.0f;
    if (amax == 0.0f) {
      std::memset(tg, 0, (size_t)(group_size / kInt4StepK) * kInt4TableBytes);
      continue;
    }
    const __m256 inv = _mm256_set1_ps(127.0f / amax);
    for (int k = 0; k < group_size; k += 32, tg += 8 * kInt4TableBytes) {
      __m256 X[4], S[16];
      load_quads(xg + k, X);
      S[0] = zero;
      for (int idx = 1; idx < 16; ++idx) {
        const int hb = 31 - __builtin_clz(idx);
        S[idx] = idx == (1 << hb) ? X[hb] : _mm256_add_ps(S[idx & ~(1 << hb)], X[hb]);
      }
      // B[j] lane 0 holds entries 4j..4j+3 of quads 0 2 4 6, lane 1 of quads 1 3 5 7.
      __m256i B[4];
      for (int j = 0; j < 4; ++j)
        B[j] = transpose4x4_epi8(round_pack4(S[4 * j], S[4 * j + 1], S[4 * j + 2], S[4 * j + 3], inv));
      const __m256i l01 = _mm256_unpacklo_epi32(B[0], B[1]), h01 = _mm256_unpackhi_epi32(B[0], B[1]);
      const __m256i l23 = _mm256_unpacklo_epi32(B[2], B[3]), h23 = _mm256_unpackhi_epi32(B[2], B[3]);
      const __m256i T[4] = {_mm256_unpacklo_epi64(l01, l23), _mm256_unpackhi_epi64(l01, l23),
                            _mm256_unpacklo_epi64(h01, h23), _mm256_unpackhi_epi64(h01, h23)};
      // T[j] = [table of quad 2j | table of quad 2j+1]; each quad's step is [T | -T].
      for (int j = 0; j < 4; ++j) {
        const __m256i n = _mm256_sub_epi8(_mm256_setzero_si256(), T[j]);
        __m256i* out = (__m256i*)(tg + 2 * j * kInt4TableBytes);
        _mm256_storeu_si256(out, _mm256_permute2x128_si256(T[j], n, 0x20));
        _mm256_storeu_si256(out + 1, _mm256_permute2x128_si256(T[j], n, 0x31));
      }
    }
  }
}

void lut_ternary_tile_avx2(const uint8_t* codes, const int8_t* tables, int steps,
                           int32_t acc[16]) {
  const __m256i nib = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi8(1);
  __m256i lo32 = _mm256_setzero_si256(), hi32 = _mm256_setzero_si256();
  for (int s = 0; s < steps;) {
    // Each step adds at most 2*127 to an int16 lane: flush before 129 steps.
    const int end = s + 128 < steps ? s + 128 : steps;
    __m256i lo16 = _mm256_setzero_si256(), hi16 = _mm256_setzero_si256();
    for (; s < end; ++s) {
      // The codes are one sequential stream (tiles are contiguous); fetching ahead
      // keeps DRAM busy while the lookups run.
      _mm_prefetch((const char*)(codes + (size_t)(s + kPrefetchSteps) * kStepBytes), _MM_HINT_T0);
      const __m256i v = _mm256_loadu_si256((const __m256i*)(codes + (size_t)s * kStepBytes));
      const int8_t* t = tables + (size_t)s * kTernaryTableBytes;
      const __m256i ta = _mm256_loadu_si256((const __m256i*)t);
      const __m256i tb = _mm256_loadu_si256((const __m256i*)(t + 32));
      const __m256i ra = _mm256_shuffle_epi8(ta, _mm256_and_si256(v, nib));
      const __m256i rb = _mm256_shuffle_epi8(tb, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib));
      lo16 = _mm256_add_epi16(lo16, _mm256_maddubs_epi16(ones, _mm256_unpacklo_epi8(ra, rb)));
      hi16 = _mm256_add_epi16(hi16, _mm256_maddubs_epi16(ones, _mm256_unpackhi_epi8(ra, rb)));
    }
    lo32 = _mm256_add_epi32(lo32, lanes_to_rows_epi32(lo16));
    hi32 = _mm256_add_epi32(hi32, lanes_to_rows_epi32(hi16));
  }
  __m256i* out = (__m256i*)acc;
  _mm256_storeu_si256(out, _mm256_add_epi32(_mm256_loadu_si256(out), lo32));
  _mm256_storeu_si256(out + 1, _mm256_add_epi32(_mm256_loadu_si256(out + 1), hi32));
}

void lut_int4_tile_avx2(const Int4TileArgs& w, const int8_t* tables, const float* tscale,
                        const float* xsum, float y[16]) {
  const __m256i nib = _mm256_set1_epi8(0x0f);
  // Plane weights: lane 0 pairs (P0, P2) -> (1, 4); lane 1 pairs (P1, P3) -> (2, 8),
  // where P3 is looked up in the negated table (its weight is -8).
  const __m256i mult = _mm256_setr_epi8(1, 4, 1, 4, 1, 4, 1, 4, 1, 4, 1, 4, 1, 4, 1, 4,
                                        2, 8, 2, 8, 2, 8, 2, 8, 2, 8, 2, 8, 2, 8, 2, 8);
  const __m256 eight = _mm256_set1_ps(8.0f);
  __m256 y0 = _mm256_loadu_ps(y), y1 = _mm256_loadu_ps(y + 8);
  const uint8_t* c = w.codes;
  const int8_t* t = tables;
  for (int g = 0; g < w.groups; ++g) {
    __m256i lo32 = _mm256_setzero_si256(), hi32 = _mm256_setzero_si256();
    for (int s = 0; s < w.group_steps; s += 8) {
      // Each step adds at most 10*127 to an int16 lane: flush every 8 steps.
      __m256i lo16 = _mm256_setzero_si256(), hi16 = _mm256_setzero_si256();
      for (int i = 0; i < 8; ++i, c += kStepBytes, t += kInt4TableBytes) {
        _mm_prefetch((const char*)(c + kPrefetchSteps * kStepBytes), _MM_HINT_T0);
        const __m256i v = _mm256_loadu_si256((const __m256i*)c);
        const __m256i ta = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)t));
        const __m256i tb = _mm256_loadu_si256((const __m256i*)t);  // T | -T
        const __m256i ra = _mm256_shuffle_epi8(ta, _mm256_and_si256(v, nib));
        const __m256i rb = _mm256_shuffle_epi8(tb, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib));
        lo16 = _mm256_add_epi16(lo16, _mm256_maddubs_epi16(mult, _mm256_unpacklo_epi8(ra, rb)));
        hi16 = _mm256_add_epi16(hi16, _mm256_maddubs_epi16(mult, _mm256_unpackhi_epi8(ra, rb)));
      }
      lo32 = _mm256_add_epi32(lo32, lanes_to_rows_epi32(lo16));
      hi32 = _mm256_add_epi32(hi32, lanes_to_rows_epi32(hi16));
    }
    const __m256 d0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(w.d + g * 16)));
    const __m256 d1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(w.d + g * 16 + 8)));
    const __m256 ts = _mm256_set1_ps(tscale[g]);
    y0 = _mm256_fmadd_ps(d0, _mm256_mul_ps(_mm256_cvtepi32_ps(lo32), ts), y0);
    y1 = _mm256_fmadd_ps(d1, _mm256_mul_ps(_mm256_cvtepi32_ps(hi32), ts), y1);
    if (w.m) {  // w = d*(q-8) + (m + 8d)
      const __m256 xs = _mm256_set1_ps(xsum[g]);
      const __m256 m0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(w.m + g * 16)));
      const __m256 m1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(w.m + g * 16 + 8)));
      y0 = _mm256_fmadd_ps(_mm256_add_ps(m0, _mm256_mul_ps(eight, d0)), xs, y0);
      y1 = _mm256_fmadd_ps(_mm256_add_ps(m1, _mm256_mul_ps(eight, d1)), xs, y1);
    }
  }
  _mm256_storeu_ps(y, y0);
  _mm256_storeu_ps(y + 8, y1);
}

void fp16_to_fp32_avx2(const uint16_t* src, float* dst, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(src + i))));
  for (; i < n; ++i) dst[i] = fp16_to_fp32(src[i]);
}

float dot_f32_avx2(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));  // l_j + l_j+4
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));  // (l0+l4)+(l2+l6), (l1+l5)+(l3+l7)
  float s = _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
  for (; i < n; ++i) s = std::fma(a[i], b[i], s);
  return s;
}

void exp_f32_avx2(const float* x, float* y, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    const __m256 under = _mm256_cmp_ps(v, _mm256_set1_ps(kExpLo), _CMP_LT_OQ);
    v = _mm256_min_ps(v, _mm256_set1_ps(kExpHi));
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    const __m256 n = _mm256_sub_ps(
        _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)), magic), magic);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), v);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(kExpC[0]);
    for (int c = 1; c < 6; ++c) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpC[c]));
    const __m256 e =
        _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 out = _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
    _mm256_storeu_ps(y + i, _mm256_andnot_ps(under, out));
  }
  for (; i < n; ++i) y[i] = exp_f32_step(x[i]);
}

void dots_f32_avx2(const float* q, const float* k, int n, int d, float* out) {
  for (int i = 0; i < n; ++i) out[i] = dot_f32_avx2(q, k + (size_t)i * d, d);
}

void axpys_f32_avx2(const float* p, const float* v, int n, int d, float* acc) {
  int j = 0;
  for (; j + 8 <= d; j += 8) {  // acc stays in a register across the keys
    __m256 a = _mm256_loadu_ps(acc + j);
    for (int i = 0; i < n; ++i)
      a = _mm256_fmadd_ps(_mm256_set1_ps(p[i]), _mm256_loadu_ps(v + (size_t)i * d + j), a);
    _mm256_storeu_ps(acc + j, a);
  }
  for (; j < d; ++j)
    for (int i = 0; i < n; ++i) acc[j] = std::fma(p[i], v[(size_t)i * d + j], acc[j]);
}

void fp32_to_fp16_avx2(const float* src, uint16_t* dst, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i*)(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) dst[i] = fp32_to_fp16_bits(src[i]);
}

inline __m256i bcast_x4(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm256_set1_epi32(v);
}

void mad_ternary_tile_avx2(const int8_t* x8, int32_t /*x_sum*/, const int8_t* wq, int k_len,
                           int32_t acc[16]) {
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();  // rows 0-7, 8-15
  for (int q = 0; q < k_len / 4;) {
    // Each quad adds at most 2*127 to an int16 lane: flush every 128 quads.
    const int end = q + 128 < k_len / 4 ? q + 128 : k_len / 4;
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (; q < end; ++q) {
      const __m256i x = bcast_x4(x8 + 4 * q);
      const __m256i w0 = _mm256_loadu_si256((const __m256i*)(wq + 64 * q));
      const __m256i w1 = _mm256_loadu_si256((const __m256i*)(wq + 64 * q + 32));
      s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(ones8, _mm256_sign_epi8(x, w0)));
      s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(ones8, _mm256_sign_epi8(x, w1)));
    }
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(s0, ones16));
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(s1, ones16));
  }
  __m256i* out = (__m256i*)acc;
  _mm256_storeu_si256(out, _mm256_add_epi32(_mm256_loadu_si256(out), a0));
  _mm256_storeu_si256(out + 1, _mm256_add_epi32(_mm256_loadu_si256(out + 1), a1));
}

// Rows 0-7 and 8-15 of quad i of the current 8: from the quad layout (64 bytes per
// quad), or from the nibble layout (64 bytes per octet: low nibbles quad 2j, high 2j+1).
template <bool kNibbles>
inline void load_quad(const uint8_t* w, int i, __m256i& r0, __m256i& r1) {
  if constexpr (kNibbles) {
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const int shift = 4 * (i & 1);
    const uint8_t* o = w + 64 * (i >> 1);
    if (!(i & 1)) _mm_prefetch((const char*)(o + kNibblePrefetchBytes), _MM_HINT_T0);
    r0 = _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256((const __m256i*)o), shift), nib);
    r1 = _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256((const __m256i*)(o + 32)), shift),
                          nib);
  } else {
    r0 = _mm256_loadu_si256((const __m256i*)(w + 64 * i));
    r1 = _mm256_loadu_si256((const __m256i*)(w + 64 * i + 32));
  }
}

// Eight rows per lane set, for int4_mad_group_epilogue (rows 0-7, then 8-15).
struct Lanes8 {
  using F = __m256;
  using I = __m256i;
  static F load_fp16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
  }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static I set1(int32_t v) { return _mm256_set1_epi32(v); }
  static F cvt(I v) { return _mm256_cvtepi32_ps(v); }
  static I sub(I a, I b) { return _mm256_sub_epi32(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
};

// R rows of activations (row r at x8 + r * x_stride, xs / xsum8 + r * g_stride, y + 16 r)
// share each weight load; mad_int4_tile_rows runs it with R = 2 and 1 (16 ymm registers
// hold two rows' accumulators without spilling).
template <bool kNibbles, int R>
void mad_int4_avx2_rows(const int8_t* x8, int64_t x_stride, const float* xs,
                        const int32_t* xsum8, int64_t g_stride, const uint8_t* wq,
                        const uint16_t* d, const uint16_t* m, int groups, int group_size,
                        float* y) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256 y0[R], y1[R];
  for (int r = 0; r < R; ++r) y0[r] = _mm256_loadu_ps(y + 16 * r), y1[r] = _mm256_loadu_ps(y + 16 * r + 8);
  const int quads = group_size / 4;
  for (int g = 0; g < groups; ++g) {
    __m256i dot0[R], dot1[R];
    for (int r = 0; r < R; ++r) dot0[r] = dot1[r] = _mm256_setzero_si256();
    for (int q = 0; q < quads; q += 8, wq += kNibbles ? 256 : 512) {
      // q*x pairs are at most 2*15*127 per int16 lane: flush every 8 quads.
      __m256i s0[R], s1[R];
      for (int r = 0; r < R; ++r) s0[r] = s1[r] = _mm256_setzero_si256();
      for (int i = 0; i < 8; ++i) {
        __m256i w0, w1;
        load_quad<kNibbles>(wq, i, w0, w1);
        for (int r = 0; r < R; ++r) {
          const __m256i x = bcast_x4(x8 + r * x_stride + (g * quads + q + i) * 4);
          s0[r] = _mm256_add_epi16(s0[r], _mm256_maddubs_epi16(w0, x));
          s1[r] = _mm256_add_epi16(s1[r], _mm256_maddubs_epi16(w1, x));
        }
      }
      for (int r = 0; r < R; ++r) {
        dot0[r] = _mm256_add_epi32(dot0[r], _mm256_madd_epi16(s0[r], ones16));
        dot1[r] = _mm256_add_epi32(dot1[r], _mm256_madd_epi16(s1[r], ones16));
      }
    }
    const uint16_t* mg = m ? m + g * 16 : nullptr;
    for (int r = 0; r < R; ++r) {
      const int32_t xsum = xsum8[r * g_stride + g];
      const float xsr = xs[r * g_stride + g];
      y0[r] = int4_mad_group_epilogue<Lanes8>(dot0[r], d + g * 16, mg, xsum, xsr, y0[r]);
      y1[r] = int4_mad_group_epilogue<Lanes8>(dot1[r], d + g * 16 + 8, mg ? mg + 8 : nullptr,
                                              xsum, xsr, y1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(y + 16 * r, y0[r]);
    _mm256_storeu_ps(y + 16 * r + 8, y1[r]);
  }
}

template <bool kNibbles>
void mad_int4_tile_rows_avx2(int rows, const int8_t* x8, int64_t x_stride, const float* xs,
                             const int32_t* xsum8, int64_t g_stride, const uint8_t* wq,
                             const uint16_t* d, const uint16_t* m, int groups, int group_size,
                             float* y) {
  for (int r = 0; r < rows; r += 2) {
    const int64_t o = r * g_stride;
    if (rows - r >= 2)
      mad_int4_avx2_rows<kNibbles, 2>(x8 + r * x_stride, x_stride, xs + o, xsum8 + o, g_stride,
                                      wq, d, m, groups, group_size, y + 16 * r);
    else
      mad_int4_avx2_rows<kNibbles, 1>(x8 + r * x_stride, x_stride, xs + o, xsum8 + o, g_stride,
                                      wq, d, m, groups, group_size, y + 16 * r);
  }
}

// vpmaddubsw needs one unsigned operand: |w| (128 for w = -128 reads right as u8) times
// x with w's sign. A pair is at most 2*128*127 = 32512, so it cannot saturate, but two
// pairs could overflow int16: widen every quad.
void mad_int8_tile_avx2(const int8_t* x8, const float* xs, const int32_t* /*xsum8*/,
                        const int8_t* wq, const uint16_t* d, int groups, int group_size,
                        float y[16]) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256 y0 = _mm256_loadu_ps(y), y1 = _mm256_loadu_ps(y + 8);
  const int quads = group_size / 4;
  for (int g = 0; g < groups; ++g) {
    __m256i dot0 = _mm256_setzero_si256(), dot1 = _mm256_setzero_si256();
    for (int q = 0; q < quads; ++q, wq += 64) {
      _mm_prefetch((const char*)(wq + kNibblePrefetchBytes), _MM_HINT_T0);
      const __m256i x = bcast_x4(x8 + (g * quads + q) * 4);
      const __m256i w0 = _mm256_loadu_si256((const __m256i*)wq);
      const __m256i w1 = _mm256_loadu_si256((const __m256i*)(wq + 32));
      const __m256i p0 = _mm256_maddubs_epi16(_mm256_abs_epi8(w0), _mm256_sign_epi8(x, w0));
      const __m256i p1 = _mm256_maddubs_epi16(_mm256_abs_epi8(w1), _mm256_sign_epi8(x, w1));
      dot0 = _mm256_add_epi32(dot0, _mm256_madd_epi16(p0, ones16));
      dot1 = _mm256_add_epi32(dot1, _mm256_madd_epi16(p1, ones16));
    }
    const __m256 d0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(d + g * 16)));
    const __m256 d1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(d + g * 16 + 8)));
    const __m256 xsv = _mm256_set1_ps(xs[g]);
    y0 = _mm256_fmadd_ps(d0, _mm256_mul_ps(_mm256_cvtepi32_ps(dot0), xsv), y0);
    y1 = _mm256_fmadd_ps(d1, _mm256_mul_ps(_mm256_cvtepi32_ps(dot1), xsv), y1);
  }
  _mm256_storeu_ps(y, y0);
  _mm256_storeu_ps(y + 8, y1);
}

}  // namespace avx2

const IsaKernels kAvx2Kernels = {
    "avx2", avx2::ternary_tables_avx2, avx2::int4_tables_avx2, avx2::lut_ternary_tile_avx2,
    avx2::lut_int4_tile_avx2, avx2::mad_ternary_tile_avx2,
    avx2::mad_int4_tile_rows_avx2<false>, avx2::mad_int4_tile_rows_avx2<true>,
    avx2::mad_int8_tile_avx2, avx2::fp16_to_fp32_avx2, avx2::fp32_to_fp16_avx2,
    avx2::dot_f32_avx2, avx2::exp_f32_avx2, avx2::dots_f32_avx2,
    avx2::axpys_f32_avx2, 512, 8,
};

}  // namespace lutlm
