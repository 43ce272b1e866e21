// Heatmap decoding on the CPU, parallel over (B*K) heatmaps.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common.h"
#include "decode.h"

namespace hrfast {
namespace {

// GCC/Clang vector extension: 8 floats, lowered to AVX2 where the CPU has it (x86-64 clones
// the function and picks at load time), else to pairs of SSE / NEON registers.
typedef float v8f __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HRFAST_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define HRFAST_SIMD_CLONES
#endif

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// First index of the maximum; NaN wins (numpy argmax semantics). Two vectorized passes: the
// maximum, with a running sum of v * 0 that only a NaN or inf makes non-zero, then the first
// block of 32 holding that maximum. Maps with NaN/inf take a plain scan.
HRFAST_SIMD_CLONES void argmax_map(const float* hm, int64_t n, int64_t* idx, float* val) {
  constexpr int L = 32;
  v8f m[4], probe[4];
  for (int a = 0; a < 4; ++a) {
    m[a] = v8f{} - INFINITY;
    probe[a] = v8f{};
  }
  const int64_t nv = n - n % L;
  for (int64_t i = 0; i < nv; i += L) {
    for (int a = 0; a < 4; ++a) {
      const v8f v = load8(hm + i + 8 * a);
      m[a] = v > m[a] ? v : m[a];
      probe[a] += v * 0.f;
    }
  }
  float best = -INFINITY, p = 0.f;
  for (int a = 0; a < 4; ++a)
    for (int l = 0; l < 8; ++l) {
      best = m[a][l] > best ? m[a][l] : best;
      p += probe[a][l];
    }
  for (int64_t i = nv; i < n; ++i) {
    best = hm[i] > best ? hm[i] : best;
    p += hm[i] * 0.f;
  }
  if (p != 0.f) {  // NaN or inf somewhere: exact scan (first NaN, else first maximum)
    int64_t b = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (is_nan(hm[j])) { b = j; break; }
      if (hm[j] > hm[b]) b = j;
    }
    *idx = b;
    *val = hm[b];
    return;
  }
  int64_t start = nv;
  const v8f bv = v8f{} + best;
  for (int64_t i = 0; i < nv; i += L) {
    const auto hit = (load8(hm + i) == bv) | (load8(hm + i + 8) == bv) |
                     (load8(hm + i + 16) == bv) | (load8(hm + i + 24) == bv);
    int any = 0;
    for (int l = 0; l < 8; ++l) any |= hit[l];
    if (any) {
      start = i;
      break;
    }
  }
  for (int64_t j = start; j < n; ++j) {
    if (hm[j] == best) {
      *idx = j;
      *val = hm[j];
      return;
    }
  }
  *idx = 0;  // every value -inf (then p != 0 above); kept for safety
  *val = hm[0];
}

// Blurred maximum of a whole map (separable, zero padding); needed only when the clamp may bite.
double blurred_max(const float* hm, int64_t H, int64_t W, const double* w, int k,
                   std::vector<double>& tmp) {
  const int r = k / 2;
  tmp.assign(H * W, 0.0);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      double acc = 0.0;
      for (int j = 0; j < k; ++j) {
        const int64_t xx = x + j - r;
        if (xx >= 0 && xx < W) acc += w[j] * hm[y * W + xx];
      }
      tmp[y * W + x] = acc;
    }
  double best = -INFINITY;
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      double acc = 0.0;
      for (int i = 0; i < k; ++i) {
        const int64_t yy = y + i - r;
        if (yy >= 0 && yy < H) acc += w[i] * tmp[yy * W + x];
      }
      best = std::max(best, acc);
    }
  return best;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> decode_heatmaps_cpu(const at::Tensor& heatmaps_in,
                                                       c10::string_view method_s,
                                                       int64_t blur_kernel) {
  const Decode method = check_decode_args(heatmaps_in, std::string(method_s), blur_kernel);
  const at::Tensor hm = heatmaps_in.contiguous();
  const int64_t B = hm.size(0), K = hm.size(1), H = hm.size(2), W = hm.size(3);
  at::Tensor coords = at::empty({B, K, 2}, hm.options());
  at::Tensor maxvals = at::empty({B, K}, hm.options());
  const float* hp = hm.data_ptr<float>();
  float* cp = coords.data_ptr<float>();
  float* mp = maxvals.data_ptr<float>();
  double w[kMaxBlurKernel];
  const int k = static_cast<int>(blur_kernel);
  if (method != Decode::QUARTER) blur_weights(k, w);

  at::parallel_for(0, B * K, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> tmp;
    for (int64_t n = begin; n < end; ++n) {
      const float* map = hp + n * H * W;
      int64_t idx;
      float val;
      argmax_map(map, H * W, &idx, &val);
      mp[n] = val;
      double x = static_cast<double>(idx % W), y = static_cast<double>(idx / W);
      if (!(val > 0.f)) {  // official pred_mask: no confident peak -> (0, 0), no refinement
        cp[2 * n] = 0.f;
        cp[2 * n + 1] = 0.f;
        continue;
      }
      const int64_t px = idx % W, py = idx / W;
      if (method == Decode::QUARTER) {
        quarter_offset(map, px, py, W, H, &x, &y);
      } else if (refine_applies(method, px, py, W, H)) {
        const bool udp = method == Decode::UDP;
        LogBlurMap L{map, H, W, w, k, 1.0, udp ? 1e-3 : 1e-10, udp ? 50.0 : INFINITY, udp};
        if (needs_full_blur(L, px, py, val)) {
          const double bm = blurred_max(map, H, W, w, k, tmp);
          L.scale = (bm > 0 && std::isfinite(bm)) ? static_cast<double>(val) / bm : 1.0;
        }
        double ox, oy;
        if (udp) udp_step(L, px, py, &ox, &oy); else dark_step(L, px, py, &ox, &oy);
        x += ox;
        y += oy;
      }
      cp[2 * n] = static_cast<float>(x);
      cp[2 * n + 1] = static_cast<float>(y);
    }
  });
  return {coords, maxvals};
}

}  // namespace hrfast

TORCH_LIBRARY_IMPL(hrfast, CPU, m) {
  m.impl("decode_heatmaps", &hrfast::decode_heatmaps_cpu);
}
