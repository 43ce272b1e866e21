// Per-heatmap decoding rules shared by the CPU and CUDA kernels.
//
// quarter: official HRNet get_max_preds + post-process: first argmax (NaN counts as the maximum,
//   as numpy's argmax), coords zeroed when the max is not > 0, then +-0.25 px toward the higher
//   neighbour when 1 < x < W-1 and 1 < y < H-1 (a NaN difference does not move the point).
// dark: Zhang et al. 2020: log of the Gaussian-blurred map (zero padding, blur rescaled to the
//   original maximum, clamped at 1e-10); at the integer argmax, when 1 < x < W-2 and
//   1 < y < H-2, one Newton step -H^-1 grad with half central differences and second
//   derivatives over two-pixel spacing divided by 4, when det H != 0.
// udp: Huang et al. 2020 (mmpose refine_keypoints_dark_udp): the same blur, clamped to
//   [1e-3, 50], log, edge-padded one-pixel differences, Newton step with (H + eps I)^-1,
//   eps = float32 epsilon; applies at every pixel including borders.
#pragma once
#include <cmath>
#include <cstdint>

#include "rules.h"

namespace hrfast {

// OpenCV's default sigma for a ksize Gaussian: 0.3 * ((k - 1) / 2 - 1) + 0.8.
HRFAST_HD void blur_weights(int k, double* w) {
  const double sigma = 0.3 * ((k - 1) * 0.5 - 1.0) + 0.8;
  const int r = k / 2;
  double s = 0.0;
  for (int i = 0; i < k; ++i) {
    const double d = i - r;
    w[i] = std::exp(-d * d / (2.0 * sigma * sigma));
    s += w[i];
  }
  for (int i = 0; i < k; ++i) w[i] /= s;
}

// Blurred value at (y, x) with zero padding; (y, x) may lie outside the map (edge padding of
// the blurred map is the caller's job).
HRFAST_HD double blur_at(const float* hm, int64_t H, int64_t W, int64_t y, int64_t x,
                         const double* w, int k) {
  const int r = k / 2;
  double acc = 0.0;
  for (int i = 0; i < k; ++i) {
    const int64_t yy = y + i - r;
    if (yy < 0 || yy >= H) continue;
    double row = 0.0;
    for (int j = 0; j < k; ++j) {
      const int64_t xx = x + j - r;
      if (xx < 0 || xx >= W) continue;
      row += w[j] * static_cast<double>(hm[yy * W + xx]);
    }
    acc += w[i] * row;
  }
  return acc;
}

HRFAST_HD bool is_nan(float v) { return v != v; }

// Refinement of an integer argmax (px, py) given the modulated (log) map through ``L(y, x)``.
// Writes the sub-pixel offset.
template <class LogMap>
HRFAST_HD void dark_step(const LogMap& L, int64_t px, int64_t py, double* ox, double* oy) {
  const double c = L(py, px);
  const double dx = 0.5 * (L(py, px + 1) - L(py, px - 1));
  const double dy = 0.5 * (L(py + 1, px) - L(py - 1, px));
  const double dxx = 0.25 * (L(py, px + 2) - 2 * c + L(py, px - 2));
  const double dxy = 0.25 * (L(py + 1, px + 1) - L(py - 1, px + 1) - L(py + 1, px - 1) + L(py - 1, px - 1));
  const double dyy = 0.25 * (L(py + 2, px) - 2 * c + L(py - 2, px));
  const double det = dxx * dyy - dxy * dxy;
  *ox = *oy = 0.0;
  if (det != 0.0 && std::isfinite(det)) {
    *ox = -(dyy * dx - dxy * dy) / det;
    *oy = -(-dxy * dx + dxx * dy) / det;
  }
}

template <class LogMap>
HRFAST_HD void udp_step(const LogMap& L, int64_t px, int64_t py, double* ox, double* oy) {
  const double i_ = L(py, px), ix1 = L(py, px + 1), ix1_ = L(py, px - 1);
  const double iy1 = L(py + 1, px), iy1_ = L(py - 1, px);
  const double ix1y1 = L(py + 1, px + 1), ix1_y1_ = L(py - 1, px - 1);
  const double dx = 0.5 * (ix1 - ix1_), dy = 0.5 * (iy1 - iy1_);
  const double eps = 1.1920928955078125e-07;  // np.finfo(np.float32).eps
  const double dxx = ix1 - 2 * i_ + ix1_ + eps;
  const double dyy = iy1 - 2 * i_ + iy1_ + eps;
  const double dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_);
  const double det = dxx * dyy - dxy * dxy;
  *ox = *oy = 0.0;
  if (det != 0.0 && std::isfinite(det)) {
    *ox = -(dyy * dx - dxy * dy) / det;
    *oy = -(-dxy * dx + dxx * dy) / det;
  }
}

