// NEON kernels (AArch64 baseline ISA: always available there). Cross-built and run
// under qemu-aarch64 by tests/native/ against the scalar kernels.
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "int4_epilogue.h"
#include "kernels.h"
#include "quant_types.h"

namespace lutlm {
namespace {

constexpr int kPrefetchSteps = 64;  // 2 KiB ahead in the code stream

inline void add_rows_s16(int32x4_t acc[4], int16x8_t lo, int16x8_t hi) {
  acc[0] = vaddw_s16(acc[0], vget_low_s16(lo));
  acc[1] = vaddw_s16(acc[1], vget_high_s16(lo));
  acc[2] = vaddw_s16(acc[2], vget_low_s16(hi));
  acc[3] = vaddw_s16(acc[3], vget_high_s16(hi));
}

void lut_ternary_tile_neon(const uint8_t* codes, const int8_t* tables, int steps,
                           int32_t acc[16]) {
  const uint8x16_t nib = vdupq_n_u8(0x0f);
  int32x4_t a32[4];
  for (int i = 0; i < 4; ++i) a32[i] = vld1q_s32(acc + 4 * i);
  for (int s = 0; s < steps;) {
    // Each step adds at most 4*127 to an int16 lane: flush every 64 steps.
    const int end = s + 64 < steps ? s + 64 : steps;
    int16x8_t lo = vdupq_n_s16(0), hi = vdupq_n_s16(0);
    for (; s < end; ++s) {
      const uint8_t* c = codes + (size_t)s * kStepBytes;
      const int8_t* t = tables + (size_t)s * kTernaryTableBytes;
      __builtin_prefetch(c + kPrefetchSteps * kStepBytes);  // one sequential stream
      const uint8x16_t v0 = vld1q_u8(c), v1 = vld1q_u8(c + 16);
      const int8x16_t ra = vqtbl1q_s8(vld1q_s8(t), vandq_u8(v0, nib));
      const int8x16_t rb = vqtbl1q_s8(vld1q_s8(t + 16), vandq_u8(v1, nib));
      const int8x16_t rc = vqtbl1q_s8(vld1q_s8(t + 32), vshrq_n_u8(v0, 4));
      const int8x16_t rd = vqtbl1q_s8(vld1q_s8(t + 48), vshrq_n_u8(v1, 4));
      lo = vaddq_s16(lo, vaddl_s8(vget_low_s8(ra), vget_low_s8(rc)));
      hi = vaddq_s16(hi, vaddl_high_s8(ra, rc));
      lo = vaddq_s16(lo, vaddl_s8(vget_low_s8(rb), vget_low_s8(rd)));
      hi = vaddq_s16(hi, vaddl_high_s8(rb, rd));
    }
    add_rows_s16(a32, lo, hi);
  }
  for (int i = 0; i < 4; ++i) vst1q_s32(acc + 4 * i, a32[i]);
}

void lut_int4_tile_neon(const Int4TileArgs& w, const int8_t* tables, const float* tscale,
                        const float* xsum, float y[16]) {
  const uint8x16_t nib = vdupq_n_u8(0x0f);
  const uint8_t* c = w.codes;
  const int8_t* t = tables;
  float32x4_t yv[4];
  for (int i = 0; i < 4; ++i) yv[i] = vld1q_f32(y + 4 * i);
  for (int g = 0; g < w.groups; ++g) {
    int32x4_t a32[4];
    for (int i = 0; i < 4; ++i) a32[i] = vdupq_n_s32(0);
    for (int s = 0; s < w.group_steps; s += 8) {
      // Each step moves an int16 lane by at most 15*127: flush every 8 steps.
      int16x8_t lo = vdupq_n_s16(0), hi = vdupq_n_s16(0);
      for (int i = 0; i < 8; ++i, c += kStepBytes, t += kInt4TableBytes) {
        __builtin_prefetch(c + kPrefetchSteps * kStepBytes);
        const int8x16_t tb = vld1q_s8(t);
        const uint8x16_t v0 = vld1q_u8(c), v1 = vld1q_u8(c + 16);
        const int8x16_t p0 = vqtbl1q_s8(tb, vandq_u8(v0, nib));
        const int8x16_t p1 = vqtbl1q_s8(tb, vandq_u8(v1, nib));
        const int8x16_t p2 = vqtbl1q_s8(tb, vshrq_n_u8(v0, 4));
        const int8x16_t p3 = vqtbl1q_s8(tb, vshrq_n_u8(v1, 4));
        lo = vaddq_s16(lo, vaddq_s16(vmovl_s8(vget_low_s8(p0)), vshll_n_s8(vget_low_s8(p1), 1)));
        lo = vaddq_s16(lo, vsubq_s16(vshll_n_s8(vget_low_s8(p2), 2),
                                     vshll_n_s8(vget_low_s8(p3), 3)));
        hi = vaddq_s16(hi, vaddq_s16(vmovl_high_s8(p0), vshll_n_s8(vget_high_s8(p1), 1)));
        hi = vaddq_s16(hi, vsubq_s16(vshll_n_s8(vget_high_s8(p2), 2),
                                     vshll_n_s8(vget_high_s8(p3), 3)));
      }
      add_rows_s16(a32, lo, hi);
    }
    const float32x4_t xs = vdupq_n_f32(xsum[g]);
    const float32x4_t ts = vdupq_n_f32(tscale[g]);
    for (int i = 0; i < 4; ++i) {
      const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(w.d + g * 16 + 4 * i)));
      yv[i] = vfmaq_f32(yv[i], d, vmulq_f32(vcvtq_f32_s32(a32[i]), ts));
      if (w.m) {  // w = d*(q-8) + (m + 8d)
        const float32x4_t m = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(w.m + g * 16 + 4 * i)));
        yv[i] = vfmaq_f32(yv[i], vaddq_f32(m, vmulq_n_f32(d, 8.0f)), xs);
      }
    }
  }
  for (int i = 0; i < 4; ++i) vst1q_f32(y + 4 * i, yv[i]);
}

