// Shared argument checks and the Gaussian-target rules used by the CPU and CUDA kernels.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <cmath>
#include <cstdint>
#include <string>

#ifdef __CUDACC__
#define HRFAST_HD __host__ __device__ __forceinline__
#else
#define HRFAST_HD inline
#endif

namespace hrfast {

enum class Encoding : int { MSRA = 0, UDP = 1 };
enum class Decode : int { QUARTER = 0, DARK = 1, UDP = 2 };

inline Encoding parse_encoding(const std::string& s) {
  if (s == "msra") return Encoding::MSRA;
  if (s == "udp") return Encoding::UDP;
  TORCH_CHECK(false, "gaussian_targets: encoding must be 'msra' or 'udp', got '", s, "'");
}

inline Decode parse_decode(const std::string& s) {
  if (s == "quarter") return Decode::QUARTER;
  if (s == "dark") return Decode::DARK;
  if (s == "udp") return Decode::UDP;
  TORCH_CHECK(false, "decode_heatmaps: method must be 'quarter', 'dark' or 'udp', got '", s, "'");
}

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

inline void check_targets_args(const at::Tensor& joints, const at::Tensor& visible,
                               at::IntArrayRef image_size, at::IntArrayRef heatmap_size,
                               double sigma, const at::Tensor& window, Encoding enc) {
  if (enc == Encoding::MSRA) {
    TORCH_CHECK(window.dim() == 2 && window.size(0) == window.size(1) && window.size(0) > 0 &&
                    window.scalar_type() == at::kFloat && window.device() == joints.device(),
                "gaussian_targets: window must be a square float32 (S, S) tensor on ",
                joints.device(), ", got ", window.sizes(), " ", window.scalar_type());
  }
  TORCH_CHECK(joints.dim() == 3 && joints.size(2) == 2,
              "gaussian_targets: joints must be (B, K, 2), got ", joints.sizes());
  TORCH_CHECK(joints.scalar_type() == at::kFloat, "gaussian_targets: joints must be float32, got ",
              joints.scalar_type());
  TORCH_CHECK(visible.dim() == 2 && visible.size(0) == joints.size(0) && visible.size(1) == joints.size(1),
              "gaussian_targets: visible must be (B, K) = (", joints.size(0), ", ", joints.size(1),
              "), got ", visible.sizes());
  TORCH_CHECK(visible.scalar_type() == at::kFloat, "gaussian_targets: visible must be float32, got ",
              visible.scalar_type());
  TORCH_CHECK(visible.device() == joints.device(), "gaussian_targets: visible must be on ",
              joints.device(), ", got ", visible.device());
  TORCH_CHECK(image_size.size() == 2 && heatmap_size.size() == 2,
              "gaussian_targets: image_size and heatmap_size must be (width, height)");
  TORCH_CHECK(image_size[0] > 1 && image_size[1] > 1 && heatmap_size[0] > 1 && heatmap_size[1] > 1,
              "gaussian_targets: sizes must be > 1, got image_size ", image_size, " heatmap_size ",
              heatmap_size);
  TORCH_CHECK(sigma > 0, "gaussian_targets: sigma must be > 0, got ", sigma);
}

inline void check_heatmaps(const at::Tensor& heatmaps) {
  TORCH_CHECK(heatmaps.dim() == 4, "decode_heatmaps: heatmaps must be (B, K, H, W), got ",
              heatmaps.sizes());
  TORCH_CHECK(heatmaps.scalar_type() == at::kFloat, "decode_heatmaps: heatmaps must be float32, got ",
              heatmaps.scalar_type());
}

}  // namespace hrfast
