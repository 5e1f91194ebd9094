// Packed weight layouts shared by the packers, the kernels and the tests.
//
// Both weight types are stored in tiles of kTileRows = 16 output rows. A tile is
// a sequence of 32-byte "steps"; one step covers the same k-range for all 16 rows.
// Inside a step, byte r (0..15) and byte 16+r belong to row r:
//
//   byte:   0 ........ 15 | 16 ....... 31
//   lo nib: slot A, rows  | slot B, rows
//   hi nib: slot C, rows  | slot D, rows
//
// With AVX2 one 32-byte load holds all four slots: the low nibbles index a
// 256-bit table whose 128-bit lanes hold the tables for slots A and B, the high
// nibbles one whose lanes hold C and D (_mm256_shuffle_epi8 looks up per lane).
// NEON handles the two 16-byte halves with vqtbl1q_s8.
//
// Ternary (2 bits per weight): a step covers k0 = 8*s .. k0+7; each slot is a pair
// of weights (w0, w1) in {-1,0,1}, coded c = 3*(w0+1) + (w1+1) in 0..8.
//   A = (k0, k0+1)  B = (k0+2, k0+3)  C = (k0+4, k0+5)  D = (k0+6, k0+7)
//   Activation table per step: 64 bytes, 16 per slot in the order A, B, C, D;
//   entry c = x[k]*w0(c) + x[k+1]*w1(c), quantized to int8.
//   Per-row scale: float32 [N_pad]; w = scale[n] * t.
//
// INT4 (4 bits per weight, stored as bit planes): a step covers k0 = 4*s .. k0+3.
// The planes hold c = q ^ 8, the two's complement of q - 8 in -8..7, so a zero
// weight of a symmetric format has no bit set and looks up only exact zeros:
//   P_b = sum_i ((c[k0+i] >> b) & 1) << i,   A = P0  B = P1  C = P2  D = P3,
//   q - 8 = c0 + 2 c1 + 4 c2 - 8 c3 (bits of c).
//   Activation table per step: 32 bytes, entry idx = sum_{i in idx} x[k0+i] as int8,
//   then the same 16 entries negated (AVX2 looks up plane 3 in the negated copy).
//   Per-group scales d and minimums m (IEEE fp16) laid out [tile][group][16 rows];
//   w = d*q + m = d*(q - 8) + (m + 8d). Symmetric formats (GGUF Q4_0) store no
//   minimum: m = -8d, so w = d*(q - 8).
//
// INT4 nibble layout (for the MAD kernels): the same array shape, read as 64-byte
// "octets" of 8 consecutive k for all 16 rows: byte 4r + i of octet o holds
// q[r][8o + i] in its low nibble and q[r][8o + 4 + i] in its high nibble, so masking
// (and shifting) one octet gives the MAD kernels' quad layout for two quads directly.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lutlm {

constexpr int kTileRows = 16;
constexpr int kStepBytes = 32;
constexpr int kKAlign = 32;  // K is padded to this (and to the INT4 group size)

constexpr int kTernaryStepK = 8;
constexpr int kTernaryTableBytes = 64;
constexpr int kInt4StepK = 4;
constexpr int kInt4TableBytes = 32;
constexpr int kInt4OctetBytes = 64;  // nibble layout: 8 k x 16 rows

static_assert(kTileRows * kTernaryStepK * 2 == kStepBytes * 8, "ternary step = 2 bits/weight");
static_assert(kTileRows * kInt4StepK * 4 == kStepBytes * 8, "int4 step = 4 bits/weight");
static_assert(kKAlign % kTernaryStepK == 0 && kKAlign % kInt4StepK == 0, "K padding");

constexpr int kTernaryZeroCode = 4;  // (0, 0)

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Largest |table entry|: every table is scaled so its entries fit in int8 with
// room for the sums done in int16 inside the kernels.
constexpr int kTableMax = 127;

}  // namespace lutlm
