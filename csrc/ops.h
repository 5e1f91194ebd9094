// Whole-matrix operations behind the Python bindings. Arguments are validated in
// the bind_*.cpp files; these functions trust their shapes. Their only exceptions are
// std::bad_alloc and the std::invalid_argument of a bad LUTLM_ISA or LUTLM_NUM_THREADS
// (cpu_features.h, thread_pool.h), which pybind11 turns into MemoryError and ValueError.
#pragma once
#include <cstdint>

namespace lutlm {

// --- packing (pack.cpp) ---------------------------------------------------------
// Bit planes feed the LUT kernels; nibbles (quant_types.h) decode for the MAD kernels
// with a mask and a shift, which makes MAD the faster method at every batch size on
// CPUs with int8 dot products (bench/RESULTS.md).
enum class Int4Layout { kPlanes, kNibbles };

// w: int8 [N, K] in {-1,0,1} -> codes [ceil(N/16)][Kp/8][32]; returns false on a bad value.
bool pack_ternary(const int8_t* w, int64_t N, int64_t K, int64_t Kp, uint8_t* codes);
// q: uint8 [N, K] in 0..15 -> codes [ceil(N/16)][Kp/4][32]; returns false on a bad value.
bool pack_int4(const uint8_t* q, int64_t N, int64_t K, int64_t Kp, uint8_t* codes);
// s: [N, G] (any 16-bit payload) -> [ceil(N/16)][G][16], padding rows with zero.
void pack_group_scales(const uint16_t* s, int64_t N, int64_t G, uint16_t* out);

// Decode `steps` steps of one tile to int8 in the MAD kernels' quad layout
// wq[k/4][16][4] (kernels.h): ternary values in {-1,0,1}, INT4 codes q in 0..15.
void decode_ternary_tile(const uint8_t* codes, int steps, int8_t* wq);
void decode_int4_tile(const uint8_t* codes, int steps, uint8_t* wq);
// The inverses of packing: codes -> w int8 [N, K] in {-1,0,1}, or q uint8 [N, K] in
// 0..15 from either INT4 layout (padding rows and columns dropped).
void unpack_ternary(const uint8_t* codes, int64_t N, int64_t K, int64_t Kp, int8_t* w);
void unpack_int4(const uint8_t* codes, int64_t N, int64_t K, int64_t Kp, Int4Layout layout,
                 uint8_t* q);

// --- GEMM (gemm.cpp): y[M, N] = x[M, K] . W^T ----------------------------------
enum class Method { kAuto, kLut, kMad };

struct TernaryWeights {
  const uint8_t* codes;
  const float* scales;  // [Np] per output row
  int64_t N, K, Kp;
};

struct Int4Weights {
  const uint8_t* codes;
  const uint16_t* d;  // [NT][G][16] fp16
  const uint16_t* m;  // same shape, or nullptr for symmetric
  int64_t N, K, Kp;
  int group_size;
  Int4Layout layout;
};

// INT8 (GGUF Q8_0 with group 32): w = d * q, q in -128..127. The codes are already in
// the MAD kernels' quad layout [ceil(N/16)][Kp/4][16][4], zero padded; d as for INT4.
struct Int8Weights {
  const int8_t* codes;
  const uint16_t* d;  // [NT][G][16] fp16
  int64_t N, K, Kp;
  int group_size;
};

// Largest M for which Method::kAuto uses the lookup-table kernel (see bench/RESULTS.md).
int lut_max_m(bool int4);
Method resolve_method(Method m, int64_t M, bool int4);

void gemm_ternary(const float* x, int64_t M, const TernaryWeights& w, Method method, float* y);
// act_bits 8: activations (or LUT tables) in int8. act_bits 16: two int8 passes, the
// second on what the first lost (residual activations for MAD, residual tables for LUT;
// about twice the time), for reference-grade accuracy.
void gemm_int4(const float* x, int64_t M, const Int4Weights& w, Method method, int act_bits,
               float* y);
// MAD only: a lookup table per 4 activations cannot beat one multiply-add per 8-bit
// weight. act_bits as for gemm_int4.
void gemm_int8(const float* x, int64_t M, const Int8Weights& w, int act_bits, float* y);

// y[M, N] = x[M, K] . w[N, K]^T in fp32 (kernels.h dot_f32 order), for unquantized layers.
void gemm_f32(const float* x, int64_t M, const float* w, int64_t N, int64_t K, float* y);

// --- per-token layer operations (layer_ops.cpp) ---------------------------------
// y = x / sqrt(mean(x^2) + eps) * w per row of x [T, D] (sum of squares in double).
void rms_norm(const float* x, const float* w, int64_t T, int64_t D, float eps, float* y);
// h += delta, then y = rms_norm(h): the residual add fused with the next norm.
void add_rms_norm(float* h, const float* delta, const float* w, int64_t T, int64_t D, float eps,
                  float* y);
// Rotary embedding of x [T, H, d] in place; pairs (2i, 2i+1) or (i, i + d/2).
void rope(float* x, const int64_t* positions, const float* inv_freq, int64_t T, int64_t H,
          int64_t d, bool interleaved);
// out [T, F] = act(gate) * up for gu [T, 2F] = [gate | up]; act = silu, or relu^2.
void gated_act(const float* gu, int64_t T, int64_t F, bool relu2, float* out);

// --- memory bandwidth probe (membw.cpp) -----------------------------------------
// Reads `bytes` of a buffer `reps` times across the pool; returns GB/s (1e9 B/s).
double read_bandwidth_gbps(int64_t bytes, int reps);

// --- paged attention (attention.cpp) --------------------------------------------
struct AttentionArgs {
  const float* q;             // [T, n_heads, head_dim], T = cu_q[num_seqs]
  const uint16_t* k_cache;    // [num_blocks, block_size, n_kv_heads, head_dim] fp16
  const uint16_t* v_cache;
  const int32_t* block_tables;  // [num_seqs, max_blocks]
  const int32_t* ctx_lens;      // [num_seqs]: tokens in the cache, new ones included
  const int32_t* cu_q;          // [num_seqs + 1]: query offsets into q
  int num_seqs, max_blocks, n_heads, n_kv_heads, head_dim, block_size;
  float scale;
};

// Stores k, v [T, row] (row = n_kv_heads * head_dim) at cache slots (block * block_size +
// offset); a negative slot skips its token.
void write_kv_cache(const float* k, const float* v, const int32_t* slots, int64_t T,
                    int64_t row, uint16_t* k_cache, uint16_t* v_cache);
// The attention input of a layer from its fused projection qkv [T, (n_heads + 2
// n_kv_heads) * head_dim] = [q | k | v]: q [T, n_heads, head_dim] and k with RoPE applied
// (rope() above), k and v stored at their cache slots as write_kv_cache does.
void qkv_rope_cache(const float* qkv, int64_t T, int64_t n_heads, int64_t n_kv_heads,
                    int64_t head_dim, const int64_t* positions, const float* inv_freq,
                    bool interleaved, const int32_t* slots, uint16_t* k_cache,
                    uint16_t* v_cache, float* q);
// out [T, n_heads, head_dim] = causal softmax(q k^T * scale) v over the paged cache.
void paged_attention(const AttentionArgs& args, float* out);

}  // namespace lutlm
