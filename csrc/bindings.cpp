// The only pybind11 file. Validates every argument and turns bad input into a
// Python ValueError (std::invalid_argument) before any kernel runs; kernels
// run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_features.h"
#include "kernels.h"
#include "ops.h"
#include "quant_types.h"
#include "thread_pool.h"

namespace py = pybind11;
using namespace lutlm;

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

template <typename T>
py::array_t<T> require(const py::object& obj, const char* name, const char* dtype,
                       std::vector<py::ssize_t> shape) {
  if (!py::isinstance<py::array>(obj)) fail(std::string(name) + " must be a numpy array");
  py::array a = obj.cast<py::array>();
  if (!a.dtype().equal(py::dtype::of<T>()))
    fail(std::string(name) + " must have dtype " + dtype + ", got " +
         std::string(py::str(a.dtype())));
  bool ok = a.ndim() == (py::ssize_t)shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || a.shape(i) == shape[i];
  if (!ok) {
    std::string want = "(";
    for (size_t i = 0; i < shape.size(); ++i)
      want += (i ? ", " : "") + (shape[i] < 0 ? std::string("*") : std::to_string(shape[i]));
    fail(std::string(name) + " has shape " + shape_str(a) + ", expected " + want +
         (shape.size() == 1 ? ",)" : ")"));
  }
  if (!(a.flags() & py::array::c_style)) fail(std::string(name) + " must be C-contiguous");
  return a.cast<py::array_t<T>>();
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

int64_t ternary_kp(int64_t K) { return round_up(K, kKAlign); }
// INT4 and INT8: K padded to the alignment and to whole groups.
int64_t grouped_kp(int64_t K, int gs) { return round_up(K, std::max(kKAlign, gs)); }
int64_t num_tiles(int64_t N) { return (N + kTileRows - 1) / kTileRows; }

// Tile t decoded in quad layout [k/4][16][4] -> rows of the row-major out[N, K].
template <typename T>
void unquad(const T* tile, int64_t t, int64_t N, int64_t K, T* out) {
  for (int r = 0; r < kTileRows && t * kTileRows + r < N; ++r)
    for (int64_t k = 0; k < K; ++k)
      out[(t * kTileRows + r) * K + k] = tile[(k / 4) * kTileRows * 4 + r * 4 + k % 4];
}

py::array_t<float> activations(const py::object& obj, int64_t K) {
  py::array a = py::array::ensure(obj);
  if (!a) fail("x must be array-like");
  if (a.ndim() != 2) fail("x must be 2-D [M, K], got shape " + shape_str(a));
  if (a.shape(1) != K)
    fail("x has K=" + std::to_string(a.shape(1)) + " but the weight has K=" + std::to_string(K));
  return py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
}

// A float16 array as its uint16 bits (numpy float16 and uint16 are both accepted).
const uint16_t* half_data(const py::array& a, const char* name, bool writable) {
  if (a.itemsize() != 2 || (a.dtype().kind() != 'f' && a.dtype().kind() != 'u'))
    fail(std::string(name) + " must have dtype float16, got " + std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) fail(std::string(name) + " must be C-contiguous");
  if (writable && !a.writeable()) fail(std::string(name) + " must be writable");
  return static_cast<const uint16_t*>(a.data());
}

void check_slots(const int32_t* slots, int64_t T, int64_t num_slots) {
  for (int64_t t = 0; t < T; ++t)
    if (slots[t] >= num_slots)
      fail("slot_mapping[" + std::to_string(t) + "] = " + std::to_string(slots[t]) +
           " is outside the cache of " + std::to_string(num_slots) + " slots");
}

uint16_t* writable_half(const py::array& a, const char* name) {
  return const_cast<uint16_t*>(half_data(a, name, true));
}

void check_cache(const py::array& k, const py::array& v) {
  if (k.ndim() != 4) fail("k_cache must be 4-D [num_blocks, block_size, n_kv_heads, head_dim], got " + shape_str(k));
  if (v.ndim() != 4 || shape_str(k) != shape_str(v))
    fail("v_cache has shape " + shape_str(v) + ", expected k_cache's " + shape_str(k));
}

}  // namespace

