// lutlm._C: the module and its constants. Each family of functions registers itself from
// its own file (bind_*.cpp); all of them validate with the GIL held and run the kernels
// without it.
#include <pybind11/pybind11.h>

#include "bind_common.h"
#include "quant_types.h"

PYBIND11_MODULE(_C, mod) {
  using namespace lutlm;
  mod.doc() = "lutlm native kernels: ternary, INT4 and INT8 GEMM on the CPU";
  mod.attr("TILE_ROWS") = kTileRows;
  mod.attr("K_ALIGN") = kKAlign;
  mod.attr("STEP_BYTES") = kStepBytes;
  mod.attr("TERNARY_STEP_K") = kTernaryStepK;
  mod.attr("INT4_STEP_K") = kInt4StepK;
  bind::bind_runtime(mod);
  bind::bind_pack(mod);
  bind::bind_gemm(mod);
  bind::bind_layer_ops(mod);
  bind::bind_attention(mod);
}
