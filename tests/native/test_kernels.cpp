// NEON kernels vs the scalar reference kernels, over many random shapes.
// Cross-built for AArch64 and run under qemu-aarch64 by tests/native/run.sh.
//
// Every output must be bit-identical: integer sums are exact, and the float paths
// perform the same fp32 operations (fma, mul, int->float) in the same order.
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

void test_mad_ternary(Rng& rng, Stats& st) {
  std::vector<int> k_list = {32, 64, 4064, 4096, 4128, 8192};
  for (int i = 0; i < 400; ++i) k_list.push_back(kKAlign * rand_int(rng, 1, 300));
  for (int k_len : k_list) {
    // Row stride past k_len, padding filled with non-ternary bytes so over-reads show.
    const int ldw = k_len + rand_int(rng, 0, 1) * rand_int(rng, 1, 48);
    const auto x8 = rand_x8(rng, (size_t)k_len);
    std::vector<int8_t> w8((size_t)16 * ldw, 99);
    for (int r = 0; r < 16; ++r)
      for (int k = 0; k < k_len; ++k) w8[(size_t)r * ldw + k] = (int8_t)rand_int(rng, -1, 1);
    Guarded<int32_t> ref, got;
    init_pair(ref, got, rng, false);
    kScalarKernels.mad_ternary_rows(x8.data(), w8.data(), ldw, k_len, ref.p());
    kNeonKernels.mad_ternary_rows(x8.data(), w8.data(), ldw, k_len, got.p());
    compare(st, "k_len=" + std::to_string(k_len) + " ldw=" + std::to_string(ldw), ref, got);
    ++st.cases;
  }
}

void test_mad_int4(Rng& rng, Stats& st) {
  for (int i = 0; i < 1000; ++i) {
    const int group_size = 32 << rand_int(rng, 0, 2);
    const int groups = i < 3 ? 1 : rand_int(rng, 1, i % 10 == 0 ? 64 : 12);
    const int k_len = groups * group_size;
    const int ldw = k_len + rand_int(rng, 0, 1) * rand_int(rng, 1, 48);
    const bool with_m = rand_int(rng, 0, 1);
    const auto x8 = rand_x8(rng, (size_t)k_len);
    std::vector<int32_t> xsum8(groups, 0);
    for (int k = 0; k < k_len; ++k) xsum8[k / group_size] += x8[k];
    std::vector<uint8_t> w8((size_t)16 * ldw, 0xee);
    for (int r = 0; r < 16; ++r)
      for (int k = 0; k < k_len; ++k) w8[(size_t)r * ldw + k] = (uint8_t)rand_int(rng, 0, 15);
    std::vector<uint16_t> d((size_t)groups * 16), m((size_t)groups * 16);
    for (auto& v : d) v = rand_half(rng);
    for (auto& v : m) v = rand_half(rng);
    const float xs = rand_float(rng, 1e-4f, 1e-1f);
    Guarded<float> ref, got;
    init_pair(ref, got, rng, true);
    const uint16_t* mp = with_m ? m.data() : nullptr;
    kScalarKernels.mad_int4_rows(x8.data(), xs, xsum8.data(), w8.data(), ldw, d.data(), mp,
                                 groups, group_size, ref.p());
    kNeonKernels.mad_int4_rows(x8.data(), xs, xsum8.data(), w8.data(), ldw, d.data(), mp,
                               groups, group_size, got.p());
    compare(st,
            "groups=" + std::to_string(groups) + " group_size=" + std::to_string(group_size) +
                " ldw=" + std::to_string(ldw) + " m=" + (with_m ? "yes" : "null"),
            ref, got);
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

int main() {
  Rng rng(20240611u);
  int passed = 0, failed = 0;
  if (!check_half_roundtrip()) {
    std::printf("0 passed, 1 failed\n");
    return 1;
  }
  std::printf("comparing %s against %s\n", kNeonKernels.name, kScalarKernels.name);
  Stats all[] = {{"lut_ternary_tile"}, {"lut_int4_tile"}, {"mad_ternary_rows"},
                 {"mad_int4_rows"}};
  test_lut_ternary(rng, all[0]);
  test_lut_int4(rng, all[1]);
  test_mad_ternary(rng, all[2]);
  test_mad_int4(rng, all[3]);
  for (const Stats& st : all) {
    std::printf("%-17s %5d cases, %d failed\n", st.name, st.cases, st.failed);
    passed += st.cases - st.failed;
    failed += st.failed;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
