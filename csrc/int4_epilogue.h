// The fp32 epilogue of an INT4 MAD group: the one place where the integer dot products
// of a weight group become fp32, and so where every ISA must round exactly alike for
// results to match the scalar reference bit for bit (kernels.h mad_int4_tile_rows).
//
// It is written once, over "lanes" L: a few rows of a tile held in one register (1 row
// as a float, 8 in an __m256, 16 in an __m512). L supplies only its lane type and the
// primitive operations, each of which rounds as the scalar one does:
//   F, I               fp32 and int32 lanes
//   load_fp16(p)       lanes' fp16 values p[0..lanes-1] as fp32 (exact)
//   set1(float), set1(int32_t)   a value in every lane
//   cvt(I)             int32 -> fp32, round to nearest even
//   sub(I, I)          int32 subtraction
//   mul(F, F)          fp32 product, rounded
//   fma(a, b, c)       a * b + c, rounded once
// The lane types of the SIMD ISAs live in their own files: their intrinsics need the
// file's -m flags, and their instantiations then never leave that file.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels.h"
#include "quant_types.h"

namespace lutlm {

// y += w . x over one weight group for the lanes' rows, from dot = sum_k x8[k] * q[k]
// (exact), the activations' scale xs and xsum8 = sum_k x8[k]; d and m point at the
// lanes' first row in the group's fp16 scales and minimums (m nullptr: symmetric).
//   with m:    y = fma(d, dot * xs, y), then y = fma(m, xsum8 * xs, y)
//   without:   y = fma(d, (dot - 8 xsum8) * xs, y)       (w = d (q - 8))
template <class L>
inline typename L::F int4_mad_group_epilogue(typename L::I dot, const uint16_t* d,
                                             const uint16_t* m, int32_t xsum8, float xs,
                                             typename L::F y) {
  const typename L::F xsv = L::set1(xs);
  const typename L::F dg = L::load_fp16(d);
  if (m) {
    y = L::fma(dg, L::mul(L::cvt(dot), xsv), y);
    return L::fma(L::load_fp16(m), L::mul(L::cvt(L::set1(xsum8)), xsv), y);
  }
  return L::fma(dg, L::mul(L::cvt(L::sub(dot, L::set1(8 * xsum8))), xsv), y);
}

// One row per lane: the scalar reference, and ISAs whose epilogue runs row by row.
struct ScalarLanes {
  using F = float;
  using I = int32_t;
  static F load_fp16(const uint16_t* p) { return fp16_to_fp32(*p); }
  static F set1(float v) { return v; }
  static I set1(int32_t v) { return v; }
  static F cvt(I v) { return (float)v; }
  static I sub(I a, I b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F fma(F a, F b, F c) { return std::fma(a, b, c); }
};

// The epilogue for all the rows of a tile, one row at a time.
inline void int4_mad_group_epilogue_rows(const int32_t dot[kTileRows], const uint16_t* d,
                                         const uint16_t* m, int32_t xsum8, float xs,
                                         float y[kTileRows]) {
  for (int r = 0; r < kTileRows; ++r)
    y[r] = int4_mad_group_epilogue<ScalarLanes>(dot[r], d + r, m ? m + r : nullptr, xsum8, xs,
                                                y[r]);
}

}  // namespace lutlm
