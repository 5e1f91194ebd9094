// Scalar reference kernels: the definition every SIMD path is tested against.
// They read the same packed layouts (quant_types.h) and perform the same integer
// and floating-point operations in the same order, so SIMD results match exactly.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "int4_epilogue.h"
#include "kernels.h"
#include "quant_types.h"

namespace lutlm {

// Ternary table of a pair (x0, x1), entry c = 3*(w0+1) + (w1+1): by symmetry only
// x0+x1, x0, x1 and x0-x1 are rounded; the other entries are their negations.
float ternary_tables_scalar(const float* x, int64_t Kp, int8_t* tab) {
  float amax = 0.0f;
  for (int64_t k = 0; k < Kp; k += 2) amax = std::max(amax, std::fabs(x[k]) + std::fabs(x[k + 1]));
  std::memset(tab, 0, (size_t)(Kp / kTernaryStepK) * kTernaryTableBytes);
  if (amax == 0.0f) return 0.0f;
  const float inv = 127.0f / amax;
  for (int64_t j = 0; j < Kp / 2; ++j) {
    const float x0 = x[2 * j], x1 = x[2 * j + 1];
    const int8_t s = round_to_i8((x0 + x1) * inv), a = round_to_i8(x0 * inv);
    const int8_t b = round_to_i8(x1 * inv), d = round_to_i8((x0 - x1) * inv);
    int8_t* t = tab + j * 16;  // pair j = step j/4, slot j%4
    const int8_t entries[9] = {(int8_t)-s, (int8_t)-a, (int8_t)-d, (int8_t)-b, 0, b, d, a, s};
    std::memcpy(t, entries, 9);
  }
  return amax / 127.0f;
}

void int4_tables_scalar(const float* x, int64_t Kp, int group_size, int8_t* tab,
                        float* tscale) {
  const int64_t quads_per_group = group_size / kInt4StepK;
  std::memset(tab, 0, (size_t)(Kp / kInt4StepK) * kInt4TableBytes);
  for (int64_t g = 0; g < Kp / group_size; ++g) {
    const int64_t q0 = g * quads_per_group, q1 = q0 + quads_per_group;
    // The largest |subset sum| of a quad is the sum of its positive or negative part.
    float amax = 0.0f;
    for (int64_t q = q0; q < q1; ++q) {
      float pos = 0.0f, neg = 0.0f;
      for (int i = 0; i < 4; ++i) {
        const float v = x[4 * q + i];
        pos += v > 0.0f ? v : 0.0f;
        neg += v < 0.0f ? v : 0.0f;
      }
      amax = std::max(amax, std::max(pos, -neg));
    }
    tscale[g] = amax / 127.0f;
    if (amax == 0.0f) continue;
    const float inv = 127.0f / amax;
    for (int64_t q = q0; q < q1; ++q) {
      float sums[16];
      quad_subset_sums(x + 4 * q, sums);
      int8_t* t = tab + q * kInt4TableBytes;
      for (int idx = 1; idx < 16; ++idx) {
        t[idx] = round_to_i8(sums[idx] * inv);
        t[16 + idx] = (int8_t)-t[idx];
      }
    }
  }
}

void fp16_to_fp32_scalar(const uint16_t* src, float* dst, int n) {
  for (int i = 0; i < n; ++i) dst[i] = fp16_to_fp32(src[i]);
}

float dot_f32_scalar(const float* a, const float* b, int n) {
  float l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) l[j] = std::fma(a[i + j], b[i + j], l[j]);
  float s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
  for (; i < n; ++i) s = std::fma(a[i], b[i], s);
  return s;
}

void exp_f32_scalar(const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = exp_f32_step(x[i]);
}

void dots_f32_scalar(const float* q, const float* k, int n, int d, float* out) {
  for (int i = 0; i < n; ++i) out[i] = dot_f32_scalar(q, k + (size_t)i * d, d);
}

void axpys_f32_scalar(const float* p, const float* v, int n, int d, float* acc) {
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) acc[j] = std::fma(p[i], v[(size_t)i * d + j], acc[j]);
}

void fp32_to_fp16_scalar(const float* src, uint16_t* dst, int n) {
  for (int i = 0; i < n; ++i) dst[i] = fp32_to_fp16_bits(src[i]);
}

