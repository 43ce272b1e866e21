// The heatmap MSE loss from the joints on the CPU (see joints_mse.h), parallel over (B*K)
// heatmaps. The forward reads each prediction once and writes no map: sum(pred^2) over the
// map, corrected inside the Gaussian's window (msra) or summed against it everywhere (udp).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "joints_mse_args.h"

namespace hrfast {

namespace {

// sum of squares in four double chains (accurate, and independent enough to pipeline)
double sum_squares(const float* p, int64_t n) {
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += double(p[i]) * p[i];
    a1 += double(p[i + 1]) * p[i + 1];
    a2 += double(p[i + 2]) * p[i + 2];
    a3 += double(p[i + 3]) * p[i + 3];
  }
  for (; i < n; ++i) a0 += double(p[i]) * p[i];
  return (a0 + a1) + (a2 + a3);
}

// sum over the map of (p - target)^2 for a pasted joint
double sum_error(const float* map, const LossJoint& j, int64_t W, int64_t H, const float* win, int64_t S,
                 double sigma, Encoding enc) {
  if (enc == Encoding::UDP) {
    double acc = 0;
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const double d = double(map[y * W + x]) - loss_target(j, x, y, win, S, sigma, enc);
        acc += d * d;
      }
    return acc;
  }
  double acc = sum_squares(map, H * W);
  const int64_t x0 = std::max<int64_t>(j.t.ul_x, 0), x1 = std::min<int64_t>(j.t.br_x, W);
  const int64_t y0 = std::max<int64_t>(j.t.ul_y, 0), y1 = std::min<int64_t>(j.t.br_y, H);
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x) {
      const double p = map[y * W + x], d = p - loss_target(j, x, y, win, S, sigma, enc);
      acc += d * d - p * p;
    }
  return acc;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> joints_mse_cpu(const at::Tensor& pred, const at::Tensor& joints,
                                                  const at::Tensor& visible, const at::Tensor& scale,
                                                  at::IntArrayRef image_size, double sigma,
                                                  c10::string_view encoding, const at::Tensor& window,
                                                  bool use_target_weight) {
  const LossArgs g = loss_args(pred, joints, visible, scale, image_size, sigma, encoding, window);
  at::Tensor loss = at::empty({g.B, g.K}, g.pred.options());
  at::Tensor weight = at::empty({g.B, g.K}, g.pred.options());
  const float *pp = g.pred.data_ptr<float>(), *jp = g.joints.data_ptr<float>();
  const float *vp = g.visible.data_ptr<float>(), *cp = g.scale.data_ptr<float>();
  const float* win = g.S ? g.window.data_ptr<float>() : nullptr;
  float *lp = loss.data_ptr<float>(), *wp = weight.data_ptr<float>();
  at::parallel_for(0, g.B * g.K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const LossJoint j = loss_joint(jp, vp, cp[n], n, g.sx, g.sy, sigma, g.W, g.H, g.enc);
      const double w = use_target_weight ? j.weight : 1.0;
      wp[n] = static_cast<float>(w);
      if (w == 0.0) {            // a zero weight zeroes both maps: nothing to read
        lp[n] = 0.f;
        continue;
      }
      const float* map = pp + n * g.H * g.W;
      const double err = j.paste ? sum_error(map, j, g.W, g.H, win, g.S, sigma, g.enc) : sum_squares(map, g.H * g.W);
      lp[n] = static_cast<float>(0.5 * w * w * err / double(g.H * g.W));
    }
  });
  return {loss, weight};
}

at::Tensor joints_mse_backward_cpu(const at::Tensor& grad_in, const at::Tensor& pred, const at::Tensor& joints,
                                   const at::Tensor& visible, const at::Tensor& weight, at::IntArrayRef image_size,
                                   double sigma, c10::string_view encoding, const at::Tensor& window) {
  const LossArgs g = loss_args(pred, joints, visible, weight, image_size, sigma, encoding, window);
  TORCH_CHECK(grad_in.sizes() == weight.sizes(), "joints_mse_backward: grad must be (B, K)");
  const at::Tensor grad = grad_in.contiguous();
  at::Tensor out = at::empty_like(g.pred);
  const float *pp = g.pred.data_ptr<float>(), *jp = g.joints.data_ptr<float>(), *gp = grad.data_ptr<float>();
  const float *vp = g.visible.data_ptr<float>(), *wp = g.scale.data_ptr<float>();
  const float* win = g.S ? g.window.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const bool udp = g.enc == Encoding::UDP;
  at::parallel_for(0, g.B * g.K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      // d/dp of 0.5 w^2 mean (p - t)^2 = w^2 (p - t) / (H W)
      const float c = static_cast<float>(double(gp[n]) * wp[n] * wp[n] / double(g.H * g.W));
      const float* map = pp + n * g.H * g.W;
      float* o = op + n * g.H * g.W;
      for (int64_t i = 0; i < g.H * g.W; ++i) o[i] = c * map[i];
      const LossJoint j = loss_joint(jp, vp, 1.f, n, g.sx, g.sy, sigma, g.W, g.H, g.enc);
      if (!j.paste || c == 0.f) continue;
      const int64_t x0 = udp ? 0 : std::max<int64_t>(j.t.ul_x, 0), x1 = udp ? g.W : std::min<int64_t>(j.t.br_x, g.W);
      const int64_t y0 = udp ? 0 : std::max<int64_t>(j.t.ul_y, 0), y1 = udp ? g.H : std::min<int64_t>(j.t.br_y, g.H);
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = x0; x < x1; ++x)
          o[y * g.W + x] = c * (map[y * g.W + x] - loss_target(j, x, y, win, g.S, sigma, g.enc));
    }
  });
  return out;
}

}  // namespace hrfast

TORCH_LIBRARY_IMPL(hrfast, CPU, m) {
  m.impl("joints_mse", &hrfast::joints_mse_cpu);
  m.impl("joints_mse_backward", &hrfast::joints_mse_backward_cpu);
}
