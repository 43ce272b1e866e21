// The at::Tensor fronts of the CUDA kernels (csrc/cuda/<op>.cu) and their registration: the
// same checks as the CPU fronts, the device guard, the outputs, then the launcher of launch.h
// on the current stream. Built by the host compiler, with the CUDA extension only.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string>

#include "../common.h"
#include "../joints_mse_args.h"
#include "launch.h"

namespace hrfast {

std::tuple<at::Tensor, at::Tensor> gaussian_targets_cuda(const at::Tensor& joints_in, const at::Tensor& visible_in,
                                                         at::IntArrayRef image_size, at::IntArrayRef heatmap_size,
                                                         double sigma, c10::string_view encoding,
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
  double sx, sy;
  target_strides(image_size, W, H, enc, &sx, &sy);
  at::Tensor targets = at::empty({B, K, H, W}, joints.options());
  at::Tensor weight = at::empty({B, K}, joints.options());
  if (B * K == 0) return {targets, weight};
  C10_CUDA_CHECK(launch_gaussian_targets(joints.data_ptr<float>(), visible.data_ptr<float>(),
                                         targets.data_ptr<float>(), weight.data_ptr<float>(),
                                         S ? window.data_ptr<float>() : nullptr, B * K, S, H, W, sx, sy, sigma, enc,
                                         c10::cuda::getCurrentCUDAStream()));
  return {targets, weight};
}

std::tuple<at::Tensor, at::Tensor> decode_heatmaps_cuda(const at::Tensor& heatmaps_in, c10::string_view method_s,
                                                        int64_t blur_kernel) {
  const Decode method = check_decode_args(heatmaps_in, std::string(method_s), blur_kernel);
  const c10::cuda::CUDAGuard guard(heatmaps_in.device());
  const at::Tensor hm = heatmaps_in.contiguous();
  const int64_t B = hm.size(0), K = hm.size(1), H = hm.size(2), W = hm.size(3);
  at::Tensor coords = at::empty({B, K, 2}, hm.options());
  at::Tensor maxvals = at::empty({B, K}, hm.options());
  if (B * K == 0) return {coords, maxvals};
  C10_CUDA_CHECK(launch_decode(hm.data_ptr<float>(), coords.data_ptr<float>(), maxvals.data_ptr<float>(), B * K, H,
                               W, method, static_cast<int>(blur_kernel), c10::cuda::getCurrentCUDAStream()));
  return {coords, maxvals};
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
  C10_CUDA_CHECK(launch_joints_mse(g.pred.data_ptr<float>(), g.joints.data_ptr<float>(), g.visible.data_ptr<float>(),
                                   g.scale.data_ptr<float>(), g.S ? g.window.data_ptr<float>() : nullptr,
                                   loss.data_ptr<float>(), weight.data_ptr<float>(), g.B * g.K, g.S, g.H, g.W, g.sx,
                                   g.sy, sigma, g.enc, use_target_weight, c10::cuda::getCurrentCUDAStream()));
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
  C10_CUDA_CHECK(launch_joints_mse_backward(grad.data_ptr<float>(), g.pred.data_ptr<float>(),
                                            g.joints.data_ptr<float>(), g.visible.data_ptr<float>(),
                                            g.scale.data_ptr<float>(), g.S ? g.window.data_ptr<float>() : nullptr,
                                            out.data_ptr<float>(), g.B * g.K, g.S, g.H, g.W, g.sx, g.sy, sigma,
                                            g.enc, c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace hrfast

TORCH_LIBRARY_IMPL(hrfast, CUDA, m) {
  m.impl("gaussian_targets", &hrfast::gaussian_targets_cuda);
  m.impl("decode_heatmaps", &hrfast::decode_heatmaps_cuda);
  m.impl("joints_mse", &hrfast::joints_mse_cuda);
  m.impl("joints_mse_backward", &hrfast::joints_mse_backward_cuda);
}
