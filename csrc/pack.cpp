// Packing into the kernel layouts of quant_types.h, and decoding tiles back to
// int8 for the dot-product (MAD) kernels. Packing runs once per weight, at load.
#include <array>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "ops.h"
#include "quant_types.h"
#include "thread_pool.h"

namespace lutlm {

namespace {

inline int tern_code(int8_t a, int8_t b) { return 3 * (a + 1) + (b + 1); }

// One byte of ternary codes holds two pairs: the low nibble at k offsets (0,1), the
// high nibble at (4,5) for byte r, or (2,3) and (6,7) for byte 16+r. The tables turn a
// byte into those four int8 weights, placed at their byte offsets of a uint64.
struct TernaryDecodeTables {
  std::array<uint64_t, 256> first{}, second{};
  TernaryDecodeTables() {
    for (int b = 0; b < 256; ++b) {
      const int lo = b & 15, hi = b >> 4;
      auto w = [](int c, int i) -> uint64_t {
        if (c > 8) return 0;
        const int v = i == 0 ? c / 3 - 1 : c % 3 - 1;
        return (uint64_t)(uint8_t)(int8_t)v;
      };
      first[b] = w(lo, 0) | w(lo, 1) << 8 | w(hi, 0) << 32 | w(hi, 1) << 40;
      second[b] = w(lo, 0) << 16 | w(lo, 1) << 24 | w(hi, 0) << 48 | w(hi, 1) << 56;
    }
  }
};

// INT4 byte r holds planes P0 (low) and P2 (high), byte 16+r holds P1 and P3 of
// c = q ^ 8: each table spreads its two planes' bits into the four codes of the
// step, and the second flips bit 3 back to give q.
struct Int4DecodeTables {
  std::array<uint32_t, 256> first{}, second{};
  Int4DecodeTables() {
    for (int b = 0; b < 256; ++b) {
      uint32_t f = 0, s = 0;
      for (int i = 0; i < 4; ++i) {
        const uint32_t lo = (b >> i) & 1, hi = (b >> (4 + i)) & 1;
        f |= (lo | hi << 2) << (8 * i);
        s |= (lo << 1 | (hi ^ 1) << 3) << (8 * i);
      }
      first[b] = f;
      second[b] = s;
    }
  }
};

const TernaryDecodeTables& tern_tables() {
  static const TernaryDecodeTables t;
  return t;
}
const Int4DecodeTables& int4_tables() {
  static const Int4DecodeTables t;
  return t;
}

// Tile t decoded in quad layout [k/4][16][4] -> rows of the row-major out[N, K].
template <typename T>
void unquad(const T* tile, int64_t t, int64_t N, int64_t K, T* out) {
  for (int r = 0; r < kTileRows && t * kTileRows + r < N; ++r)
    for (int64_t k = 0; k < K; ++k)
      out[(t * kTileRows + r) * K + k] = tile[(k / 4) * kTileRows * 4 + r * 4 + k % 4];
}

}  // namespace

bool pack_ternary(const int8_t* w, int64_t N, int64_t K, int64_t Kp, uint8_t* codes) {
  const int64_t NT = (N + kTileRows - 1) / kTileRows, steps = Kp / kTernaryStepK;
  std::atomic<bool> ok{true};
  ThreadPool::instance().parallel_for((int)NT, [&](int t) {
    uint8_t* out = codes + (size_t)t * steps * kStepBytes;
    for (int r = 0; r < kTileRows; ++r) {
      const int64_t n = (int64_t)t * kTileRows + r;
      const int8_t* row = n < N ? w + (size_t)n * K : nullptr;
      auto at = [&](int64_t k) -> int8_t { return row && k < K ? row[k] : 0; };
      for (int64_t s = 0; s < steps; ++s) {
        const int64_t k0 = s * kTernaryStepK;
        int8_t v[8];
        for (int i = 0; i < 8; ++i) {
          v[i] = at(k0 + i);
          if (v[i] < -1 || v[i] > 1) ok = false;
        }
        out[s * kStepBytes + r] = (uint8_t)(tern_code(v[0], v[1]) | tern_code(v[4], v[5]) << 4);
        out[s * kStepBytes + 16 + r] =
            (uint8_t)(tern_code(v[2], v[3]) | tern_code(v[6], v[7]) << 4);
      }
    }
  });
  return ok;
}

bool pack_int4(const uint8_t* q, int64_t N, int64_t K, int64_t Kp, uint8_t* codes) {
  const int64_t NT = (N + kTileRows - 1) / kTileRows, steps = Kp / kInt4StepK;
  std::atomic<bool> ok{true};
  ThreadPool::instance().parallel_for((int)NT, [&](int t) {
    uint8_t* out = codes + (size_t)t * steps * kStepBytes;
    for (int r = 0; r < kTileRows; ++r) {
      const int64_t n = (int64_t)t * kTileRows + r;
      const uint8_t* row = n < N ? q + (size_t)n * K : nullptr;
      for (int64_t s = 0; s < steps; ++s) {
        int planes[4] = {0, 0, 0, 0};
        for (int i = 0; i < 4; ++i) {
          const int64_t k = s * kInt4StepK + i;
          const int v = row && k < K ? row[k] : 8;  // padding is a zero weight
          if (v > 15) ok = false;
          for (int b = 0; b < 4; ++b) planes[b] |= (((v ^ 8) >> b) & 1) << i;
        }
        out[s * kStepBytes + r] = (uint8_t)(planes[0] | planes[2] << 4);
        out[s * kStepBytes + 16 + r] = (uint8_t)(planes[1] | planes[3] << 4);
      }
    }
  });
  return ok;
}

void pack_group_scales(const uint16_t* s, int64_t N, int64_t G, uint16_t* out) {
  const int64_t NT = (N + kTileRows - 1) / kTileRows;
  for (int64_t t = 0; t < NT; ++t)
    for (int64_t g = 0; g < G; ++g)
      for (int r = 0; r < kTileRows; ++r) {
        const int64_t n = t * kTileRows + r;
        out[(t * G + g) * kTileRows + r] = n < N ? s[n * G + g] : 0;
      }
}

void decode_ternary_tile(const uint8_t* codes, int steps, int8_t* wq) {
  const auto& T = tern_tables();
  for (int s = 0; s < steps; ++s, wq += 2 * kTileRows * 4) {  // a step is two quads
    const uint8_t* c = codes + (size_t)s * kStepBytes;
    for (int r = 0; r < kTileRows; ++r) {
      const uint64_t v = T.first[c[r]] | T.second[c[16 + r]];
      std::memcpy(wq + 4 * r, &v, 4);
      std::memcpy(wq + kTileRows * 4 + 4 * r, (const char*)&v + 4, 4);
    }
  }
}

void decode_int4_tile(const uint8_t* codes, int steps, uint8_t* wq) {
  const auto& T = int4_tables();
  for (int s = 0; s < steps; ++s, wq += kTileRows * 4) {  // a step is one quad
    const uint8_t* c = codes + (size_t)s * kStepBytes;
    for (int r = 0; r < kTileRows; ++r) {
      const uint32_t v = T.first[c[r]] | T.second[c[16 + r]];
      std::memcpy(wq + 4 * r, &v, 4);
    }
  }
}

void unpack_ternary(const uint8_t* codes, int64_t N, int64_t K, int64_t Kp, int8_t* w) {
  const int64_t NT = (N + kTileRows - 1) / kTileRows, steps = Kp / kTernaryStepK;
  std::vector<int8_t> tile((size_t)kTileRows * Kp);
  for (int64_t t = 0; t < NT; ++t) {
    decode_ternary_tile(codes + t * steps * kStepBytes, (int)steps, tile.data());
    unquad(tile.data(), t, N, K, w);
  }
}

void unpack_int4(const uint8_t* codes, int64_t N, int64_t K, int64_t Kp, Int4Layout layout,
                 uint8_t* q) {
  const int64_t NT = (N + kTileRows - 1) / kTileRows, steps = Kp / kInt4StepK;
  std::vector<uint8_t> tile((size_t)kTileRows * Kp);
  for (int64_t t = 0; t < NT; ++t) {
    const uint8_t* c = codes + t * steps * kStepBytes;
    if (layout == Int4Layout::kNibbles)
      unpack_nibble_octets(c, (int)(Kp / 8), tile.data());
    else
      decode_int4_tile(c, (int)steps, tile.data());
    unquad(tile.data(), t, N, K, q);
  }
}

}  // namespace lutlm
