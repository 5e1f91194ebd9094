// AVX-512 VNNI kernels for the int8 dot-product (MAD) path: one vpdpbusd multiplies a
// broadcast quad of activations with a quad of weights for all 16 rows of a tile, so
// the quad layout needs no horizontal sums. Compiled with -mavx512f -mavx512bw
// -mavx512vnni (plus the AVX2 set); selected only when the CPU and OS support them.
// The LUT kernels and table builders are the AVX2 ones.
#include <immintrin.h>

#include <cstring>

#include "int4_epilogue.h"
#include "kernels.h"
#include "kernels_x86.h"
#include "quant_types.h"

namespace lutlm {
namespace avx512 {

inline __m512i bcast_x4(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm512_set1_epi32(v);
}

// vpdpbusd takes unsigned weights: it computes sum (w+1)*x, and sum x is subtracted.
void mad_ternary_tile_avx512(const int8_t* x8, int32_t x_sum, const int8_t* wq, int k_len,
                             int32_t acc[16]) {
  const __m512i one8 = _mm512_set1_epi8(1);
  // Four independent accumulators: vpdpbusd's latency is several cycles.
  __m512i a[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                  _mm512_setzero_si512()};
  const int quads = k_len / 4;  // a multiple of 8: k_len is a multiple of 32
  for (int q = 0; q < quads; q += 4)
    for (int i = 0; i < 4; ++i) {
      const __m512i w = _mm512_loadu_si512(wq + 64 * (q + i));
      a[i] = _mm512_dpbusd_epi32(a[i], _mm512_add_epi8(w, one8), bcast_x4(x8 + 4 * (q + i)));
    }
  const __m512i sx = _mm512_set1_epi32(x_sum);
  const __m512i r = _mm512_sub_epi32(
      _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3])), sx);
  _mm512_storeu_si512(acc, _mm512_add_epi32(_mm512_loadu_si512(acc), r));
}

// All 16 rows of a tile in one lane set, for int4_mad_group_epilogue.
struct Lanes16 {
  using F = __m512;
  using I = __m512i;
  static F load_fp16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p));
  }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static I set1(int32_t v) { return _mm512_set1_epi32(v); }
  static F cvt(I v) { return _mm512_cvtepi32_ps(v); }
  static I sub(I a, I b) { return _mm512_sub_epi32(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
};

// Weights of four consecutive quads, from the quad layout (four 64-byte loads) or from
// the nibble layout (two octets: the low nibbles are the first quad, the high the next).
template <bool kNibbles>
inline void load_quads4(const uint8_t*& w, __m512i q[4]) {
  if constexpr (kNibbles) {
    const __m512i nib = _mm512_set1_epi8(0x0f);
    _mm_prefetch((const char*)(w + kNibblePrefetchBytes), _MM_HINT_T0);
    _mm_prefetch((const char*)(w + kNibblePrefetchBytes + 64), _MM_HINT_T0);
    for (int o = 0; o < 2; ++o) {
      const __m512i v = _mm512_loadu_si512(w + 64 * o);
      q[2 * o] = _mm512_and_si512(v, nib);
      q[2 * o + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
    }
    w += 128;
  } else {
    for (int i = 0; i < 4; ++i) q[i] = _mm512_loadu_si512(w + 64 * i);
    w += 256;
  }
}

template <bool kNibbles>
void mad_int4_avx512(const int8_t* x8, const float* xs, const int32_t* xsum8, const uint8_t* wq,
                     const uint16_t* d, const uint16_t* m, int groups, int group_size, float y[16]) {
  __m512 yv = _mm512_loadu_ps(y);
  const int quads = group_size / 4;  // 8, 16 or 32
  for (int g = 0; g < groups; ++g) {
    __m512i a[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                    _mm512_setzero_si512()};
    const int8_t* xg = x8 + g * group_size;
    for (int q = 0; q < quads; q += 4) {
      __m512i w[4];
      load_quads4<kNibbles>(wq, w);
      for (int i = 0; i < 4; ++i) a[i] = _mm512_dpbusd_epi32(a[i], w[i], bcast_x4(xg + 4 * (q + i)));
    }
    const __m512i dot =
        _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3]));
    yv = int4_mad_group_epilogue<Lanes16>(dot, d + g * 16, m ? m + g * 16 : nullptr, xsum8[g],
                                          xs[g], yv);
  }
  _mm512_storeu_ps(y, yv);
}

