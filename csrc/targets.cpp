// Gaussian heatmap targets on the CPU, parallel over (B*K) joints.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common.h"

namespace hrfast {

std::tuple<at::Tensor, at::Tensor> gaussian_targets_cpu(const at::Tensor& joints_in,
                                                        const at::Tensor& visible_in,
                                                        at::IntArrayRef image_size,
                                                        at::IntArrayRef heatmap_size, double sigma,
                                                        c10::string_view encoding,
                                                        const at::Tensor& window_in) {
  const Encoding enc = parse_encoding(std::string(encoding));
  check_targets_args(joints_in, visible_in, image_size, heatmap_size, sigma, window_in, enc);
  const at::Tensor window = enc == Encoding::MSRA ? window_in.contiguous() : window_in;
  const int64_t S = enc == Encoding::MSRA ? window.size(0) : 0;
  const at::Tensor joints = joints_in.contiguous();
  const at::Tensor visible = visible_in.contiguous();
  const int64_t B = joints.size(0), K = joints.size(1);
  const int64_t W = heatmap_size[0], H = heatmap_size[1];
  double sx, sy;
  target_strides(image_size, W, H, enc, &sx, &sy);
  at::Tensor targets = at::zeros({B, K, H, W}, joints.options());
  at::Tensor weight = at::empty({B, K}, joints.options());
  const float* jp = joints.data_ptr<float>();
  const float* vp = visible.data_ptr<float>();
  float* tp = targets.data_ptr<float>();
  float* wp = weight.data_ptr<float>();
  const float* win = S ? window.data_ptr<float>() : nullptr;
  at::parallel_for(0, B * K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const float v = vp[n];
      const TargetWindow t = target_window(jp[2 * n], jp[2 * n + 1], sx, sy, sigma, W, H, enc);
      wp[n] = t.outside ? 0.f : v;
      if (t.outside || !(v > 0.5f)) continue;
      float* map = tp + n * H * W;
      if (enc == Encoding::MSRA) {
        const int64_t x0 = std::max<int64_t>(t.ul_x, 0), x1 = std::min<int64_t>(t.br_x, W);
        const int64_t y0 = std::max<int64_t>(t.ul_y, 0), y1 = std::min<int64_t>(t.br_y, H);
        for (int64_t y = y0; y < y1; ++y)
          for (int64_t x = x0; x < x1; ++x) map[y * W + x] = msra_value(t, x, y, win, S);
      } else {
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x) map[y * W + x] = udp_value(t, x, y, sigma);
      }
    }
  });
  return {targets, weight};
}

}  // namespace hrfast

TORCH_LIBRARY_IMPL(hrfast, CPU, m) {
  m.impl("gaussian_targets", &hrfast::gaussian_targets_cpu);
}
