// AVX2 kernels that the AVX-512 table shares (defined in kernels_avx2.cpp).
#pragma once
#include <cstdint>

#include "kernels.h"

namespace lutlm::avx2 {
float ternary_tables_avx2(const float* x, int64_t Kp, int8_t* tab);
void int4_tables_avx2(const float* x, int64_t Kp, int group_size, int8_t* tab, float* tscale);
void lut_ternary_tile_avx2(const uint8_t* codes, const int8_t* tables, int steps, int32_t acc[16]);
void lut_int4_tile_avx2(const Int4TileArgs& w, const int8_t* tables, const float* tscale,
                        const float* xsum, float y[16]);
void fp16_to_fp32_avx2(const uint16_t* src, float* dst, int n);
void fp32_to_fp16_avx2(const float* src, uint16_t* dst, int n);
float dot_f32_avx2(const float* a, const float* b, int n);
void exp_f32_avx2(const float* x, float* y, int n);
void dots_f32_avx2(const float* q, const float* k, int n, int d, float* out);
void axpys_f32_avx2(const float* p, const float* v, int n, int d, float* acc);
}  // namespace lutlm::avx2