void fp16_to_fp32_neon(const uint16_t* src, float* dst, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
  for (; i < n; ++i) dst[i] = fp16_to_fp32(src[i]);
}

void fp32_to_fp16_neon(const float* src, uint16_t* dst, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
  for (; i < n; ++i) dst[i] = fp32_to_fp16_bits(src[i]);
}

float dot_f32_neon(const float* a, const float* b, int n) {
  float32x4_t lo = vdupq_n_f32(0), hi = vdupq_n_f32(0);  // lanes 0-3 and 4-7
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    lo = vfmaq_f32(lo, vld1q_f32(a + i), vld1q_f32(b + i));
    hi = vfmaq_f32(hi, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
  }
  const float32x4_t h = vaddq_f32(lo, hi);  // l_j + l_j+4
  float s = (vgetq_lane_f32(h, 0) + vgetq_lane_f32(h, 2)) + (vgetq_lane_f32(h, 1) + vgetq_lane_f32(h, 3));
  for (; i < n; ++i) s = std::fma(a[i], b[i], s);
  return s;
}

void exp_f32_neon(const float* x, float* y, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    float32x4_t v = vld1q_f32(x + i);
    const uint32x4_t under = vcltq_f32(v, vdupq_n_f32(kExpLo));
    v = vminq_f32(v, vdupq_n_f32(kExpHi));
    const float32x4_t magic = vdupq_n_f32(12582912.0f);
    const float32x4_t nf =
        vsubq_f32(vaddq_f32(vmulq_f32(v, vdupq_n_f32(1.44269504088896341f)), magic), magic);
    float32x4_t r = vfmaq_f32(v, nf, vdupq_n_f32(-0.693359375f));
    r = vfmaq_f32(r, nf, vdupq_n_f32(2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(kExpC[0]);
    for (int c = 1; c < 6; ++c) p = vfmaq_f32(vdupq_n_f32(kExpC[c]), p, r);
    const float32x4_t e = vaddq_f32(vfmaq_f32(r, p, vmulq_f32(r, r)), vdupq_n_f32(1.0f));
    const int32x4_t bits = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(nf), vdupq_n_s32(127)), 23);
    const float32x4_t out = vmulq_f32(e, vreinterpretq_f32_s32(bits));
    vst1q_f32(y + i, vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(out), under)));
  }
  for (; i < n; ++i) y[i] = exp_f32_step(x[i]);
}

void dots_f32_neon(const float* q, const float* k, int n, int d, float* out) {
  for (int i = 0; i < n; ++i) out[i] = dot_f32_neon(q, k + (size_t)i * d, d);
}

void axpys_f32_neon(const float* p, const float* v, int n, int d, float* acc) {
  int j = 0;
  for (; j + 4 <= d; j += 4) {
    float32x4_t a = vld1q_f32(acc + j);
    for (int i = 0; i < n; ++i) a = vfmaq_f32(a, vdupq_n_f32(p[i]), vld1q_f32(v + (size_t)i * d + j));
    vst1q_f32(acc + j, a);
  }
  for (; j < d; ++j)
    for (int i = 0; i < n; ++i) acc[j] = std::fma(p[i], v[(size_t)i * d + j], acc[j]);
}

