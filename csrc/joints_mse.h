// The heatmap MSE loss straight from the joints: what both kernels of joints_mse share
// (torch-free, as rules.h; the fronts' argument checks are in joints_mse_args.h).
//
// loss(b, k) = 0.5 * w^2 * mean over the (H, W) pixels of (pred - target)^2, where target is
// the joint's Gaussian (gaussian_targets' value at each pixel, never stored) and w the target
// weight (gaussian_targets' weight times a per-joint scale) when use_target_weight, else 1.
// This is the official JointsMSELoss per joint, (pred * w - target * w)^2 averaged.
#pragma once
#include "rules.h"

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

}  // namespace hrfast
