// The paged KV cache and attention over it (attention.cpp).
#include "bind_common.h"

namespace lutlm::bind {

void bind_attention(py::module_& mod) {
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
    check_rope_head_dim(hd);
    py::array_t<float> qkv = activations(qkv_obj, (n_heads + 2 * nkv) * hd);
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
      qkv_rope_cache(qkv.data(), T, n_heads, nkv, hd, pos.data(), inv.data(), interleaved,
                     slots.data(), kc, vc, q.mutable_data());
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
    if (nh % nkv)
      fail("n_heads (" + std::to_string(nh) + ") must be a multiple of n_kv_heads (" +
           std::to_string(nkv) + ")");
    if (cu.data()[0] != 0) fail("cu_seqlens_q must start at 0");
    for (int64_t s = 0; s < S; ++s) {
      const int32_t q_len = cu.data()[s + 1] - cu.data()[s], c = ctx.data()[s];
      const std::string at = "sequence " + std::to_string(s) + ": ";
      if (q_len < 0) fail("cu_seqlens_q must be non-decreasing");
      if (c < q_len)
        fail(at + "context_len " + std::to_string(c) + " < its " + std::to_string(q_len) +
             " queries");
      const int64_t need = (c + bs - 1) / bs;
      if (need > bt.shape(1))
        fail(at + "needs " + std::to_string(need) + " blocks, block_tables has " +
             std::to_string(bt.shape(1)));
      for (int64_t b = 0; b < need; ++b) {
        const int32_t id = bt.data()[s * bt.shape(1) + b];
        if (id < 0 || id >= nb)
          fail(at + "block_tables[" + std::to_string(b) + "] = " + std::to_string(id) +
               " is not a block of the cache (" + std::to_string(nb) + ")");
      }
    }
    AttentionArgs a{q.data(), half_data(k_cache, "k_cache", false),
                    half_data(v_cache, "v_cache", false), bt.data(), ctx.data(), cu.data(),
                    (int)S, (int)bt.shape(1), (int)nh, (int)nkv, (int)hd, (int)bs, scale};
    py::array_t<float> out({T, nh, hd});
    {
      py::gil_scoped_release nogil;
      paged_attention(a, out.mutable_data());
    }
    return out;
  }, py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("block_tables"),
     py::arg("context_lens"), py::arg("cu_seqlens_q"), py::arg("scale"),
     "Causal attention of q [T, n_heads, head_dim] over the paged fp16 KV cache.");
}

}  // namespace lutlm::bind
