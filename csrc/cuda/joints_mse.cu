// The heatmap MSE loss from the joints on CUDA (see joints_mse.h): one block per (batch, joint)
// heatmap. The forward reduces (pred - target)^2 over the map in double, in shared memory; the
// backward writes w^2 (pred - target) / (H W) times the incoming gradient.
// The at::Tensor fronts are joints_mse_cuda and joints_mse_backward_cuda in fronts.cpp.
#include "../joints_mse.h"
#include "launch.h"

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

cudaError_t launch_joints_mse(const float* pred, const float* joints, const float* visible, const float* scale,
                              const float* window, float* loss, float* weight, int64_t n, int64_t S, int64_t H,
                              int64_t W, double sx, double sy, double sigma, Encoding enc, bool use_target_weight,
                              cudaStream_t stream) {
  joints_mse_kernel<<<n, kLossThreads, 0, stream>>>(pred, joints, visible, scale, window, loss, weight, S, H, W, sx,
                                                    sy, sigma, static_cast<int>(enc), use_target_weight);
  return cudaGetLastError();
}

cudaError_t launch_joints_mse_backward(const float* grad, const float* pred, const float* joints,
                                       const float* visible, const float* weight, const float* window, float* out,
                                       int64_t n, int64_t S, int64_t H, int64_t W, double sx, double sy,
                                       double sigma, Encoding enc, cudaStream_t stream) {
  joints_mse_backward_kernel<<<n, kLossThreads, 0, stream>>>(grad, pred, joints, visible, weight, window, out, S, H,
                                                             W, sx, sy, sigma, static_cast<int>(enc));
  return cudaGetLastError();
}

}  // namespace hrfast