PYBIND11_MODULE(_C, mod) {
  mod.doc() = "lutlm native kernels: ternary, INT4 and INT8 GEMM on the CPU";
  mod.attr("TILE_ROWS") = kTileRows;
  mod.attr("K_ALIGN") = kKAlign;

  mod.def("cpu_info", [] {
    const CpuInfo& c = cpu_info();
    py::dict d;
    d["arch"] = c.arch;
    d["model"] = c.model;
    d["features"] = c.features;
    d["physical_cores"] = c.physical_cores;
    d["logical_cpus"] = c.logical_cpus;
    d["isa"] = std::string(active_kernels().name);
    d["available_isas"] = available_isas();
    d["num_threads"] = ThreadPool::instance().num_threads();
    d["lut_max_m"] = py::dict(py::arg("ternary") = lut_max_m(false), py::arg("int4") = lut_max_m(true));
    return d;
  }, "Detected CPU, kernel ISA in use, thread count and LUT/MAD crossover.");

  mod.def("set_isa", &set_isa, py::arg("name"),
          "Select the kernel ISA: 'auto' or one of cpu_info()['available_isas'].");
  mod.def("get_isa", [] { return std::string(active_kernels().name); });
  mod.def("set_num_threads", [](int n) {
    if (n < 1) fail("num_threads must be >= 1, got " + std::to_string(n));
    // instance(n): a first call sets the count without reading LUTLM_NUM_THREADS.
    ThreadPool::instance(n).set_num_threads(n);
  }, py::arg("n"));
  mod.def("max_num_threads", &max_num_threads,
          "The most threads LUTLM_NUM_THREADS and `lutlm --threads` accept (4 x logical CPUs).");
  mod.def("get_num_threads", [] { return ThreadPool::instance().num_threads(); });
  mod.def("resolve_method", [](const std::string& method, int64_t M, bool int4) {
    return std::string(method_name(resolve_method(parse_method(method), M, int4)));
  }, py::arg("method"), py::arg("M"), py::arg("int4"));

  mod.def("pack_ternary", [](const py::object& w_obj) {
    py::array_t<int8_t> w = require<int8_t>(w_obj, "w", "int8", {-1, -1});
    const int64_t N = w.shape(0), K = w.shape(1);
    check_dims(N, K);
    const int64_t Kp = ternary_kp(K);
    py::array_t<uint8_t> codes({num_tiles(N), Kp / kTernaryStepK, (int64_t)kStepBytes});
    bool ok;
    {
      py::gil_scoped_release nogil;
      ok = pack_ternary(w.data(), N, K, Kp, codes.mutable_data());
    }
    if (!ok) fail("ternary weights must be -1, 0 or +1");
    return codes;
  }, py::arg("w"), "Pack int8 ternary weights [N, K] into the kernel layout.");

  mod.def("pack_int4", [](const py::object& q_obj, int group_size) {
    check_group_size(group_size);
    py::array_t<uint8_t> q = require<uint8_t>(q_obj, "q", "uint8", {-1, -1});
    const int64_t N = q.shape(0), K = q.shape(1);
    check_dims(N, K);
    const int64_t Kp = grouped_kp(K, group_size);
    py::array_t<uint8_t> codes({num_tiles(N), Kp / kInt4StepK, (int64_t)kStepBytes});
    bool ok;
    {
      py::gil_scoped_release nogil;
      ok = pack_int4(q.data(), N, K, Kp, codes.mutable_data());
    }
    if (!ok) fail("INT4 codes must be in 0..15");
    return codes;
  }, py::arg("q"), py::arg("group_size"), "Pack INT4 codes [N, K] (0..15) into bit planes.");

  mod.def("pack_group_scales", [](const py::object& s_obj, int64_t K, int group_size) {
    check_group_size(group_size);
    py::array_t<uint16_t> s = require<uint16_t>(s_obj, "scales", "uint16 (fp16 bits)", {-1, -1});
    const int64_t N = s.shape(0), G = grouped_kp(K, group_size) / group_size;
    if (s.shape(1) != G)
      fail("scales have " + std::to_string(s.shape(1)) + " groups per row, expected " +
           std::to_string(G) + " for K=" + std::to_string(K) + ", group_size=" +
           std::to_string(group_size));
    py::array_t<uint16_t> out({num_tiles(N), G, (int64_t)kTileRows});
    pack_group_scales(s.data(), N, G, out.mutable_data());
    return out;
  }, py::arg("scales"), py::arg("K"), py::arg("group_size"));

  mod.def("unpack_ternary", [](const py::object& c_obj, int64_t N, int64_t K) {
    check_dims(N, K);
    const int64_t Kp = ternary_kp(K), steps = Kp / kTernaryStepK;
    py::array_t<uint8_t> codes =
        require<uint8_t>(c_obj, "codes", "uint8", {num_tiles(N), steps, kStepBytes});
    py::array_t<int8_t> w({N, K});
    std::vector<int8_t> tile((size_t)kTileRows * Kp);
    for (int64_t t = 0; t < num_tiles(N); ++t) {
      decode_ternary_tile(codes.data() + t * steps * kStepBytes, (int)steps, tile.data());
      unquad(tile.data(), t, N, K, w.mutable_data());
    }
    return w;
  }, py::arg("codes"), py::arg("N"), py::arg("K"));

  mod.def("unpack_int4", [](const py::object& c_obj, int64_t N, int64_t K, int group_size,
                            const std::string& layout) {
    const Int4Layout lay = parse_layout(layout);
    check_dims(N, K);
    check_group_size(group_size);
    const int64_t Kp = grouped_kp(K, group_size), steps = Kp / kInt4StepK;
    py::array_t<uint8_t> codes =
        require<uint8_t>(c_obj, "codes", "uint8", {num_tiles(N), steps, kStepBytes});
    py::array_t<uint8_t> q({N, K});
    std::vector<uint8_t> tile((size_t)kTileRows * Kp);
    for (int64_t t = 0; t < num_tiles(N); ++t) {
      const uint8_t* c = codes.data() + t * steps * kStepBytes;
      if (lay == Int4Layout::kNibbles)
        unpack_nibble_octets(c, (int)(Kp / 8), tile.data());
      else
        decode_int4_tile(c, (int)steps, tile.data());
      unquad(tile.data(), t, N, K, q.mutable_data());
    }
    return q;
  }, py::arg("codes"), py::arg("N"), py::arg("K"), py::arg("group_size"),
     py::arg("layout") = "planes");

  mod.def("gemm_ternary", [](const py::object& x_obj, const py::object& c_obj,
                             const py::object& s_obj, int64_t N, int64_t K,
                             const std::string& method) {
    check_dims(N, K);
    const Method meth = parse_method(method);
    const int64_t Kp = ternary_kp(K);
    py::array_t<float> x = activations(x_obj, K);
    auto codes = require<uint8_t>(c_obj, "codes", "uint8", {num_tiles(N), Kp / kTernaryStepK, kStepBytes});
    auto scales = require<float>(s_obj, "scales", "float32", {N});
    const int64_t M = x.shape(0);
    py::array_t<float> y({M, N});
    TernaryWeights w{codes.data(), scales.data(), N, K, Kp};
    {
      py::gil_scoped_release nogil;
      gemm_ternary(x.data(), M, w, meth, y.mutable_data());
    }
    return y;
  }, py::arg("x"), py::arg("codes"), py::arg("scales"), py::arg("N"), py::arg("K"),
     py::arg("method") = "auto", "y[M, N] = x[M, K] . W^T for packed ternary W.");

  mod.def("gemm_int4", [](const py::object& x_obj, const py::object& c_obj,
                          const py::object& d_obj, const py::object& m_obj, int64_t N, int64_t K,
                          int group_size, const std::string& method, int act_bits,
                          const std::string& layout) {
    if (act_bits != 8 && act_bits != 16) fail("act_bits must be 8 or 16, got " + std::to_string(act_bits));
    check_dims(N, K);
    check_group_size(group_size);
    const Method meth = parse_method(method);
    const Int4Layout lay = parse_layout(layout);
    if (lay == Int4Layout::kNibbles && meth == Method::kLut)
      fail("method 'lut' needs INT4 weights in the 'planes' layout; these are 'nibbles'");
    const int64_t Kp = grouped_kp(K, group_size), G = Kp / group_size, NT = num_tiles(N);
    py::array_t<float> x = activations(x_obj, K);
    auto codes = require<uint8_t>(c_obj, "codes", "uint8", {NT, Kp / kInt4StepK, kStepBytes});
    auto d = require<uint16_t>(d_obj, "d", "uint16 (fp16 bits)", {NT, G, kTileRows});
    py::array_t<uint16_t> m;
    if (!m_obj.is_none()) m = require<uint16_t>(m_obj, "m", "uint16 (fp16 bits)", {NT, G, kTileRows});
    const int64_t M = x.shape(0);
    py::array_t<float> y({M, N});
    Int4Weights w{codes.data(), d.data(), m_obj.is_none() ? nullptr : m.data(), N, K, Kp,
                  group_size, lay};
    {
      py::gil_scoped_release nogil;
      gemm_int4(x.data(), M, w, meth, act_bits, y.mutable_data());
    }
    return y;
  }, py::arg("x"), py::arg("codes"), py::arg("d"), py::arg("m"), py::arg("N"), py::arg("K"),
     py::arg("group_size"), py::arg("method") = "auto", py::arg("act_bits") = 8,
     py::arg("layout") = "planes",
     "y[M, N] = x[M, K] . W^T for packed INT4 W (w = d*q + m, or d*(q-8) when m is None).");

  mod.def("gemm_int8", [](const py::object& x_obj, const py::object& c_obj,
                          const py::object& d_obj, int64_t N, int64_t K, int group_size,
                          int act_bits) {
    if (act_bits != 8 && act_bits != 16) fail("act_bits must be 8 or 16, got " + std::to_string(act_bits));
    check_dims(N, K);
    check_group_size(group_size);
    const int64_t Kp = grouped_kp(K, group_size), G = Kp / group_size, NT = num_tiles(N);
    py::array_t<float> x = activations(x_obj, K);
    auto codes = require<int8_t>(c_obj, "codes", "int8", {NT, Kp / 4, kTileRows, 4});
    auto d = require<uint16_t>(d_obj, "d", "uint16 (fp16 bits)", {NT, G, kTileRows});
    const int64_t M = x.shape(0);
    py::array_t<float> y({M, N});
    Int8Weights w{codes.data(), d.data(), N, K, Kp, group_size};
    {
      py::gil_scoped_release nogil;
      gemm_int8(x.data(), M, w, act_bits, y.mutable_data());
    }
    return y;
  }, py::arg("x"), py::arg("codes"), py::arg("d"), py::arg("N"), py::arg("K"),
     py::arg("group_size"), py::arg("act_bits") = 8,
     "y[M, N] = x[M, K] . W^T for INT8 W = d*q (codes in quad layout [ceil(N/16), Kp/4, 16, 4]).");

  mod.def("gemm_f32", [](const py::object& x_obj, const py::object& w_obj) {
    if (!py::isinstance<py::array>(w_obj)) fail("w must be a numpy array");
    auto w = require<float>(w_obj, "w", "float32", {-1, -1});
    const int64_t N = w.shape(0), K = w.shape(1);
    check_dims(N, K);
    py::array_t<float> x = activations(x_obj, K);
    const int64_t M = x.shape(0);
    py::array_t<float> y({M, N});
    {
      py::gil_scoped_release nogil;
      gemm_f32(x.data(), M, w.data(), N, K, y.mutable_data());
    }
    return y;
  }, py::arg("x"), py::arg("w"), "y[M, N] = x[M, K] . w[N, K]^T in fp32, on the pool.");

  mod.def("rms_norm", [](const py::object& x_obj, const py::object& w_obj, float eps) {
    auto w = require<float>(w_obj, "w", "float32", {-1});
    const int64_t D = w.shape(0);
    py::array_t<float> x = activations(x_obj, D);
    py::array_t<float> y({(int64_t)x.shape(0), D});
    rms_norm(x.data(), w.data(), x.shape(0), D, eps, y.mutable_data());
    return y;
  }, py::arg("x"), py::arg("w"), py::arg("eps"), "RMSNorm of each row of x [T, D].");

  mod.def("add_rms_norm", [](py::array_t<float> h, const py::object& d_obj,
                             const py::object& w_obj, float eps) {
    auto w = require<float>(w_obj, "w", "float32", {-1});
    const int64_t D = w.shape(0);
    if (h.ndim() != 2 || h.shape(1) != D || !(h.flags() & py::array::c_style) || !h.writeable())
      fail("h must be a writable C-contiguous float32 [T, " + std::to_string(D) + "] array");
    py::array_t<float> d = activations(d_obj, D);
    if (d.shape(0) != h.shape(0)) fail("delta and h must have the same number of rows");
    py::array_t<float> y({(int64_t)h.shape(0), D});
    add_rms_norm(h.mutable_data(), d.data(), w.data(), h.shape(0), D, eps, y.mutable_data());
    return y;
  }, py::arg("h"), py::arg("delta"), py::arg("w"), py::arg("eps"),
     "h += delta in place; returns RMSNorm(h).");

  mod.def("rope", [](py::array_t<float> x, const py::object& pos_obj, const py::object& f_obj,
                     bool interleaved) {
    if (x.ndim() != 3 || !(x.flags() & py::array::c_style) || !x.writeable())
      fail("x must be a writable C-contiguous float32 [T, heads, head_dim] array");
    const int64_t T = x.shape(0), H = x.shape(1), d = x.shape(2);
    if (d % 2 || d > 1024) fail("head_dim must be even and at most 1024, got " + std::to_string(d));
    auto pos = require<int64_t>(pos_obj, "positions", "int64", {T});
    auto inv = require<float>(f_obj, "inv_freq", "float32", {d / 2});
    rope(x.mutable_data(), pos.data(), inv.data(), T, H, d, interleaved);
  }, py::arg("x"), py::arg("positions"), py::arg("inv_freq"), py::arg("interleaved"),
     "Rotary position embedding of x [T, heads, head_dim], in place.");

  mod.def("gated_act", [](const py::object& gu_obj, bool relu2) {
    py::array gu0 = py::array::ensure(gu_obj);
    if (!gu0 || gu0.ndim() != 2 || gu0.shape(1) % 2) fail("gu must be 2-D [T, 2F]");
    const int64_t F = gu0.shape(1) / 2;
    py::array_t<float> gu = activations(gu_obj, 2 * F);
    py::array_t<float> out({(int64_t)gu.shape(0), F});
    gated_act(gu.data(), gu.shape(0), F, relu2, out.mutable_data());
    return out;
  }, py::arg("gu"), py::arg("relu2") = false, "act(gate) * up for gu = [gate | up].");

  mod.def("write_kv_cache", [](const py::object& k_obj, const py::object& v_obj,
                               const py::object& slots_obj, py::array k_cache, py::array v_cache) {
    check_cache(k_cache, v_cache);
    const int64_t nb = k_cache.shape(0), bs = k_cache.shape(1), nkv = k_cache.shape(2),
                  hd = k_cache.shape(3);
    auto slots = require<int32_t>(slots_obj, "slot_mapping", "int32", {-1});
    const int64_t T = slots.shape(0);
    auto k = require<float>(k_obj, "k", "float32", {T, nkv, hd});
    auto v = require<float>(v_obj, "v", "float32", {T, nkv, hd});
    check_slots(slots.data(), T, nb * bs);
    uint16_t* kc = writable_half(k_cache, "k_cache");
    uint16_t* vc = writable_half(v_cache, "v_cache");
    py::gil_scoped_release nogil;
    write_kv_cache(k.data(), v.data(), slots.data(), T, nkv * hd, kc, vc);
  }, py::arg("k"), py::arg("v"), py::arg("slot_mapping"), py::arg("k_cache"), py::arg("v_cache"),
     "Store k, v [T, n_kv_heads, head_dim] into their cache slots (negative slot: skip).");

  mod.def("qkv_rope_cache", [](const py::object& qkv_obj, const py::object& pos_obj,
                               const py::object& f_obj, bool interleaved,
                               const py::object& slots_obj, py::array k_cache, py::array v_cache,
                               int64_t n_heads) {
    check_cache(k_cache, v_cache);
    const int64_t nb = k_cache.shape(0), bs = k_cache.shape(1), nkv = k_cache.shape(2),
                  hd = k_cache.shape(3);
    if (n_heads < 1 || n_heads % nkv)
      fail("n_heads must be a positive multiple of the cache's " + std::to_string(nkv) +
           " kv heads, got " + std::to_string(n_heads));
    if (hd % 2 || hd > 1024) fail("head_dim must be even and at most 1024, got " + std::to_string(hd));
    const int64_t qs = n_heads * hd, kvs = nkv * hd, width = qs + 2 * kvs;
    py::array_t<float> qkv = activations(qkv_obj, width);
    const int64_t T = qkv.shape(0);
    auto pos = require<int64_t>(pos_obj, "positions", "int64", {T});
    auto inv = require<float>(f_obj, "inv_freq", "float32", {hd / 2});
    auto slots = require<int32_t>(slots_obj, "slot_mapping", "int32", {T});
    check_slots(slots.data(), T, nb * bs);
    uint16_t* kc = writable_half(k_cache, "k_cache");
    uint16_t* vc = writable_half(v_cache, "v_cache");
    py::array_t<float> q({T, n_heads, hd});
    {
      py::gil_scoped_release nogil;
      std::vector<float> k((size_t)T * kvs), v((size_t)T * kvs);
      const float* src = qkv.data();
      for (int64_t t = 0; t < T; ++t, src += width) {
        std::copy(src, src + qs, q.mutable_data() + t * qs);
        std::copy(src + qs, src + qs + kvs, k.data() + t * kvs);
        std::copy(src + qs + kvs, src + width, v.data() + t * kvs);
      }
      rope(q.mutable_data(), pos.data(), inv.data(), T, n_heads, hd, interleaved);
      rope(k.data(), pos.data(), inv.data(), T, nkv, hd, interleaved);
      write_kv_cache(k.data(), v.data(), slots.data(), T, kvs, kc, vc);
    }
    return q;
  }, py::arg("qkv"), py::arg("positions"), py::arg("inv_freq"), py::arg("interleaved"),
     py::arg("slot_mapping"), py::arg("k_cache"), py::arg("v_cache"), py::arg("n_heads"),
     "Split qkv [T, (n_heads + 2 kv) * hd], apply RoPE to q and k, store k and v at their "
     "cache slots; returns q [T, n_heads, hd].");

  mod.def("paged_attention", [](const py::object& q_obj, py::array k_cache, py::array v_cache,
                                const py::object& bt_obj, const py::object& ctx_obj,
                                const py::object& cu_obj, float scale) {
    check_cache(k_cache, v_cache);
    const int64_t nb = k_cache.shape(0), bs = k_cache.shape(1), nkv = k_cache.shape(2),
                  hd = k_cache.shape(3);
    auto ctx = require<int32_t>(ctx_obj, "context_lens", "int32", {-1});
    const int64_t S = ctx.shape(0);
    auto cu = require<int32_t>(cu_obj, "cu_seqlens_q", "int32", {S + 1});
    auto bt = require<int32_t>(bt_obj, "block_tables", "int32", {S, -1});
    const int64_t T = cu.data()[S];
    auto q = require<float>(q_obj, "q", "float32", {T, -1, hd});
    const int64_t nh = q.shape(1);
    if (nh % nkv) fail("n_heads (" + std::to_string(nh) + ") must be a multiple of n_kv_heads (" + std::to_string(nkv) + ")");
    if (cu.data()[0] != 0) fail("cu_seqlens_q must start at 0");
    for (int64_t s = 0; s < S; ++s) {
      const int32_t q_len = cu.data()[s + 1] - cu.data()[s], c = ctx.data()[s];
      const std::string at = "sequence " + std::to_string(s) + ": ";
      if (q_len < 0) fail("cu_seqlens_q must be non-decreasing");
      if (c < q_len) fail(at + "context_len " + std::to_string(c) + " < its " + std::to_string(q_len) + " queries");
      const int64_t need = (c + bs - 1) / bs;
      if (need > bt.shape(1))
        fail(at + "needs " + std::to_string(need) + " blocks, block_tables has " + std::to_string(bt.shape(1)));
      for (int64_t b = 0; b < need; ++b) {
        const int32_t id = bt.data()[s * bt.shape(1) + b];
        if (id < 0 || id >= nb)
          fail(at + "block_tables[" + std::to_string(b) + "] = " + std::to_string(id) + " is not a block of the cache (" + std::to_string(nb) + ")");
      }
    }
    AttentionArgs a{q.data(), half_data(k_cache, "k_cache", false), half_data(v_cache, "v_cache", false),
                    bt.data(), ctx.data(), cu.data(), (int)S, (int)bt.shape(1), (int)nh, (int)nkv,
                    (int)hd, (int)bs, scale};
    py::array_t<float> out({T, nh, hd});
    {
      py::gil_scoped_release nogil;
      paged_attention(a, out.mutable_data());
    }
    return out;
  }, py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("block_tables"),
     py::arg("context_lens"), py::arg("cu_seqlens_q"), py::arg("scale"),
     "Causal attention of q [T, n_heads, head_dim] over the paged fp16 KV cache.");

  mod.def("read_bandwidth", [](int64_t bytes, int reps) {
    if (bytes < (1 << 20)) fail("bytes must be at least 1 MiB");
    if (reps < 1) fail("reps must be >= 1");
    py::gil_scoped_release nogil;
    return read_bandwidth_gbps(bytes, reps);
  }, py::arg("bytes"), py::arg("reps") = 3, "Read bandwidth in GB/s over `bytes` with all threads.");
}
