// The fused per-token operations of a decoder layer (layer_ops.cpp).
#include "bind_common.h"

namespace lutlm::bind {

namespace {

// An array the op writes in place. pybind11 would silently convert a float64 (or
// strided) array into a temporary float32 copy, and the update would be lost: refuse it.
py::array_t<float> inplace_f32(const py::object& obj, const std::string& what) {
  py::array arr = py::array::ensure(obj);
  if (!arr || !arr.dtype().is(py::dtype::of<float>()) || !(arr.flags() & py::array::c_style) ||
      !arr.writeable())
    fail(what);
  return py::reinterpret_borrow<py::array_t<float>>(arr);
}

}  // namespace

void bind_layer_ops(py::module_& mod) {
  mod.def("rms_norm", [](const py::object& x_obj, const py::object& w_obj, float eps) {
    auto w = require<float>(w_obj, "w", "float32", {-1});
    const int64_t D = w.shape(0);
    py::array_t<float> x = activations(x_obj, D);
    const int64_t T = x.shape(0);
    py::array_t<float> y({T, D});
    {
      py::gil_scoped_release nogil;
      rms_norm(x.data(), w.data(), T, D, eps, y.mutable_data());
    }
    return y;
  }, py::arg("x"), py::arg("w"), py::arg("eps"), "RMSNorm of each row of x [T, D].");

  mod.def("add_rms_norm", [](const py::object& h_obj, const py::object& d_obj,
                             const py::object& w_obj, float eps) {
    auto w = require<float>(w_obj, "w", "float32", {-1});
    const int64_t D = w.shape(0);
    const std::string want =
        "h must be a writable C-contiguous float32 [T, " + std::to_string(D) + "] array";
    py::array_t<float> h = inplace_f32(h_obj, want);
    if (h.ndim() != 2 || h.shape(1) != D) fail(want);
    py::array_t<float> d = activations(d_obj, D);
    if (d.shape(0) != h.shape(0)) fail("delta and h must have the same number of rows");
    const int64_t T = h.shape(0);
    py::array_t<float> y({T, D});
    {
      py::gil_scoped_release nogil;
      add_rms_norm(h.mutable_data(), d.data(), w.data(), T, D, eps, y.mutable_data());
    }
    return y;
  }, py::arg("h"), py::arg("delta"), py::arg("w"), py::arg("eps"),
     "h += delta in place; returns RMSNorm(h).");

  mod.def("rope", [](const py::object& x_obj, const py::object& pos_obj, const py::object& f_obj,
                     bool interleaved) {
    const std::string want = "x must be a writable C-contiguous float32 [T, heads, head_dim] array";
    py::array_t<float> x = inplace_f32(x_obj, want);
    if (x.ndim() != 3) fail(want);
    const int64_t T = x.shape(0), H = x.shape(1), d = x.shape(2);
    check_rope_head_dim(d);
    auto pos = require<int64_t>(pos_obj, "positions", "int64", {T});
    auto inv = require<float>(f_obj, "inv_freq", "float32", {d / 2});
    py::gil_scoped_release nogil;
    rope(x.mutable_data(), pos.data(), inv.data(), T, H, d, interleaved);
  }, py::arg("x"), py::arg("positions"), py::arg("inv_freq"), py::arg("interleaved"),
     "Rotary position embedding of x [T, heads, head_dim], in place.");

  mod.def("gated_act", [](const py::object& gu_obj, bool relu2) {
    py::array gu0 = py::array::ensure(gu_obj);
    if (!gu0 || gu0.ndim() != 2 || gu0.shape(1) % 2) fail("gu must be 2-D [T, 2F]");
    const int64_t F = gu0.shape(1) / 2;
    py::array_t<float> gu = activations(gu_obj, 2 * F);
    const int64_t T = gu.shape(0);
    py::array_t<float> out({T, F});
    {
      py::gil_scoped_release nogil;
      gated_act(gu.data(), T, F, relu2, out.mutable_data());
    }
    return out;
  }, py::arg("gu"), py::arg("relu2") = false, "act(gate) * up for gu = [gate | up].");
}

}  // namespace lutlm::bind
