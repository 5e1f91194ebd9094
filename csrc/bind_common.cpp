#include "bind_common.h"

#include <stdexcept>

namespace lutlm::bind {

void fail(const std::string& msg) { throw std::invalid_argument(msg); }

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

py::array checked_array(const py::object& obj, const char* name, const char* dtype,
                        const py::dtype& want, const std::vector<py::ssize_t>& shape) {
  if (!py::isinstance<py::array>(obj)) fail(std::string(name) + " must be a numpy array");
  py::array a = obj.cast<py::array>();
  if (!a.dtype().equal(want))
    fail(std::string(name) + " must have dtype " + dtype + ", got " +
         std::string(py::str(a.dtype())));
  bool ok = a.ndim() == (py::ssize_t)shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || a.shape(i) == shape[i];
  if (!ok) {
    std::string expected = "(";
    for (size_t i = 0; i < shape.size(); ++i)
      expected += (i ? ", " : "") + (shape[i] < 0 ? std::string("*") : std::to_string(shape[i]));
    fail(std::string(name) + " has shape " + shape_str(a) + ", expected " + expected +
         (shape.size() == 1 ? ",)" : ")"));
  }
  if (!(a.flags() & py::array::c_style)) fail(std::string(name) + " must be C-contiguous");
  return a;
}

py::array_t<float> activations(const py::object& obj, int64_t K) {
  py::array a = py::array::ensure(obj);
  if (!a) fail("x must be array-like");
  if (a.ndim() != 2) fail("x must be 2-D [M, K], got shape " + shape_str(a));
  if (a.shape(1) != K)
    fail("x has K=" + std::to_string(a.shape(1)) + " but the weight has K=" + std::to_string(K));
  return py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
}

Method parse_method(const std::string& m) {
  if (m == "auto") return Method::kAuto;
  if (m == "lut") return Method::kLut;
  if (m == "mad") return Method::kMad;
  fail("method must be 'auto', 'lut' or 'mad', got '" + m + "'");
}

Int4Layout parse_layout(const std::string& l) {
  if (l == "planes") return Int4Layout::kPlanes;
  if (l == "nibbles") return Int4Layout::kNibbles;
  fail("layout must be 'planes' or 'nibbles', got '" + l + "'");
}

const char* method_name(Method m) { return m == Method::kLut ? "lut" : "mad"; }

void check_dims(int64_t N, int64_t K) {
  if (N < 1 || K < 1)
    fail("weight matrix must be non-empty, got N=" + std::to_string(N) + ", K=" + std::to_string(K));
  if (N > (int64_t)1 << 30 || K > (int64_t)1 << 30) fail("weight matrix dimensions above 2^30");
}

void check_group_size(int gs) {
  if (gs != 32 && gs != 64 && gs != 128)
    fail("group_size must be 32, 64 or 128, got " + std::to_string(gs));
}

void check_act_bits(int act_bits) {
  if (act_bits != 8 && act_bits != 16)
    fail("act_bits must be 8 or 16, got " + std::to_string(act_bits));
}

const uint16_t* half_data(const py::array& a, const char* name, bool writable) {
  if (a.itemsize() != 2 || (a.dtype().kind() != 'f' && a.dtype().kind() != 'u'))
    fail(std::string(name) + " must have dtype float16, got " + std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) fail(std::string(name) + " must be C-contiguous");
  if (writable && !a.writeable()) fail(std::string(name) + " must be writable");
  return static_cast<const uint16_t*>(a.data());
}

uint16_t* writable_half(const py::array& a, const char* name) {
  return const_cast<uint16_t*>(half_data(a, name, true));
}

void check_cache(const py::array& k, const py::array& v) {
  if (k.ndim() != 4)
    fail("k_cache must be 4-D [num_blocks, block_size, n_kv_heads, head_dim], got " +
         shape_str(k));
  if (v.ndim() != 4 || shape_str(k) != shape_str(v))
    fail("v_cache has shape " + shape_str(v) + ", expected k_cache's " + shape_str(k));
  // The kernels divide by both (a zero was a SIGFPE that killed the process).
  if (k.shape(1) < 1 || k.shape(2) < 1)
    fail("k_cache needs a block_size and n_kv_heads of at least 1, got " + shape_str(k));
}

void check_slots(const int32_t* slots, int64_t T, int64_t num_slots) {
  for (int64_t t = 0; t < T; ++t)
    if (slots[t] >= num_slots)
      fail("slot_mapping[" + std::to_string(t) + "] = " + std::to_string(slots[t]) +
           " is outside the cache of " + std::to_string(num_slots) + " slots");
}

void check_rope_head_dim(int64_t d) {
  // rope() keeps its cos/sin tables for d/2 <= 512 on the stack.
  if (d % 2 || d > 1024) fail("head_dim must be even and at most 1024, got " + std::to_string(d));
}

}  // namespace lutlm::bind
