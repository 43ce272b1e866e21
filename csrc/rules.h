// The Gaussian-target rules and the enums that the CPU kernels (csrc/<op>.cpp) and the CUDA
// kernels (csrc/cuda/<op>.cu) share. No torch header: nvcc compiles the kernels against this
// and the CUDA runtime alone, which keeps each .cu file a few seconds to compile.
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define HRFAST_HD __host__ __device__ __forceinline__
#else
#define HRFAST_HD inline
#endif

namespace hrfast {

enum class Encoding : int { MSRA = 0, UDP = 1 };
enum class Decode : int { QUARTER = 0, DARK = 1, UDP = 2 };

constexpr int kMaxBlurKernel = 31;   // decode_heatmaps' largest (odd) blur kernel

// Python's int(): truncation toward zero.
HRFAST_HD int64_t py_int(double v) { return static_cast<int64_t>(v); }

// Geometry of one joint's target, shared by CPU and CUDA so both follow one rule.
struct TargetWindow {
  double mu_x, mu_y;      // centre in heatmap pixels (rounded for msra, exact for udp)
  int64_t ul_x, ul_y;     // window [ul, br) of side 6*sigma+1 around the rounded centre
  int64_t br_x, br_y;
  bool outside;           // the window misses the heatmap entirely -> weight 0
};

// The official rule (SimpleBaseline/HRNet JointsDataset.generate_target): centre
// int(x / stride + 0.5); window ul = int(mu - 3 sigma), br = int(mu + 3 sigma + 1).
// msra strides are image/heatmap; udp strides are (image-1)/(heatmap-1) (Huang et al. 2020).
HRFAST_HD TargetWindow target_window(double x, double y, double stride_x, double stride_y,
                                     double sigma, int64_t W, int64_t H, Encoding enc) {
  TargetWindow t;
  if (!(x - x == 0.0) || !(y - y == 0.0)) {   // NaN or inf: not a place; the joint gets weight 0
    t.mu_x = t.mu_y = 0.0;
    t.ul_x = t.ul_y = t.br_x = t.br_y = 0;
    t.outside = true;                         // (and no NaN reaches the integer casts below)
    return t;
  }
  const double tmp = sigma * 3.0;
  const int64_t cx = py_int(x / stride_x + 0.5), cy = py_int(y / stride_y + 0.5);
  t.ul_x = py_int(cx - tmp);
  t.ul_y = py_int(cy - tmp);
  t.br_x = py_int(cx + tmp + 1);
  t.br_y = py_int(cy + tmp + 1);
  t.outside = t.ul_x >= W || t.ul_y >= H || t.br_x < 0 || t.br_y < 0;
  if (enc == Encoding::MSRA) {
    t.mu_x = static_cast<double>(cx);
    t.mu_y = static_cast<double>(cy);
  } else {
    t.mu_x = x / stride_x;
    t.mu_y = y / stride_y;
  }
  return t;
}

// msra: the value at heatmap pixel (px, py) pasted from the (S, S) window, 0 outside it.
HRFAST_HD float msra_value(const TargetWindow& t, int64_t px, int64_t py, const float* window,
                           int64_t S) {
  const int64_t gx = px - t.ul_x, gy = py - t.ul_y;
  if (px >= t.br_x || py >= t.br_y || gx < 0 || gy < 0 || gx >= S || gy >= S) return 0.f;
  return window[gy * S + gx];
}

// udp: Gaussian at the exact sub-pixel centre, evaluated at every pixel (float64 math).
HRFAST_HD float udp_value(const TargetWindow& t, int64_t px, int64_t py, double sigma) {
  const double dx = px - t.mu_x, dy = py - t.mu_y;
  return static_cast<float>(std::exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma)));
}

}  // namespace hrfast
