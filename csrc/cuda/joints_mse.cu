// The heatmap MSE loss from the joints on CUDA (see joints_mse.h): one block per (batch, joint)
// heatmap. The forward reduces (pred - target)^2 over the map in double, in shared memory; the
// backward writes w^2 (pred - target) / (H W) times the incoming gradient.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../joints_mse.h"

namespace hrfast {

constexpr int kLossThreads = 256;

__global__ void joints_mse_kernel(const float* __restrict__ pred, const float* __restrict__ joints,
                                  const float* __restrict__ visible, const float* __restrict__ scale,
                                  const float* __restrict__ window, float* __restrict__ loss,
                                  float* __restrict__ weight, int64_t S, int64_t H, int64_t W, double sx, double sy,
                                  double sigma, int enc_i, bool use_target_weight) {
  __shared__ double s_acc[kLossThreads];
  const int64_t n = blockIdx.x;
  const Encoding enc = static_cast<Encoding>(enc_i);
  const LossJoint j = loss_joint(joints, visible, scale[n], n, sx, sy, sigma, W, H, enc);
  const double w = use_target_weight ? j.weight : 1.0;
  const float* map = pred + n * H * W;
  double acc = 0.0;
  if (w != 0.0) {
    for (int64_t p = threadIdx.x; p < H * W; p += blockDim.x) {
      const float t = j.paste ? loss_target(j, p % W, p / W, window, S, sigma, enc) : 0.f;
      const double d = double(map[p]) - t;
      acc += d * d;
    }
  }
  s_acc[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) s_acc[threadIdx.x] += s_acc[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    weight[n] = static_cast<float>(w);
    loss[n] = static_cast<float>(0.5 * w * w * s_acc[0] / double(H * W));
  }
}

__global__ void joints_mse_backward_kernel(const float* __restrict__ grad, const float* __restrict__ pred,
                                           const float* __restrict__ joints, const float* __restrict__ visible,
                                           const float* __restrict__ weight, const float* __restrict__ window,
                                           float* __restrict__ out, int64_t S, int64_t H, int64_t W, double sx,
                                           double sy, double sigma, int enc_i) {
  const int64_t n = blockIdx.x;
  const Encoding enc = static_cast<Encoding>(enc_i);
  // the scale only sets the weight, which the forward saved: paste needs the joint alone
  const LossJoint j = loss_joint(joints, visible, 1.f, n, sx, sy, sigma, W, H, enc);
  const float c = static_cast<float>(double(grad[n]) * weight[n] * weight[n] / double(H * W));
  const float* map = pred + n * H * W;
  float* o = out + n * H * W;
  for (int64_t p = threadIdx.x; p < H * W; p += blockDim.x) {
    const float t = j.paste && c != 0.f ? loss_target(j, p % W, p / W, window, S, sigma, enc) : 0.f;
    o[p] = c * (map[p] - t);
  }
}

std::tuple<at::Tensor, at::Tensor> joints_mse_cuda(const at::Tensor& pred, const at::Tensor& joints,
                                                   const at::Tensor& visible, const at::Tensor& scale,
                                                   at::IntArrayRef image_size, double sigma,
                                                   c10::string_view encoding, const at::Tensor& window,
                                                   bool use_target_weight) {
  const c10::cuda::CUDAGuard guard(pred.device());
  const LossArgs g = loss_args(pred, joints, visible, scale, image_size, sigma, encoding, window);
  at::Tensor loss = at::empty({g.B, g.K}, g.pred.options());
  at::Tensor weight = at::empty({g.B, g.K}, g.pred.options());
  if (g.B * g.K == 0) return {loss, weight};
  joints_mse_kernel<<<g.B * g.K, kLossThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      g.pred.data_ptr<float>(), g.joints.data_ptr<float>(), g.visible.data_ptr<float>(), g.scale.data_ptr<float>(),
      g.S ? g.window.data_ptr<float>() : nullptr, loss.data_ptr<float>(), weight.data_ptr<float>(), g.S, g.H, g.W,
      g.sx, g.sy, sigma, static_cast<int>(g.enc), use_target_weight);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {loss, weight};
}

at::Tensor joints_mse_backward_cuda(const at::Tensor& grad_in, const at::Tensor& pred, const at::Tensor& joints,
                                    const at::Tensor& visible, const at::Tensor& weight, at::IntArrayRef image_size,
                                    double sigma, c10::string_view encoding, const at::Tensor& window) {
  const c10::cuda::CUDAGuard guard(pred.device());
  const LossArgs g = loss_args(pred, joints, visible, weight, image_size, sigma, encoding, window);
  TORCH_CHECK(grad_in.sizes() == weight.sizes(), "joints_mse_backward: grad must be (B, K)");
  const at::Tensor grad = grad_in.contiguous();
  at::Tensor out = at::empty_like(g.pred);
  if (g.B * g.K == 0) return out;
  joints_mse_backward_kernel<<<g.B * g.K, kLossThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      grad.data_ptr<float>(), g.pred.data_ptr<float>(), g.joints.data_ptr<float>(), g.visible.data_ptr<float>(),
      g.scale.data_ptr<float>(), g.S ? g.window.data_ptr<float>() : nullptr, out.data_ptr<float>(), g.S, g.H, g.W,
      g.sx, g.sy, sigma, static_cast<int>(g.enc));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace hrfast

TORCH_LIBRARY_IMPL(hrfast, CUDA, m) {
  m.impl("joints_mse", &hrfast::joints_mse_cuda);
  m.impl("joints_mse_backward", &hrfast::joints_mse_backward_cuda);
}