namespace {

void lut_ternary_tile_scalar(const uint8_t* codes, const int8_t* tables, int steps,
                             int32_t acc[16]) {
  for (int s = 0; s < steps; ++s) {
    const uint8_t* c = codes + (size_t)s * kStepBytes;
    const int8_t* t = tables + (size_t)s * kTernaryTableBytes;
    for (int r = 0; r < kTileRows; ++r) {
      const uint8_t b0 = c[r], b1 = c[16 + r];
      acc[r] += t[b0 & 15] + t[16 + (b1 & 15)] + t[32 + (b0 >> 4)] + t[48 + (b1 >> 4)];
    }
  }
}

void lut_int4_tile_scalar(const Int4TileArgs& w, const int8_t* tables, const float* tscale,
                          const float* xsum, float y[16]) {
  const uint8_t* c = w.codes;
  const int8_t* t = tables;
  for (int g = 0; g < w.groups; ++g) {
    int32_t acc[16] = {0};
    for (int s = 0; s < w.group_steps; ++s, c += kStepBytes, t += kInt4TableBytes) {
      for (int r = 0; r < kTileRows; ++r) {
        const uint8_t b0 = c[r], b1 = c[16 + r];
        acc[r] += t[b0 & 15] + 2 * t[b1 & 15] + 4 * t[b0 >> 4] - 8 * t[b1 >> 4];
      }
    }
    for (int r = 0; r < kTileRows; ++r) {
      const float d = fp16_to_fp32(w.d[g * 16 + r]);
      y[r] = std::fma(d, (float)acc[r] * tscale[g], y[r]);
      if (w.m) y[r] = std::fma(fp16_to_fp32(w.m[g * 16 + r]) + 8.0f * d, xsum[g], y[r]);
    }
  }
}

void mad_ternary_tile_scalar(const int8_t* x8, int32_t /*x_sum*/, const int8_t* wq, int k_len,
                             int32_t acc[16]) {
  for (int q = 0; q < k_len / 4; ++q, wq += 64)
    for (int r = 0; r < kTileRows; ++r)
      for (int i = 0; i < 4; ++i) acc[r] += (int32_t)x8[4 * q + i] * wq[4 * r + i];
}

// dot[r] = sum over `quads` quads of x . w[r] (exact), weights in quad layout.
template <typename W>
void group_dot(const int8_t* x, const W* wq, int quads, int32_t dot[16]) {
  for (int r = 0; r < kTileRows; ++r) dot[r] = 0;
  for (int q = 0; q < quads; ++q, x += 4, wq += 64)
    for (int r = 0; r < kTileRows; ++r)
      for (int i = 0; i < 4; ++i) dot[r] += (int32_t)x[i] * wq[4 * r + i];
}

void mad_int4_tile_scalar(const int8_t* x8, const float* xs, const int32_t* xsum8, const uint8_t* wq,
                          const uint16_t* d, const uint16_t* m, int groups, int group_size,
                          float y[16]) {
  const int quads = group_size / 4;
  for (int g = 0; g < groups; ++g, wq += quads * 64) {
    int32_t dot[16];
    group_dot(x8 + g * group_size, wq, quads, dot);
    int4_mad_group_epilogue_rows(dot, d + g * 16, m ? m + g * 16 : nullptr, xsum8[g], xs[g], y);
  }
}

void mad_int8_tile_scalar(const int8_t* x8, const float* xs, const int32_t* /*xsum8*/,
                          const int8_t* wq, const uint16_t* d, int groups, int group_size,
                          float y[16]) {
  const int quads = group_size / 4;
  for (int g = 0; g < groups; ++g, wq += quads * 64) {
    int32_t dot[16];
    group_dot(x8 + g * group_size, wq, quads, dot);
    for (int r = 0; r < kTileRows; ++r)
      y[r] = std::fma(fp16_to_fp32(d[g * 16 + r]), (float)dot[r] * xs[g], y[r]);
  }
}

}  // namespace

const IsaKernels kScalarKernels = {
    "scalar", ternary_tables_scalar, int4_tables_scalar, lut_ternary_tile_scalar, lut_int4_tile_scalar,
    mad_ternary_tile_scalar, mad_int4_rows_one_by_one<mad_int4_tile_scalar>,
    mad_int4_nibbles_by_group<mad_int4_tile_scalar>, mad_int8_tile_scalar, fp16_to_fp32_scalar,
    fp32_to_fp16_scalar, dot_f32_scalar, exp_f32_scalar, dots_f32_scalar, axpys_f32_scalar,
    64, 8,
};

}  // namespace lutlm