// Modulated map for dark/udp at any pixel: blurred * scale, clamped, log. udp clamps indices
// to the map (edge padding of the blurred map).
struct LogBlurMap {
  const float* hm;
  int64_t H, W;
  const double* w;
  int k;
  double scale, lo, hi;
  bool edge;
  HRFAST_HD double operator()(int64_t y, int64_t x) const {
    if (edge) {
      y = y < 0 ? 0 : (y >= H ? H - 1 : y);
      x = x < 0 ? 0 : (x >= W ? W - 1 : x);
    }
    double v = blur_at(hm, H, W, y, x, w, k) * scale;
    v = v < lo ? lo : (v > hi ? hi : v);
    return std::log(v);
  }
};

// The points a refinement step reads, relative to the argmax: enough to bound the clamp.
HRFAST_HD bool refine_applies(Decode m, int64_t px, int64_t py, int64_t W, int64_t H) {
  if (m == Decode::DARK) return 1 < px && px < W - 2 && 1 < py && py < H - 2;
  return true;  // udp: edge padding makes every pixel refinable
}

// Official post-process: +-0.25 px toward the higher neighbour of the integer argmax, when it is
// strictly inside (1 < x < W-1, 1 < y < H-1). A NaN difference does not move the point.
HRFAST_HD void quarter_offset(const float* map, int64_t px, int64_t py, int64_t W, int64_t H,
                              double* x, double* y) {
  if (!(1 < px && px < W - 1 && 1 < py && py < H - 1)) return;
  const float ddx = map[py * W + px + 1] - map[py * W + px - 1];
  const float ddy = map[(py + 1) * W + px] - map[(py - 1) * W + px];
  *x += ddx > 0 ? 0.25 : (ddx < 0 ? -0.25 : 0.0);
  *y += ddy > 0 ? 0.25 : (ddy < 0 ? -0.25 : 0.0);
}

// Whether the refinement at (px, py) needs the blurred maximum of the whole map.
// The rescale to the original maximum adds log(scale) to every value, which cancels in the
// differences, unless a read value is clamped. Blurring never exceeds a positive maximum, so
// scale >= 1: when every value the step reads (the 5x5 diamond, clamped to the map for udp) is
// above the lower clamp and (udp) the peak times the largest possible scale stays below the
// upper clamp, the whole-map blur is not needed. ``L.scale`` is not read.
HRFAST_HD bool needs_full_blur(const LogBlurMap& L, int64_t px, int64_t py, float val) {
  double lo_read = INFINITY, hi_read = -INFINITY;
  for (int dy = -2; dy <= 2; ++dy)
    for (int dx = -2; dx <= 2; ++dx) {
      if ((dx < 0 ? -dx : dx) + (dy < 0 ? -dy : dy) > 2) continue;
      int64_t yy = py + dy, xx = px + dx;
      if (L.edge) {
        yy = yy < 0 ? 0 : (yy >= L.H ? L.H - 1 : yy);
        xx = xx < 0 ? 0 : (xx >= L.W ? L.W - 1 : xx);
      }
      const double b = blur_at(L.hm, L.H, L.W, yy, xx, L.w, L.k);
      lo_read = b < lo_read ? b : lo_read;
      hi_read = b > hi_read ? b : hi_read;
    }
  const double max_scale = hi_read > 0 ? static_cast<double>(val) / hi_read : INFINITY;
  return !(lo_read >= L.lo) || (L.edge && !(hi_read * max_scale <= L.hi));
}

}  // namespace hrfast
