// Scalar reference kernels: the definition every SIMD path is tested against.
// They read the same packed layouts (quant_types.h) and perform the same integer
// and floating-point operations in the same order, so SIMD results match exactly.
#include <cmath>

#include "kernels.h"
#include "quant_types.h"

namespace lutlm {
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

void mad_ternary_rows_scalar(const int8_t* x8, const int8_t* w8, int ldw, int k_len,
                             int32_t acc[16]) {
  for (int r = 0; r < kTileRows; ++r) {
    const int8_t* wr = w8 + (size_t)r * ldw;
    int32_t s = 0;
    for (int k = 0; k < k_len; ++k) s += (int32_t)x8[k] * wr[k];
    acc[r] += s;
  }
}

void mad_int4_rows_scalar(const int8_t* x8, float xs, const int32_t* xsum8, const uint8_t* w8,
                          int ldw, const uint16_t* d, const uint16_t* m, int groups,
                          int group_size, float y[16]) {
  for (int r = 0; r < kTileRows; ++r) {
    const uint8_t* wr = w8 + (size_t)r * ldw;
    float acc = y[r];
    for (int g = 0; g < groups; ++g) {
      int32_t dot = 0;
      const int off = g * group_size;
      for (int i = 0; i < group_size; ++i) dot += (int32_t)x8[off + i] * wr[off + i];
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

const IsaKernels kScalarKernels = {
    "scalar", lut_ternary_tile_scalar, lut_int4_tile_scalar, mad_ternary_rows_scalar,
    mad_int4_rows_scalar,
};

}  // namespace lutlm
