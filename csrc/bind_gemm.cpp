// y[M, N] = x[M, K] . W^T for each weight format (gemm.cpp).
#include "bind_common.h"

namespace lutlm::bind {

void bind_gemm(py::module_& mod) {
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
    check_act_bits(act_bits);
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
    check_act_bits(act_bits);
    check_dims(N, K);
    check_group_size(group_size);
    const int64_t Kp = grouped_kp(K, group_size), G = Kp / group_size, NT = num_tiles(N);
    py::array_t<float> x = activations(x_obj, K);
    auto codes = require<int8_t>(c_obj, "codes", "int8", {NT, Kp / kInt8QuadK, kTileRows, kInt8QuadK});
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
}

}  // namespace lutlm::bind
