// The heatmap MSE loss straight from the joints: what both kernels of joints_mse share.
//
// loss(b, k) = 0.5 * w^2 * mean over the (H, W) pixels of (pred - target)^2, where target is
// the joint's Gaussian (gaussian_targets' value at each pixel, never stored) and w the target
// weight (gaussian_targets' weight times a per-joint scale) when use_target_weight, else 1.
// This is the official JointsMSELoss per joint, (pred * w - target * w)^2 averaged.
#pragma once
#include <vector>

#include "common.h"

namespace hrfast {

struct LossJoint {
  TargetWindow t;
  bool paste;      // the joint has a Gaussian (visible and its window meets the map)
  float weight;    // the target weight gaussian_targets would return, times the scale
};

HRFAST_HD LossJoint loss_joint(const float* joints, const float* visible, float scale, int64_t n, double sx, double sy, double sigma, int64_t W, int64_t H,
                               Encoding enc) {
  LossJoint j;
  const float v = visible[n];
  j.t = target_window(joints[2 * n], joints[2 * n + 1], sx, sy, sigma, W, H, enc);
  j.paste = !j.t.outside && v > 0.5f;
  j.weight = (j.t.outside ? 0.f : v) * scale;
  return j;
}

// The target value at pixel (x, y) of a pasted joint.
HRFAST_HD float loss_target(const LossJoint& j, int64_t x, int64_t y, const float* window, int64_t S,
                            double sigma, Encoding enc) {
  return enc == Encoding::MSRA ? msra_value(j.t, x, y, window, S) : udp_value(j.t, x, y, sigma);
}

inline void target_strides(at::IntArrayRef image_size, int64_t W, int64_t H, Encoding enc, double* sx,
                           double* sy) {
  if (enc == Encoding::MSRA) {
    *sx = static_cast<double>(image_size[0]) / W;
    *sy = static_cast<double>(image_size[1]) / H;
  } else {
    *sx = (image_size[0] - 1.0) / (W - 1.0);
    *sy = (image_size[1] - 1.0) / (H - 1.0);
  }
}

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
