// Shared argument checks of the CPU and CUDA fronts (at::Tensor in, one TORCH_CHECK line per
// wrong argument), over the rules of rules.h.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <string>

#include "rules.h"

namespace hrfast {

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

// The heatmap strides of a target: input-image pixels per heatmap pixel (msra: image / heatmap;
// udp: (image - 1) / (heatmap - 1)), for a (W, H) heatmap.
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

// decode_heatmaps' arguments, checked; the method they name.
inline Decode check_decode_args(const at::Tensor& heatmaps, const std::string& method_s, int64_t blur_kernel) {
  TORCH_CHECK(heatmaps.dim() == 4, "decode_heatmaps: heatmaps must be (B, K, H, W), got ",
              heatmaps.sizes());
  TORCH_CHECK(heatmaps.scalar_type() == at::kFloat, "decode_heatmaps: heatmaps must be float32, got ",
              heatmaps.scalar_type());
  const Decode method = parse_decode(method_s);
  TORCH_CHECK(method == Decode::QUARTER || (blur_kernel % 2 == 1 && blur_kernel >= 1 && blur_kernel <= kMaxBlurKernel),
              "decode_heatmaps: blur_kernel must be odd and in [1, ", kMaxBlurKernel, "], got ", blur_kernel);
  TORCH_CHECK(heatmaps.size(2) > 0 && heatmaps.size(3) > 0, "decode_heatmaps: heatmaps must have H, W > 0, got ",
              heatmaps.sizes());
  return method;
}

}  // namespace hrfast
