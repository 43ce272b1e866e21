// Gaussian heatmap targets on CUDA: one block per (batch, joint) heatmap, threads over pixels.
// The at::Tensor front is gaussian_targets_cuda in fronts.cpp.
#include "launch.h"

namespace hrfast {

__global__ void gaussian_targets_kernel(const float* __restrict__ joints,
                                        const float* __restrict__ visible, float* __restrict__ targets,
                                        float* __restrict__ weight,
                                        const float* __restrict__ window, int64_t S, int64_t H, int64_t W, double sx,
                                        double sy, double sigma, int enc_i) {
  const int64_t n = blockIdx.x;
  const Encoding enc = static_cast<Encoding>(enc_i);
  const float v = visible[n];
  const TargetWindow t = target_window(joints[2 * n], joints[2 * n + 1], sx, sy, sigma, W, H, enc);
  if (threadIdx.x == 0) weight[n] = t.outside ? 0.f : v;
  const bool paste = !t.outside && v > 0.5f;
  float* map = targets + n * H * W;
  for (int64_t p = threadIdx.x; p < H * W; p += blockDim.x) {
    const int64_t x = p % W, y = p / W;
    float val = 0.f;
    if (paste) val = enc == Encoding::MSRA ? msra_value(t, x, y, window, S) : udp_value(t, x, y, sigma);
    map[p] = val;
  }
}

cudaError_t launch_gaussian_targets(const float* joints, const float* visible, float* targets, float* weight,
                                    const float* window, int64_t n, int64_t S, int64_t H, int64_t W, double sx,
                                    double sy, double sigma, Encoding enc, cudaStream_t stream) {
  gaussian_targets_kernel<<<n, 256, 0, stream>>>(joints, visible, targets, weight, window, S, H, W, sx, sy, sigma,
                                                 static_cast<int>(enc));
  return cudaGetLastError();
}

}  // namespace hrfast
