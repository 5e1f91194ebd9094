// NEON kernels vs the scalar reference kernels, over many random shapes.
// Cross-built for AArch64 and run under qemu-aarch64 by tests/native/run.sh.
//
// Every output must be bit-identical: integer sums are exact, and the float paths
// perform the same fp32 operations (fma, mul, int->float) in the same order.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels.h"
#include "quant_types.h"

using namespace lutlm;

namespace {

using Rng = std::mt19937;

int rand_int(Rng& rng, int lo, int hi) {  // inclusive
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

float rand_float(Rng& rng, float lo, float hi) {
  return std::uniform_real_distribution<float>(lo, hi)(rng);
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// float -> IEEE half, round to nearest even (subnormals included).
uint16_t f32_to_f16(float f) {
  const uint32_t x = bits_of(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  const uint32_t fexp = (x >> 23) & 0xff;
  uint32_t man = x & 0x7fffff;
  if (fexp == 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  const int32_t exp = (int32_t)fexp - 127 + 15;
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    man |= 0x800000;
    const int shift = 14 - exp;
    uint32_t h = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return sign | (uint16_t)h;
  }
  uint32_t h = ((uint32_t)exp << 10) | (man >> 13);
  const uint32_t rem = man & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // carry into exp is correct
  return sign | (uint16_t)h;
}

// Mostly realistic scales; sometimes a raw finite pattern (zero, subnormals, up to
// 2^5) so the NEON fp16 conversion is compared with fp16_to_fp32 on odd values too.
uint16_t rand_half(Rng& rng) {
  const int kind = rand_int(rng, 0, 15);
  if (kind == 0) return 0;
  if (kind <= 2) {
    const uint16_t exp = (uint16_t)rand_int(rng, 0, 20);
    const uint16_t man = (uint16_t)rand_int(rng, 0, 0x3ff);
    return (uint16_t)(rand_int(rng, 0, 1) << 15) | (uint16_t)(exp << 10) | man;
  }
  const float v = rand_float(rng, 1e-3f, 0.1f);
  return f32_to_f16(rand_int(rng, 0, 1) ? -v : v);
}

std::vector<int8_t> rand_table(Rng& rng, size_t n, int mode) {
  // mode 0: random, 1: all +127, 2: all -127 (worst case for the int16 partial sums)
  std::vector<int8_t> t(n);
  for (auto& v : t) v = mode == 1 ? 127 : mode == 2 ? -127 : (int8_t)rand_int(rng, -127, 127);
  return t;
}

std::vector<int8_t> rand_x8(Rng& rng, size_t n) {
  std::vector<int8_t> x(n);
  for (auto& v : x) v = (int8_t)rand_int(rng, -127, 127);
  return x;
}

// Output arrays with guard slots on both sides to catch out-of-range writes.
template <typename T>
struct Guarded {
  T buf[18];
  T* p() { return buf + 1; }
};

constexpr int kMaxReports = 5;

struct Stats {
  const char* name;
  int cases = 0, failed = 0;
  void fail(const std::string& msg) {
    if (failed < kMaxReports) std::printf("  FAIL %s case %d: %s\n", name, cases, msg.c_str());
    ++failed;
  }
};

template <typename T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

std::string fmt_val(int32_t v) { return std::to_string(v); }
std::string fmt_val(float v) {
  char s[64];
  std::snprintf(s, sizeof s, "%.9g (0x%08x)", (double)v, bits_of(v));
  return s;
}

// Compares 18 slots (16 outputs + 2 guards); returns true when all equal.
template <typename T>
bool compare(Stats& st, const std::string& shape, Guarded<T>& ref, Guarded<T>& got) {
  for (int i = 0; i < 18; ++i) {
    if (!same_bits(ref.buf[i], got.buf[i])) {
      const std::string where = i == 0 || i == 17 ? "guard slot" : "row " + std::to_string(i - 1);
      st.fail(shape + " " + where + ": scalar " + fmt_val(ref.buf[i]) + " neon " +
              fmt_val(got.buf[i]));
      return false;
    }
  }
  return true;
}

template <typename T>
void init_pair(Guarded<T>& a, Guarded<T>& b, Rng& rng, bool is_float) {
  for (int i = 0; i < 18; ++i) {
    T v = is_float ? (T)rand_float(rng, -10.0f, 10.0f) : (T)rand_int(rng, -1000000, 1000000);
    a.buf[i] = b.buf[i] = v;
  }
}

void test_lut_ternary(Rng& rng, Stats& st) {
  // Edge step counts around the 64-step int16 flush, each with random, all +127 and
  // all -127 tables; then random counts up to 400.
  const int edges[] = {1, 2, 63, 64, 65, 127, 128, 129, 191, 192, 193, 256, 400};
  std::vector<std::pair<int, int>> shapes;  // (steps, table mode)
  for (int mode = 0; mode < 3; ++mode)
    for (int steps : edges) shapes.emplace_back(steps, mode);
  for (int i = 0; i < 1500; ++i) {
    const int mode = rand_int(rng, 0, 19) == 0 ? rand_int(rng, 1, 2) : 0;
    shapes.emplace_back(rand_int(rng, 1, 400), mode);
  }
  for (const auto& [steps, mode] : shapes) {
    std::vector<uint8_t> codes((size_t)steps * kStepBytes);
    for (auto& c : codes) c = (uint8_t)(rand_int(rng, 0, 8) | rand_int(rng, 0, 8) << 4);
    const auto tables = rand_table(rng, (size_t)steps * kTernaryTableBytes, mode);
    Guarded<int32_t> ref, got;
    init_pair(ref, got, rng, false);
    kScalarKernels.lut_ternary_tile(codes.data(), tables.data(), steps, ref.p());
    kNeonKernels.lut_ternary_tile(codes.data(), tables.data(), steps, got.p());
    compare(st, "steps=" + std::to_string(steps) + " mode=" + std::to_string(mode), ref, got);
    ++st.cases;
  }
}

void test_lut_int4(Rng& rng, Stats& st) {
  for (int i = 0; i < 1500; ++i) {
    const int group_size = 32 << rand_int(rng, 0, 2);
    const int groups = i < 3 ? 1 : rand_int(rng, 1, i % 10 == 0 ? 64 : 8);
    const int group_steps = group_size / kInt4StepK;
    const int steps = groups * group_steps;
    const bool with_m = rand_int(rng, 0, 1);
    // First cases and ~5% of the rest are saturated: entry 15 = +127, entry 0 = -127,
    // and each row picks one nibble pattern for all steps, so some rows hit the int16
    // extremes whatever the plane weights' signs.
    const bool sat = i < 6 || rand_int(rng, 0, 19) == 0;
    std::vector<uint8_t> codes((size_t)steps * kStepBytes);
    if (sat) {
      static const uint8_t pat[4] = {0x00, 0x0f, 0xf0, 0xff};
      uint8_t row_bytes[kStepBytes];
      for (auto& b : row_bytes) b = pat[rand_int(rng, 0, 3)];
      for (size_t j = 0; j < codes.size(); ++j) codes[j] = row_bytes[j % kStepBytes];
    } else {
      for (auto& c : codes) c = (uint8_t)rand_int(rng, 0, 255);
    }
    // Per step: 16 entries, then (if the layout has room) the same entries negated.
    std::vector<int8_t> tables((size_t)steps * kInt4TableBytes);
    for (int s = 0; s < steps; ++s) {
      int8_t* t = tables.data() + (size_t)s * kInt4TableBytes;
      for (int e = 0; e < 16; ++e) t[e] = (int8_t)rand_int(rng, -127, 127);
      if (sat) {
        t[15] = 127;
        t[0] = -127;
      }
      for (int e = 16; e < kInt4TableBytes; ++e) t[e] = (int8_t)-t[e - 16];
    }
    std::vector<uint16_t> d((size_t)groups * 16), m((size_t)groups * 16);
    for (auto& v : d) v = rand_half(rng);
    for (auto& v : m) v = rand_half(rng);
    std::vector<float> tscale(groups), xsum(groups);
    for (auto& v : tscale) v = rand_float(rng, 1e-4f, 1e-2f);
    for (auto& v : xsum) v = rand_float(rng, -50.0f, 50.0f);
    const Int4TileArgs w{codes.data(), d.data(), with_m ? m.data() : nullptr, groups,
                         group_steps};
    Guarded<float> ref, got;
    init_pair(ref, got, rng, true);
    kScalarKernels.lut_int4_tile(w, tables.data(), tscale.data(), xsum.data(), ref.p());
    kNeonKernels.lut_int4_tile(w, tables.data(), tscale.data(), xsum.data(), got.p());
    compare(st,
            "groups=" + std::to_string(groups) + " group_size=" + std::to_string(group_size) +
                " m=" + (with_m ? "yes" : "null") + (sat ? " saturated" : ""),
            ref, got);
    ++st.cases;
  }
}

// MAD tiles read the weights in quad layout: wq[k/4][16 rows][4]. Packs w[r][k]
// (row-major, k_len per row) into that layout, followed by `tail` bytes of `fill`
// so that a kernel reading past k_len sees values the scalar reference never reads.
template <typename T>
std::vector<T> to_quad_layout(const std::vector<T>& w, int k_len, size_t tail, T fill) {
  std::vector<T> wq((size_t)16 * k_len + tail, fill);
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < k_len; ++k)
      wq[(size_t)(k / 4) * 64 + 4 * r + k % 4] = w[(size_t)r * k_len + k];
  return wq;
}

// x8[k_len] followed by junk, for the same reason.
std::vector<int8_t> with_tail(std::vector<int8_t> x8, size_t tail, Rng& rng) {
  for (size_t i = 0; i < tail; ++i) x8.push_back((int8_t)rand_int(rng, -128, 127));
  return x8;
}

const char* x_mode_name(int mode) {
  return mode == 0 ? "random" : mode == 1 ? "+127" : "-127";
}

std::vector<int8_t> x8_of_mode(Rng& rng, int k_len, int mode) {
  // mode 0: random in -127..127, 1: all +127, 2: all -127
  if (mode == 0) return rand_x8(rng, (size_t)k_len);
  return std::vector<int8_t>((size_t)k_len, (int8_t)(mode == 1 ? 127 : -127));
}

void test_mad_ternary(Rng& rng, Stats& st) {
  struct Shape { int k_len, x_mode, w_mode; };
  // w_mode 0: random {-1,0,1}, 1: all +1, 2: all -1, 3: each row all +1 or all -1,
  // 4: sparse (mostly 0).
  std::vector<Shape> shapes;
  // Extremes: |x8| = 127 everywhere with every weight at +-1 (largest |products|,
  // largest sums), for short and long rows.
  for (int k_len : {32, 64, 4064, 4096, 4128, 8192, 9600})
    for (int x_mode = 1; x_mode <= 2; ++x_mode)
      for (int w_mode = 1; w_mode <= 3; ++w_mode) shapes.push_back({k_len, x_mode, w_mode});
  for (int k_len : {32, 64, 4064, 4096, 4128, 8192}) shapes.push_back({k_len, 0, 0});
  for (int i = 0; i < 400; ++i) {
    const int k_len = kKAlign * rand_int(rng, 1, 300);
    const bool extreme = rand_int(rng, 0, 19) == 0;
    shapes.push_back({k_len, extreme ? rand_int(rng, 1, 2) : 0,
                      extreme ? rand_int(rng, 1, 3) : rand_int(rng, 0, 9) == 0 ? 4 : 0});
  }
  for (const Shape& sh : shapes) {
    const int k_len = sh.k_len;
    const auto x8 = x8_of_mode(rng, k_len, sh.x_mode);
    int32_t x_sum = 0;
    for (int8_t v : x8) x_sum += v;
    std::vector<int8_t> w((size_t)16 * k_len);
    for (int r = 0; r < 16; ++r) {
      const int8_t row_sign = (int8_t)(rand_int(rng, 0, 1) ? 1 : -1);
      for (int k = 0; k < k_len; ++k) {
        int8_t v;
        switch (sh.w_mode) {
          case 1: v = 1; break;
          case 2: v = -1; break;
          case 3: v = row_sign; break;
          case 4: v = rand_int(rng, 0, 7) == 0 ? (int8_t)rand_int(rng, -1, 1) : 0; break;
          default: v = (int8_t)rand_int(rng, -1, 1);
        }
        w[(size_t)r * k_len + k] = v;
      }
    }
    // Non-ternary junk after the tile and after x8: over-reads change the result.
    const auto wq = to_quad_layout<int8_t>(w, k_len, 256, (int8_t)99);
    const auto xt = with_tail(x8, 64, rng);
    Guarded<int32_t> ref, got;
    init_pair(ref, got, rng, false);
    kScalarKernels.mad_ternary_tile(xt.data(), x_sum, wq.data(), k_len, ref.p());
    kNeonKernels.mad_ternary_tile(xt.data(), x_sum, wq.data(), k_len, got.p());
    compare(st,
            "k_len=" + std::to_string(k_len) + " x=" + x_mode_name(sh.x_mode) +
                " w_mode=" + std::to_string(sh.w_mode),
            ref, got);
    ++st.cases;
  }
}

// The nibble layout of quad-layout INT4 codes (quant_types.h): octet o holds quad 2o in
// its low nibbles and quad 2o + 1 in its high nibbles.
std::vector<uint8_t> to_nibbles(const std::vector<uint8_t>& wq, int k_len) {
  std::vector<uint8_t> out((size_t)8 * k_len);
  for (int o = 0; o < k_len / 8; ++o)
    for (int j = 0; j < 64; ++j)
      out[(size_t)o * 64 + j] = (uint8_t)(wq[(size_t)(2 * o) * 64 + j] | wq[(size_t)(2 * o + 1) * 64 + j] << 4);
  return out;
}

// st: NEON mad_int4_tile_rows (one row); nib: NEON mad_int4_nibble_tile_rows (one row) on the same codes in the nibble
// layout, both against the scalar mad_int4_tile.
void test_mad_int4(Rng& rng, Stats& st, Stats& nib) {
  for (int i = 0; i < 1000; ++i) {
    const int group_size = 32 << (i < 12 ? i % 3 : rand_int(rng, 0, 2));
    const int groups = i < 12 ? (i < 6 ? 1 : 64) : rand_int(rng, 1, i % 10 == 0 ? 64 : 12);
    const int k_len = groups * group_size;
    const bool with_m = i < 12 ? (i / 3) % 2 : rand_int(rng, 0, 1);
    // x_mode as for ternary; w_mode 0: random codes, 1: all 15, 2: all 0,
    // 3: each row all 15 or all 0. The first 12 cases and ~5% of the rest are extreme.
    const bool extreme = i < 12 || rand_int(rng, 0, 19) == 0;
    const int x_mode = extreme ? 1 + i % 2 : 0;
    const int w_mode = extreme ? (i < 12 ? 1 + (i / 2) % 3 : rand_int(rng, 1, 3)) : 0;
    const auto x8 = x8_of_mode(rng, k_len, x_mode);
    std::vector<int32_t> xsum8(groups, 0);
    for (int k = 0; k < k_len; ++k) xsum8[k / group_size] += x8[k];
    std::vector<uint8_t> w((size_t)16 * k_len);
    for (int r = 0; r < 16; ++r) {
      const uint8_t row_code = rand_int(rng, 0, 1) ? 15 : 0;
      for (int k = 0; k < k_len; ++k)
        w[(size_t)r * k_len + k] = w_mode == 1   ? 15
                                   : w_mode == 2 ? 0
                                   : w_mode == 3 ? row_code
                                                 : (uint8_t)rand_int(rng, 0, 15);
    }
    const auto wq = to_quad_layout<uint8_t>(w, k_len, 256, (uint8_t)0xee);
    const auto xt = with_tail(x8, 64, rng);
    std::vector<uint16_t> d((size_t)groups * 16), m((size_t)groups * 16);
    for (auto& v : d) v = rand_half(rng);
    for (auto& v : m) v = rand_half(rng);
    std::vector<float> xs(groups);  // one activation scale per group
    for (auto& v : xs) v = rand_float(rng, 1e-4f, 1e-1f);
    Guarded<float> ref, got;
    init_pair(ref, got, rng, true);
    const uint16_t* mp = with_m ? m.data() : nullptr;
    kScalarKernels.mad_int4_tile_rows(1, xt.data(), 0, xs.data(), xsum8.data(), 0, wq.data(), d.data(), mp, groups,
                                 group_size, ref.p());
    kNeonKernels.mad_int4_tile_rows(1, xt.data(), 0, xs.data(), xsum8.data(), 0, wq.data(), d.data(), mp, groups,
                               group_size, got.p());
    const std::string what =
        "groups=" + std::to_string(groups) + " group_size=" + std::to_string(group_size) +
        " m=" + (with_m ? "yes" : "null") + " x=" + x_mode_name(x_mode) +
        " w_mode=" + std::to_string(w_mode);
    compare(st, what, ref, got);
    ++st.cases;
    Guarded<float> got_nib;
    init_pair(ref, got_nib, rng, true);
    kScalarKernels.mad_int4_tile_rows(1, xt.data(), 0, xs.data(), xsum8.data(), 0, wq.data(), d.data(), mp,
                                 groups, group_size, ref.p());
    const auto codes = to_nibbles(wq, k_len);
    kNeonKernels.mad_int4_nibble_tile_rows(1, xt.data(), 0, xs.data(), xsum8.data(), 0,
                                           codes.data(), d.data(), mp, groups, group_size,
                                           got_nib.p());
    compare(nib, what, ref, got_nib);
    ++nib.cases;
  }
}

void test_mad_int8(Rng& rng, Stats& st) {
  for (int i = 0; i < 1000; ++i) {
    const int group_size = 32 << (i < 12 ? i % 3 : rand_int(rng, 0, 2));
    const int groups = i < 12 ? (i < 6 ? 1 : 64) : rand_int(rng, 1, i % 10 == 0 ? 64 : 12);
    const int k_len = groups * group_size;
    // x_mode as for ternary; w_mode 0: random in -128..127 (with extra -128s), 1: all
    // -128, 2: all 127, 3: each row all -128 or all 127. The first 12 cases and ~5% of
    // the rest are extreme: |x| = 127 against the largest |w| gives the largest sums.
    const bool extreme = i < 12 || rand_int(rng, 0, 19) == 0;
    const int x_mode = extreme ? 1 + i % 2 : 0;
    const int w_mode = extreme ? (i < 12 ? 1 + (i / 2) % 3 : rand_int(rng, 1, 3)) : 0;
    const auto x8 = x8_of_mode(rng, k_len, x_mode);
    std::vector<int32_t> xsum8(groups, 0);
    for (int k = 0; k < k_len; ++k) xsum8[k / group_size] += x8[k];
    std::vector<int8_t> w((size_t)16 * k_len);
    for (int r = 0; r < 16; ++r) {
      const int8_t row_code = rand_int(rng, 0, 1) ? 127 : -128;
      for (int k = 0; k < k_len; ++k) {
        const int8_t random = rand_int(rng, 0, 15) == 0 ? -128 : (int8_t)rand_int(rng, -128, 127);
        w[(size_t)r * k_len + k] = w_mode == 1   ? -128
                                   : w_mode == 2 ? 127
                                   : w_mode == 3 ? row_code
                                                 : random;
      }
    }
    const auto wq = to_quad_layout<int8_t>(w, k_len, 256, (int8_t)99);
    const auto xt = with_tail(x8, 64, rng);
    std::vector<uint16_t> d((size_t)groups * 16);
    for (auto& v : d) v = rand_half(rng);
    std::vector<float> xs(groups);
    for (auto& v : xs) v = rand_float(rng, 1e-4f, 1e-1f);
    Guarded<float> ref, got;
    init_pair(ref, got, rng, true);
    kScalarKernels.mad_int8_tile(xt.data(), xs.data(), xsum8.data(), wq.data(), d.data(), groups,
                                 group_size, ref.p());
    kNeonKernels.mad_int8_tile(xt.data(), xs.data(), xsum8.data(), wq.data(), d.data(), groups,
                               group_size, got.p());
    compare(st,
            "groups=" + std::to_string(groups) + " group_size=" + std::to_string(group_size) +
                " x=" + x_mode_name(x_mode) + " w_mode=" + std::to_string(w_mode),
            ref, got);
    ++st.cases;
  }
}

// Activation rows for the table builders: x[Kp], finite, max|x| within the
// documented [2^-62, 2^62]. mode 0: all zero; 1: uniform; 2: gaussian with a few
// outliers; 3: half-integers times 2^e with the largest pair sum (ternary) or quad
// sum (INT4) exactly 127 * 2^e, so 127/amax is a power of two and many scaled
// entries are exact .5 ties (round-half-even); 4: sparse (mostly exact 0).
// The row is scaled by a power of two and may end in a zero padded tail.
std::vector<float> rand_x_row(Rng& rng, int64_t Kp, int mode, bool int4, int* exp_out,
                              int64_t* len_out) {
  std::vector<float> x((size_t)Kp, 0.0f);
  const int64_t len = rand_int(rng, 0, 2) == 0 ? Kp - rand_int(rng, 0, 31) : Kp;
  int e = rand_int(rng, 0, 9) == 0 ? (rand_int(rng, 0, 1) ? -60 : 54) : rand_int(rng, -40, 40);
  if (mode == 3) e = rand_int(rng, -20, 20);
  const float f = std::ldexp(1.0f, e);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (int64_t k = 0; k < len && mode != 0; ++k) {
    float v;
    switch (mode) {
      case 1: v = rand_float(rng, -1.0f, 1.0f); break;
      case 2: v = gauss(rng) * (rand_int(rng, 0, 99) == 0 ? 30.0f : 1.0f); break;
      case 3: v = 0.5f * (float)rand_int(rng, -40, 40); break;  // |v| <= 20
      default: v = rand_int(rng, 0, 7) == 0 ? rand_float(rng, -1.0f, 1.0f) : 0.0f;
    }
    x[(size_t)k] = v * f;
  }
  if (mode == 3 && len >= 4) {
    // One quad at the peak; every other pair sum <= 40 and quad sum <= 80 stay below.
    const int64_t q = 4 * rand_int(rng, 0, (int)(len / 4) - 1);
    const float s = rand_int(rng, 0, 1) ? 1.0f : -1.0f;
    if (int4) {
      for (int i = 0; i < 4; ++i) x[(size_t)(q + i)] = s * 31.75f * f;  // quad sum 127
    } else {
      x[(size_t)q] = s * 63.5f * f;  // pair |x0| + |x1| = 127
      x[(size_t)q + 1] = (rand_int(rng, 0, 1) ? 63.5f : -63.5f) * f;
      x[(size_t)q + 2] = x[(size_t)q + 3] = 0.0f;
    }
  }
  *exp_out = e;
  *len_out = len;
  return x;
}

const char* x_row_mode_name(int mode) {
  static const char* names[] = {"zero", "uniform", "gauss", "ties", "sparse"};
  return names[mode];
}

// Compares table bytes (with guard bytes after the table); returns true when equal.
bool compare_bytes(Stats& st, const std::string& shape, const std::vector<int8_t>& ref,
                   const std::vector<int8_t>& got, size_t table_bytes, size_t step_bytes) {
  for (size_t i = 0; i < ref.size(); ++i) {
    if (ref[i] != got[i]) {
      const std::string where =
          i >= table_bytes ? "guard byte " + std::to_string(i - table_bytes)
                           : "step " + std::to_string(i / step_bytes) + " byte " +
                                 std::to_string(i % step_bytes);
      st.fail(shape + " " + where + ": scalar " + std::to_string(ref[i]) + " neon " +
              std::to_string(got[i]));
      return false;
    }
  }
  return true;
}

constexpr size_t kTableGuard = 64;

void test_ternary_tables(Rng& rng, Stats& st) {
  for (int i = 0; i < 600; ++i) {
    const int64_t Kp = kKAlign * (i < 5 ? 1 : rand_int(rng, 1, i % 10 == 0 ? 160 : 32));
    const int mode = i < 5 ? i : rand_int(rng, 0, 24) == 0 ? 0 : rand_int(rng, 1, 4);
    int e;
    int64_t len;
    const auto x = rand_x_row(rng, Kp, mode, false, &e, &len);
    const size_t bytes = (size_t)(Kp / kTernaryStepK) * kTernaryTableBytes;
    std::vector<int8_t> ref(bytes + kTableGuard), got;
    for (auto& v : ref) v = (int8_t)rand_int(rng, -128, 127);
    got = ref;
    const float sr = kScalarKernels.ternary_tables(x.data(), Kp, ref.data());
    const float sg = kNeonKernels.ternary_tables(x.data(), Kp, got.data());
    const std::string shape = "Kp=" + std::to_string(Kp) + " len=" + std::to_string(len) +
                              " mode=" + x_row_mode_name(mode) + " exp=" + std::to_string(e);
    if (!same_bits(sr, sg))
      st.fail(shape + " scale: scalar " + fmt_val(sr) + " neon " + fmt_val(sg));
    else
      compare_bytes(st, shape, ref, got, bytes, kTernaryTableBytes);
    ++st.cases;
  }
}

void test_int4_tables(Rng& rng, Stats& st) {
  for (int i = 0; i < 600; ++i) {
    const int group_size = 32 << (i < 15 ? i % 3 : rand_int(rng, 0, 2));
    const int64_t groups = i < 15 ? 1 + i / 3 % 2 : rand_int(rng, 1, i % 10 == 0 ? 40 : 8);
    const int64_t Kp = groups * group_size;
    const int mode = i < 15 ? i / 3 : rand_int(rng, 0, 24) == 0 ? 0 : rand_int(rng, 1, 4);
    int e;
    int64_t len;
    auto x = rand_x_row(rng, Kp, mode, true, &e, &len);
    // Sometimes one whole group is zero (scale 0 for that group only).
    if (groups > 1 && rand_int(rng, 0, 4) == 0) {
      const int64_t g = rand_int(rng, 0, (int)groups - 1);
      std::fill(x.begin() + g * group_size, x.begin() + (g + 1) * group_size, 0.0f);
    }
    const size_t bytes = (size_t)(Kp / kInt4StepK) * kInt4TableBytes;
    std::vector<int8_t> ref(bytes + kTableGuard), got;
    for (auto& v : ref) v = (int8_t)rand_int(rng, -128, 127);
    got = ref;
    // Scales with a guard slot on each side.
    std::vector<float> tr((size_t)groups + 2), tg;
    for (auto& v : tr) v = rand_float(rng, -10.0f, 10.0f);
    tg = tr;
    kScalarKernels.int4_tables(x.data(), Kp, group_size, ref.data(), tr.data() + 1);
    kNeonKernels.int4_tables(x.data(), Kp, group_size, got.data(), tg.data() + 1);
    const std::string shape = "Kp=" + std::to_string(Kp) + " group_size=" +
                              std::to_string(group_size) + " len=" + std::to_string(len) +
                              " mode=" + x_row_mode_name(mode) + " exp=" + std::to_string(e);
    bool ok = true;
    for (size_t j = 0; j < tr.size() && ok; ++j) {
      if (!same_bits(tr[j], tg[j])) {
        const std::string where = j == 0 || j == tr.size() - 1
                                      ? "tscale guard slot"
                                      : "tscale[" + std::to_string(j - 1) + "]";
        st.fail(shape + " " + where + ": scalar " + fmt_val(tr[j]) + " neon " + fmt_val(tg[j]));
        ok = false;
      }
    }
    if (ok) compare_bytes(st, shape, ref, got, bytes, kInt4TableBytes);
    ++st.cases;
  }
}

// The half generator must be right for the inputs to mean what we think they mean.
bool check_half_roundtrip() {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;  // inf / nan
    if (f32_to_f16(fp16_to_fp32((uint16_t)h)) != h) {
      std::printf("  FAIL f32_to_f16 round trip at 0x%04x\n", h);
      return false;
    }
  }
  return f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00 && f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02;
}

}  // namespace

// exp_f32, dots_f32 and axpys_f32: NEON against scalar, bit for bit, on ragged lengths
// and exp arguments across its range (including below -87.3, where it returns 0).
void test_attention_ops(Rng& rng, Stats& st) {
  for (int i = 0; i < 300; ++i) {
    const int n = rand_int(rng, 1, 70), d = rand_int(rng, 1, 140);
    std::vector<float> x(n), e_ref(n), e_got(n);
    for (auto& v : x) v = rand_float(rng, i % 3 ? -20.0f : -100.0f, i % 3 ? 5.0f : 88.0f);
    kScalarKernels.exp_f32(x.data(), e_ref.data(), n);
    kNeonKernels.exp_f32(x.data(), e_got.data(), n);
    std::vector<float> q(d), k((size_t)n * d), s_ref(n), s_got(n), acc_ref(d), acc_got(d);
    for (auto& v : q) v = rand_float(rng, -2.0f, 2.0f);
    for (auto& v : k) v = rand_float(rng, -2.0f, 2.0f);
    for (auto& v : acc_ref) v = rand_float(rng, -1.0f, 1.0f);
    acc_got = acc_ref;
    kScalarKernels.dots_f32(q.data(), k.data(), n, d, s_ref.data());
    kNeonKernels.dots_f32(q.data(), k.data(), n, d, s_got.data());
    kScalarKernels.axpys_f32(e_ref.data(), k.data(), n, d, acc_ref.data());
    kNeonKernels.axpys_f32(e_ref.data(), k.data(), n, d, acc_got.data());
    const bool same = std::memcmp(e_ref.data(), e_got.data(), 4 * (size_t)n) == 0 &&
                      std::memcmp(s_ref.data(), s_got.data(), 4 * (size_t)n) == 0 &&
                      std::memcmp(acc_ref.data(), acc_got.data(), 4 * (size_t)d) == 0;
    if (!same) {
      ++st.failed;
      if (st.failed <= 3) std::printf("attention ops differ: n=%d d=%d\n", n, d);
    }
    ++st.cases;
  }
}

int main() {
  Rng rng(20240611u);
  int passed = 0, failed = 0;
  if (!check_half_roundtrip()) {
    std::printf("0 passed, 1 failed\n");
    return 1;
  }
  std::printf("comparing %s against %s\n", kNeonKernels.name, kScalarKernels.name);
  Stats all[] = {{"ternary_tables"},   {"int4_tables"},      {"lut_ternary_tile"},
                 {"lut_int4_tile"},    {"mad_ternary_tile"}, {"mad_int4_tile_rows"},
                 {"mad_int8_tile"},    {"mad_int4_nibble_rows"}, {"exp/dots/axpys_f32"}};
  test_ternary_tables(rng, all[0]);
  test_int4_tables(rng, all[1]);
  test_lut_ternary(rng, all[2]);
  test_lut_int4(rng, all[3]);
  test_mad_ternary(rng, all[4]);
  test_mad_int4(rng, all[5], all[7]);
  test_mad_int8(rng, all[6]);
  test_attention_ops(rng, all[8]);
  for (const Stats& st : all) {
    std::printf("%-17s %5d cases, %d failed\n", st.name, st.cases, st.failed);
    passed += st.cases - st.failed;
    failed += st.failed;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
