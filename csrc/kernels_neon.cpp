// NEON kernels (AArch64 baseline ISA: always available there). Cross-built and run
// under qemu-aarch64 by tests/native/ against the scalar kernels.
#include <arm_neon.h>

#include <cmath>

#include "kernels.h"
#include "quant_types.h"

namespace lutlm {
namespace {

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

// sum_k a[k]*b[k] for int8 inputs; each int16 lane takes two products (<= 2*127*127).
inline int32_t dot_s8(const int8_t* a, const int8_t* b, int n) {
  int32x4_t acc = vdupq_n_s32(0);
  for (int k = 0; k < n; k += 16) {
    const int8x16_t x = vld1q_s8(a + k), w = vld1q_s8(b + k);
    int16x8_t p = vmull_s8(vget_low_s8(x), vget_low_s8(w));
    p = vmlal_high_s8(p, x, w);
    acc = vpadalq_s16(acc, p);
  }
  return vaddvq_s32(acc);
}

void mad_ternary_rows_neon(const int8_t* x8, const int8_t* w8, int ldw, int k_len,
                           int32_t acc[16]) {
  for (int r = 0; r < kTileRows; ++r) acc[r] += dot_s8(x8, w8 + (size_t)r * ldw, k_len);
}

void mad_int4_rows_neon(const int8_t* x8, float xs, const int32_t* xsum8, const uint8_t* w8,
                        int ldw, const uint16_t* d, const uint16_t* m, int groups,
                        int group_size, float y[16]) {
  for (int r = 0; r < kTileRows; ++r) {
    const int8_t* wr = (const int8_t*)(w8 + (size_t)r * ldw);  // q <= 15 reads the same
    float acc = y[r];
    for (int g = 0; g < groups; ++g) {
      const int off = g * group_size;
      const int32_t dot = dot_s8(x8 + off, wr + off, group_size);
      const float dg = fp16_to_fp32(d[g * 16 + r]);
      if (m) {
        acc = std::fma(dg, (float)dot * xs, acc);
        acc = std::fma(fp16_to_fp32(m[g * 16 + r]), (float)xsum8[g] * xs, acc);
      } else {
        acc = std::fma(dg, (float)(dot - 8 * xsum8[g]) * xs, acc);
      }
    }
    y[r] = acc;
  }
}

}  // namespace

const IsaKernels kNeonKernels = {
    "neon", ternary_tables_scalar, int4_tables_scalar, lut_ternary_tile_neon, lut_int4_tile_neon, mad_ternary_rows_neon,
    mad_int4_rows_neon,
};

}  // namespace lutlm
