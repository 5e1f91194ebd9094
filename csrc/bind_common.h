// Shared by the pybind11 files (bind_*.cpp): argument checks that turn bad input into a
// Python ValueError before any kernel runs, and the shapes of the packed arrays.
//
// Every error is a std::invalid_argument, which pybind11 translates to ValueError (as it
// does the std::invalid_argument of set_isa and of a bad LUTLM_NUM_THREADS); the kernels
// behind ops.h trust their arguments and throw only what ops.h lists, which pybind11
// translates too. Each binding checks and takes its raw pointers with the GIL held, then
// releases it around the work.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "ops.h"
#include "quant_types.h"

namespace lutlm::bind {

namespace py = pybind11;

// The shapes below (and the arrays the bindings allocate) rest on these layout facts of
// quant_types.h; mirrored here so that a layout change cannot silently break a shape check.
static_assert(kStepBytes * 8 == kTileRows * kTernaryStepK * 2,
              "ternary codes [tiles][Kp/8][32]: 2 bits per weight");
static_assert(kStepBytes * 8 == kTileRows * kInt4StepK * 4,
              "INT4 codes [tiles][Kp/4][32]: 4 bits per weight");
static_assert(kInt4OctetBytes * kInt4StepK == 8 * kStepBytes,
              "INT4 nibbles: Kp/8 octets fill exactly the Kp/4 steps of the planes array");
static_assert(kKAlign % kTernaryStepK == 0 && kKAlign % (2 * kInt4StepK) == 0,
              "padded K is whole ternary steps and whole nibble octets");
// INT8 codes are stored decoded, [tiles][Kp/4][16][4]: one int8 per weight.
constexpr int kInt8QuadK = 4;
static_assert(kKAlign % kInt8QuadK == 0, "padded K is whole INT8 quads");

[[noreturn]] void fail(const std::string& msg);

std::string shape_str(const py::array& a);

// obj as a C-contiguous array of T with the given shape (-1: any extent), else ValueError.
py::array checked_array(const py::object& obj, const char* name, const char* dtype,
                        const py::dtype& want, const std::vector<py::ssize_t>& shape);

template <typename T>
py::array_t<T> require(const py::object& obj, const char* name, const char* dtype,
                       std::vector<py::ssize_t> shape) {
  return checked_array(obj, name, dtype, py::dtype::of<T>(), shape).template cast<py::array_t<T>>();
}

// x as float32 [M, K] (converted from any array-like), else ValueError.
py::array_t<float> activations(const py::object& obj, int64_t K);

Method parse_method(const std::string& m);
Int4Layout parse_layout(const std::string& l);
const char* method_name(Method m);

void check_dims(int64_t N, int64_t K);
void check_group_size(int gs);
void check_act_bits(int act_bits);

inline int64_t ternary_kp(int64_t K) { return round_up(K, kKAlign); }
// INT4 and INT8: K padded to the alignment and to whole groups.
inline int64_t grouped_kp(int64_t K, int gs) { return round_up(K, std::max(kKAlign, gs)); }
inline int64_t num_tiles(int64_t N) { return (N + kTileRows - 1) / kTileRows; }

// A float16 array as its uint16 bits (numpy float16 and uint16 are both accepted).
const uint16_t* half_data(const py::array& a, const char* name, bool writable);
uint16_t* writable_half(const py::array& a, const char* name);

// k_cache and v_cache: 4-D [num_blocks, block_size, n_kv_heads, head_dim], same shape,
// with at least one slot per block and one kv head.
void check_cache(const py::array& k, const py::array& v);
// Every slot below num_slots (negative slots are skipped by the kernels).
void check_slots(const int32_t* slots, int64_t T, int64_t num_slots);
// RoPE's head size: even, and within the kernel's stack tables.
void check_rope_head_dim(int64_t d);

// Each family's functions, registered on the module by PYBIND11_MODULE (module.cpp).
void bind_runtime(py::module_& mod);
void bind_pack(py::module_& mod);
void bind_gemm(py::module_& mod);
void bind_layer_ops(py::module_& mod);
void bind_attention(py::module_& mod);

}  // namespace lutlm::bind