// One quad: acc[j] (rows 4j..4j+3, two int32 partial sums each) += x[0..3] . w[r][0..3].
// A product fits int16 (|x| <= 127, |w| <= 128) and vpadal widens pairs to int32,
// so nothing overflows for any int8 weight.
inline void quad_dot(const int8_t* x, const int8_t* wq, int32x4_t acc[8]) {
  int32_t xv;
  std::memcpy(&xv, x, 4);
  const int8x16_t xb = vreinterpretq_s8_s32(vdupq_n_s32(xv));
  for (int j = 0; j < 4; ++j) {
    const int8x16_t w = vld1q_s8(wq + 16 * j);  // rows 4j..4j+3
    acc[2 * j] = vpadalq_s16(acc[2 * j], vmull_s8(vget_low_s8(w), vget_low_s8(xb)));
    acc[2 * j + 1] = vpadalq_s16(acc[2 * j + 1], vmull_high_s8(w, xb));
  }
}

// acc[2j] = [r0 a, r0 b, r1 a, r1 b] of rows 4j, 4j+1 and acc[2j+1] of rows 4j+2, 4j+3.
inline int32x4_t rows_of(const int32x4_t acc[8], int j) {
  return vpaddq_s32(acc[2 * j], acc[2 * j + 1]);
}

void mad_ternary_tile_neon(const int8_t* x8, int32_t /*x_sum*/, const int8_t* wq, int k_len,
                           int32_t acc[16]) {
  int32x4_t a[8];
  for (int i = 0; i < 8; ++i) a[i] = vdupq_n_s32(0);
  for (int q = 0; q < k_len / 4; ++q) quad_dot(x8 + 4 * q, wq + 64 * q, a);
  for (int j = 0; j < 4; ++j) vst1q_s32(acc + 4 * j, vaddq_s32(vld1q_s32(acc + 4 * j), rows_of(a, j)));
}

void mad_int4_tile_neon(const int8_t* x8, const float* xs, const int32_t* xsum8, const uint8_t* wq,
                        const uint16_t* d, const uint16_t* m, int groups, int group_size,
                        float y[16]) {
  const int quads = group_size / 4;
  for (int g = 0; g < groups; ++g) {
    int32x4_t a[8];
    for (int i = 0; i < 8; ++i) a[i] = vdupq_n_s32(0);
    for (int q = 0; q < quads; ++q, wq += 64)  // codes <= 15 read the same as int8
      quad_dot(x8 + (g * quads + q) * 4, (const int8_t*)wq, a);
    int32_t dot[16];
    for (int j = 0; j < 4; ++j) vst1q_s32(dot + 4 * j, rows_of(a, j));
    int4_mad_group_epilogue_rows(dot, d + g * 16, m ? m + g * 16 : nullptr, xsum8[g], xs[g], y);
  }
}

void mad_int8_tile_neon(const int8_t* x8, const float* xs, const int32_t* /*xsum8*/,
                        const int8_t* wq, const uint16_t* d, int groups, int group_size,
                        float y[16]) {
  const int quads = group_size / 4;
  float32x4_t yv[4];
  for (int i = 0; i < 4; ++i) yv[i] = vld1q_f32(y + 4 * i);
  for (int g = 0; g < groups; ++g) {
    int32x4_t a[8];
    for (int i = 0; i < 8; ++i) a[i] = vdupq_n_s32(0);
    for (int q = 0; q < quads; ++q, wq += 64) quad_dot(x8 + (g * quads + q) * 4, wq, a);
    const float32x4_t xsv = vdupq_n_f32(xs[g]);
    for (int j = 0; j < 4; ++j) {
      const float32x4_t dg = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(d + g * 16 + 4 * j)));
      yv[j] = vfmaq_f32(yv[j], dg, vmulq_f32(vcvtq_f32_s32(rows_of(a, j)), xsv));
    }
  }
  for (int i = 0; i < 4; ++i) vst1q_f32(y + 4 * i, yv[i]);
}

}  // namespace

const IsaKernels kNeonKernels = {
    "neon", ternary_tables_scalar, int4_tables_scalar, lut_ternary_tile_neon, lut_int4_tile_neon,
    mad_ternary_tile_neon, mad_int4_rows_one_by_one<mad_int4_tile_neon>,
    mad_int4_nibbles_by_group<mad_int4_tile_neon>,
    mad_int8_tile_neon, fp16_to_fp32_neon,
    fp32_to_fp16_neon, dot_f32_neon, exp_f32_neon, dots_f32_neon,
    axpys_f32_neon,
    512, 8,  // crossover not measured on hardware yet
};

}  // namespace lutlm