// R rows share each weight load; per row the integer dot and the fp32 epilogue are
// mad_int4_avx512's, in the same order.
template <bool kNibbles, int R>
void mad_int4_rows_avx512(const int8_t* x8, int64_t x_stride, const float* xs,
                          const int32_t* xsum8, int64_t g_stride, const uint8_t* wq,
                          const uint16_t* d, const uint16_t* m, int groups, int group_size,
                          float* y) {
  __m512 yv[R];
  for (int r = 0; r < R; ++r) yv[r] = _mm512_loadu_ps(y + 16 * r);
  const int quads = group_size / 4;
  for (int g = 0; g < groups; ++g) {
    __m512i a[R][2];
    for (int r = 0; r < R; ++r) a[r][0] = a[r][1] = _mm512_setzero_si512();
    for (int q = 0; q < quads; q += 2) {
      __m512i w0, w1;
      if constexpr (kNibbles) {  // one octet: low nibbles quad q, high nibbles quad q + 1
        const __m512i nib = _mm512_set1_epi8(0x0f);
        _mm_prefetch((const char*)(wq + kNibblePrefetchBytes), _MM_HINT_T0);
        const __m512i v = _mm512_loadu_si512(wq);
        w0 = _mm512_and_si512(v, nib);
        w1 = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
        wq += 64;
      } else {
        w0 = _mm512_loadu_si512(wq);
        w1 = _mm512_loadu_si512(wq + 64);
        wq += 128;
      }
      for (int r = 0; r < R; ++r) {
        const int8_t* xr = x8 + r * x_stride + g * group_size + 4 * q;
        a[r][0] = _mm512_dpbusd_epi32(a[r][0], w0, bcast_x4(xr));
        a[r][1] = _mm512_dpbusd_epi32(a[r][1], w1, bcast_x4(xr + 4));
      }
    }
    for (int r = 0; r < R; ++r)
      yv[r] = int4_mad_group_epilogue<Lanes16>(_mm512_add_epi32(a[r][0], a[r][1]), d + g * 16,
                                               m ? m + g * 16 : nullptr, xsum8[r * g_stride + g],
                                               xs[r * g_stride + g], yv[r]);
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(y + 16 * r, yv[r]);
}

template <bool kNibbles>
void mad_int4_tile_rows_avx512(int rows, const int8_t* x8, int64_t x_stride, const float* xs,
                               const int32_t* xsum8, int64_t g_stride, const uint8_t* wq,
                               const uint16_t* d, const uint16_t* m, int groups, int group_size,
                               float* y) {
  switch (rows) {
    case 4: return mad_int4_rows_avx512<kNibbles, 4>(x8, x_stride, xs, xsum8, g_stride, wq, d, m, groups, group_size, y);
    case 3: return mad_int4_rows_avx512<kNibbles, 3>(x8, x_stride, xs, xsum8, g_stride, wq, d, m, groups, group_size, y);
    case 2: return mad_int4_rows_avx512<kNibbles, 2>(x8, x_stride, xs, xsum8, g_stride, wq, d, m, groups, group_size, y);
    default:  // one row: four accumulators hide vpdpbusd's latency better than two
      return mad_int4_avx512<kNibbles>(x8, xs, xsum8, wq, d, m, groups, group_size, y);
  }
}

// vpdpbusd takes unsigned weights: w ^ 0x80 = w + 128 as u8, so it computes
// t + 128 * sum x, and 128 * xsum8 is subtracted per group.
void mad_int8_tile_avx512(const int8_t* x8, const float* xs, const int32_t* xsum8,
                          const int8_t* wq, const uint16_t* d, int groups, int group_size,
                          float y[16]) {
  const __m512i bias = _mm512_set1_epi8((char)0x80);
  __m512 yv = _mm512_loadu_ps(y);
  const int quads = group_size / 4;  // 8, 16 or 32
  for (int g = 0; g < groups; ++g) {
    __m512i a[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                    _mm512_setzero_si512()};
    const int8_t* xg = x8 + g * group_size;
    for (int q = 0; q < quads; q += 4, wq += 256) {
      for (int i = 0; i < 4; ++i)
        _mm_prefetch((const char*)(wq + kNibblePrefetchBytes + 64 * i), _MM_HINT_T0);
      for (int i = 0; i < 4; ++i)
        a[i] = _mm512_dpbusd_epi32(a[i], _mm512_xor_si512(_mm512_loadu_si512(wq + 64 * i), bias),
                                   bcast_x4(xg + 4 * (q + i)));
    }
    const __m512i t = _mm512_sub_epi32(
        _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3])),
        _mm512_set1_epi32(xsum8[g] * 128));
    const __m512 dg = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(d + g * 16)));
    yv = _mm512_fmadd_ps(dg, _mm512_mul_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(xs[g])), yv);
  }
  _mm512_storeu_ps(y, yv);
}

}  // namespace avx512

const IsaKernels kAvx512Kernels = {
    "avx512", avx2::ternary_tables_avx2, avx2::int4_tables_avx2, avx2::lut_ternary_tile_avx2,
    avx2::lut_int4_tile_avx2, avx512::mad_ternary_tile_avx512,
    avx512::mad_int4_tile_rows_avx512<false>, avx512::mad_int4_tile_rows_avx512<true>,
    avx512::mad_int8_tile_avx512, avx2::fp16_to_fp32_avx2, avx2::fp32_to_fp16_avx2,
    avx2::dot_f32_avx2, avx2::exp_f32_avx2, avx2::dots_f32_avx2,
    avx2::axpys_f32_avx2, 64, 8,
};

}  // namespace lutlm
