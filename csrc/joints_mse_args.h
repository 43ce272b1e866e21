// The arguments of the joints_mse fronts (CPU and CUDA): checked, made contiguous, and the
// geometry both kernels take.
#pragma once
#include <string>
#include <vector>

#include "common.h"
#include "joints_mse.h"

namespace hrfast {

inline void check_loss_args(const at::Tensor& pred, const at::Tensor& joints, const at::Tensor& visible,
                            const at::Tensor& scale, at::IntArrayRef image_size, double sigma,
                            const at::Tensor& window, Encoding enc) {
  TORCH_CHECK(pred.dim() == 4 && pred.scalar_type() == at::kFloat,
              "joints_mse: pred must be (B, K, H, W) float32, got ", pred.sizes(), " ", pred.scalar_type());
  TORCH_CHECK(joints.dim() == 3 && joints.size(0) == pred.size(0) && joints.size(1) == pred.size(1),
              "joints_mse: joints must be (B, K, 2) = (", pred.size(0), ", ", pred.size(1), ", 2), got ",
              joints.sizes());
  TORCH_CHECK(scale.sizes() == visible.sizes() && scale.scalar_type() == at::kFloat &&
                  scale.device() == pred.device(),
              "joints_mse: scale must be (B, K) float32 like visible, got ", scale.sizes());
  TORCH_CHECK(joints.device() == pred.device(), "joints_mse: joints must be on ", pred.device());
  const std::vector<int64_t> heatmap_size = {pred.size(3), pred.size(2)};
  check_targets_args(joints, visible, image_size, heatmap_size, sigma, window, enc);
}

// The checked, contiguous arguments of either kernel and the geometry they share. ``scale`` is
// the forward's per-joint scale, or the backward's saved weight.
struct LossArgs {
  at::Tensor pred, joints, visible, scale, window;
  int64_t B, K, H, W, S;
  double sx, sy;
  Encoding enc;
};

inline LossArgs loss_args(const at::Tensor& pred, const at::Tensor& joints, const at::Tensor& visible,
                          const at::Tensor& scale, at::IntArrayRef image_size, double sigma,
                          c10::string_view encoding, const at::Tensor& window) {
  const Encoding enc = parse_encoding(std::string(encoding));
  check_loss_args(pred, joints, visible, scale, image_size, sigma, window, enc);
  LossArgs a{pred.contiguous(), joints.contiguous(), visible.contiguous(), scale.contiguous(),
             enc == Encoding::MSRA ? window.contiguous() : window,
             pred.size(0), pred.size(1), pred.size(2), pred.size(3), 0, 0.0, 0.0, enc};
  a.S = enc == Encoding::MSRA ? a.window.size(0) : 0;
  target_strides(image_size, a.W, a.H, enc, &a.sx, &a.sy);
  return a;
}

}  // namespace hrfast
