// Heatmap decoding on CUDA: one block per (batch, joint) heatmap. A shared-memory reduction
// finds the first argmax (NaN first, as numpy); thread 0 refines; when the clamp of the log map
// may bite (see decode.cpp), the block computes the blurred maximum cooperatively.
// The at::Tensor front is decode_heatmaps_cuda in fronts.cpp.
#include "../decode.h"
#include "launch.h"

namespace hrfast {

constexpr int kThreads = 256;

// (a better than b): NaN beats numbers, larger beats smaller, equal -> lower index.
__device__ __forceinline__ bool better(float va, int64_t ia, float vb, int64_t ib) {
  const bool na = va != va, nb = vb != vb;
  if (na != nb) return na;
  if (!na && va != vb) return va > vb;
  return ia < ib;
}

__global__ void decode_kernel(const float* __restrict__ heatmaps, float* __restrict__ coords,
                              float* __restrict__ maxvals, int64_t H, int64_t W, int method_i,
                              int k) {
  __shared__ float s_val[kThreads];
  __shared__ int64_t s_idx[kThreads];
  __shared__ double s_max[kThreads];
  __shared__ double s_w[kMaxBlurKernel];
  __shared__ int s_need_exact;
  const Decode method = static_cast<Decode>(method_i);
  const int64_t n = blockIdx.x;
  const float* map = heatmaps + n * H * W;
  const int t = threadIdx.x;

  float bv = -INFINITY;
  int64_t bi = H * W;  // sentinel: loses every tie
  for (int64_t p = t; p < H * W; p += blockDim.x) {
    const float v = map[p];
    if (better(v, p, bv, bi)) { bv = v; bi = p; }
  }
  s_val[t] = bv;
  s_idx[t] = bi;
  if (t == 0 && method != Decode::QUARTER) blur_weights(k, s_w);
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s && better(s_val[t + s], s_idx[t + s], s_val[t], s_idx[t])) {
      s_val[t] = s_val[t + s];
      s_idx[t] = s_idx[t + s];
    }
    __syncthreads();
  }
  const float val = s_val[0];
  const int64_t idx = s_idx[0] < H * W ? s_idx[0] : 0;
  const int64_t px = idx % W, py = idx / W;
  const bool confident = val > 0.f;
  const bool refine = confident && method != Decode::QUARTER && refine_applies(method, px, py, W, H);
  const bool udp = method == Decode::UDP;
  LogBlurMap L{map, H, W, s_w, k, 1.0, udp ? 1e-3 : 1e-10, udp ? 50.0 : INFINITY, udp};

  if (t == 0) {
    s_need_exact = 0;
    if (refine) s_need_exact = needs_full_blur(L, px, py, val);
  }
  __syncthreads();
  if (s_need_exact) {
    double m = -INFINITY;
    for (int64_t p = t; p < H * W; p += blockDim.x) m = fmax(m, blur_at(map, H, W, p / W, p % W, s_w, k));
    s_max[t] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (t < s) s_max[t] = fmax(s_max[t], s_max[t + s]);
      __syncthreads();
    }
    const double bm = s_max[0];
    L.scale = (bm > 0 && isfinite(bm)) ? static_cast<double>(val) / bm : 1.0;
  }
  if (t != 0) return;
  maxvals[n] = val;
  double x = static_cast<double>(px), y = static_cast<double>(py);
  if (!confident) {
    x = y = 0.0;
  } else if (method == Decode::QUARTER) {
    quarter_offset(map, px, py, W, H, &x, &y);
  } else if (refine) {
    double ox, oy;
    if (udp) udp_step(L, px, py, &ox, &oy); else dark_step(L, px, py, &ox, &oy);
    x += ox;
    y += oy;
  }
  coords[2 * n] = static_cast<float>(x);
  coords[2 * n + 1] = static_cast<float>(y);
}

cudaError_t launch_decode(const float* heatmaps, float* coords, float* maxvals, int64_t n, int64_t H, int64_t W,
                          Decode method, int blur_kernel, cudaStream_t stream) {
  decode_kernel<<<n, kThreads, 0, stream>>>(heatmaps, coords, maxvals, H, W, static_cast<int>(method), blur_kernel);
  return cudaGetLastError();
}

}  // namespace hrfast
