// Gaussian heatmap targets on CUDA: one block per (batch, joint) heatmap, threads over pixels.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common.h"

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

std::tuple<at::Tensor, at::Tensor> gaussian_targets_cuda(const at::Tensor& joints_in,
                                                         const at::Tensor& visible_in,
                                                         at::IntArrayRef image_size,
                                                         at::IntArrayRef heatmap_size, double sigma,
                                                         c10::string_view encoding,
                                                         const at::Tensor& window_in) {
  const Encoding enc = parse_encoding(std::string(encoding));
  check_targets_args(joints_in, visible_in, image_size, heatmap_size, sigma, window_in, enc);
  const at::Tensor window = enc == Encoding::MSRA ? window_in.contiguous() : window_in;
  const int64_t S = enc == Encoding::MSRA ? window.size(0) : 0;
  const c10::cuda::CUDAGuard guard(joints_in.device());
  const at::Tensor joints = joints_in.contiguous();
  const at::Tensor visible = visible_in.contiguous();
  const int64_t B = joints.size(0), K = joints.size(1);
  const int64_t W = heatmap_size[0], H = heatmap_size[1];
  const double sx = enc == Encoding::MSRA ? double(image_size[0]) / W : (image_size[0] - 1.0) / (W - 1.0);
  const double sy = enc == Encoding::MSRA ? double(image_size[1]) / H : (image_size[1] - 1.0) / (H - 1.0);
  at::Tensor targets = at::empty({B, K, H, W}, joints.options());
  at::Tensor weight = at::empty({B, K}, joints.options());
  if (B * K == 0) return {targets, weight};
  gaussian_targets_kernel<<<B * K, 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
      joints.data_ptr<float>(), visible.data_ptr<float>(), targets.data_ptr<float>(),
      weight.data_ptr<float>(), S ? window.data_ptr<float>() : nullptr, S, H, W, sx, sy, sigma, static_cast<int>(enc));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {targets, weight};
}

}  // namespace hrfast

TORCH_LIBRARY_IMPL(hrfast, CUDA, m) {
  m.impl("gaussian_targets", &hrfast::gaussian_targets_cuda);
}
