// Packing weights into the kernel layouts (quant_types.h) and unpacking them back.
#include "bind_common.h"

namespace lutlm::bind {

void bind_pack(py::module_& mod) {
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
    const uint16_t* src = s.data();
    uint16_t* dst = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      pack_group_scales(src, N, G, dst);
    }
    return out;
  }, py::arg("scales"), py::arg("K"), py::arg("group_size"));

  mod.def("unpack_ternary", [](const py::object& c_obj, int64_t N, int64_t K) {
    check_dims(N, K);
    const int64_t Kp = ternary_kp(K);
    py::array_t<uint8_t> codes =
        require<uint8_t>(c_obj, "codes", "uint8", {num_tiles(N), Kp / kTernaryStepK, kStepBytes});
    py::array_t<int8_t> w({N, K});
    const uint8_t* c = codes.data();
    int8_t* dst = w.mutable_data();
    {
      py::gil_scoped_release nogil;
      unpack_ternary(c, N, K, Kp, dst);
    }
    return w;
  }, py::arg("codes"), py::arg("N"), py::arg("K"));

  mod.def("unpack_int4", [](const py::object& c_obj, int64_t N, int64_t K, int group_size,
                            const std::string& layout) {
    const Int4Layout lay = parse_layout(layout);
    check_dims(N, K);
    check_group_size(group_size);
    const int64_t Kp = grouped_kp(K, group_size);
    py::array_t<uint8_t> codes =
        require<uint8_t>(c_obj, "codes", "uint8", {num_tiles(N), Kp / kInt4StepK, kStepBytes});
    py::array_t<uint8_t> q({N, K});
    const uint8_t* c = codes.data();
    uint8_t* dst = q.mutable_data();
    {
      py::gil_scoped_release nogil;
      unpack_int4(c, N, K, Kp, lay, dst);
    }
    return q;
  }, py::arg("codes"), py::arg("N"), py::arg("K"), py::arg("group_size"),
     py::arg("layout") = "planes");
}

}  // namespace lutlm::bind
