// The small per-token operations of a decoder layer, fused so that a decode step does
// one pass per operation instead of several numpy temporaries (at 135M parameters the
// per-op overhead is a third of a decode step).
#include <cmath>
#include <cstdint>

#include "cpu_features.h"
#include "kernels.h"
#include "ops.h"
#include "thread_pool.h"

namespace lutlm {

void rms_norm(const float* x, const float* w, int64_t T, int64_t D, float eps, float* y) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * D;
    double ss = 0.0;
    for (int64_t i = 0; i < D; ++i) ss += (double)xr[i] * xr[i];
    const float inv = (float)(1.0 / std::sqrt(ss / D + eps));
    float* yr = y + t * D;
    for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] * inv * w[i];
  }
}

void add_rms_norm(float* h, const float* delta, const float* w, int64_t T, int64_t D, float eps,
                  float* y) {
  for (int64_t i = 0; i < T * D; ++i) h[i] += delta[i];
  rms_norm(h, w, T, D, eps, y);
}

void rope(float* x, const int64_t* positions, const float* inv_freq, int64_t T, int64_t H,
          int64_t d, bool interleaved) {
  const int64_t half = d / 2;
  float cs[512], sn[512];  // head_dim <= 1024 (checked in bindings)
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double a = (double)positions[t] * inv_freq[i];
      cs[i] = (float)std::cos(a);
      sn[i] = (float)std::sin(a);
    }
    for (int64_t h = 0; h < H; ++h) {
      float* v = x + (t * H + h) * d;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
        const float a = v[ia], b = v[ib];
        v[ia] = a * cs[i] - b * sn[i];
        v[ib] = b * cs[i] + a * sn[i];
      }
    }
  }
}

void gated_act(const float* gu, int64_t T, int64_t F, bool relu2, float* out) {
  const IsaKernels& kern = active_kernels();
  ThreadPool::instance().parallel_for((int)T, [&](int t) {
    const float* g = gu + (int64_t)t * 2 * F;
    const float* u = g + F;
    float* o = out + (int64_t)t * F;
    if (relu2) {
      for (int64_t i = 0; i < F; ++i) {
        const float r = g[i] > 0.0f ? g[i] : 0.0f;
        o[i] = r * r * u[i];
      }
      return;
    }
    for (int64_t i = 0; i < F; ++i) o[i] = -g[i];
    kern.exp_f32(o, o, (int)F);  // exp(-g), clamped at e^88: silu(g) -> 0 below -88
    for (int64_t i = 0; i < F; ++i) o[i] = g[i] / (1.0f + o[i]) * u[i];
  });
}

}  // namespace lutlm
