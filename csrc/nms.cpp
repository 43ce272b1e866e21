// Greedy OKS non-maximum suppression (the COCO keypoint evaluation's oks_nms), on the CPU.
// Per image the lists are short (tens of people) and the loop is sequential, so there is no
// CUDA kernel: CUDA inputs are served through the CPU (see the Python front).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace hrfast {

at::Tensor oks_nms_cpu(const at::Tensor& keypoints_in, const at::Tensor& scores_in,
                       const at::Tensor& areas_in, double threshold, const at::Tensor& sigmas_in,
                       double vis_threshold) {
  TORCH_CHECK(keypoints_in.dim() == 3 && keypoints_in.size(2) == 3,
              "oks_nms: keypoints must be (N, K, 3), got ", keypoints_in.sizes());
  const int64_t N = keypoints_in.size(0), K = keypoints_in.size(1);
  TORCH_CHECK(scores_in.dim() == 1 && scores_in.size(0) == N, "oks_nms: scores must be (N,) = (", N,
              ",), got ", scores_in.sizes());
  TORCH_CHECK(areas_in.dim() == 1 && areas_in.size(0) == N, "oks_nms: areas must be (N,) = (", N,
              ",), got ", areas_in.sizes());
  TORCH_CHECK(sigmas_in.dim() == 1 && sigmas_in.size(0) == K, "oks_nms: sigmas must be (K,) = (", K,
              ",), got ", sigmas_in.sizes());
  const at::Tensor kp = keypoints_in.to(at::kDouble).contiguous();
  const at::Tensor sc = scores_in.to(at::kDouble).contiguous();
  const at::Tensor ar = areas_in.to(at::kDouble).contiguous();
  const at::Tensor sg = sigmas_in.to(at::kDouble).contiguous();
  const double* k = kp.data_ptr<double>();
  const double* s = sc.data_ptr<double>();
  const double* a = ar.data_ptr<double>();
  std::vector<double> vars(K);
  for (int64_t j = 0; j < K; ++j) vars[j] = std::pow(sg.data_ptr<double>()[j] * 2.0, 2);

  // Highest score first; equal scores: the later index first (a stable ascending sort reversed).
  // A NaN score sorts as -inf, so it comes last (and the comparison stays a strict weak order).
  std::vector<int64_t> order(N);
  std::iota(order.begin(), order.end(), 0);
  auto key = [&](int64_t i) { return std::isnan(s[i]) ? -INFINITY : s[i]; };
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return key(i) < key(j); });
  std::reverse(order.begin(), order.end());

  const double spacing = std::nextafter(1.0, 2.0) - 1.0;  // np.spacing(1)
  std::vector<char> removed(N, 0);
  std::vector<int64_t> keep;
  for (int64_t oi = 0; oi < N; ++oi) {
    const int64_t i = order[oi];
    if (removed[i]) continue;
    keep.push_back(i);
    const double* g = k + i * K * 3;
    for (int64_t oj = oi + 1; oj < N; ++oj) {
      const int64_t j = order[oj];
      if (removed[j]) continue;
      const double* d = k + j * K * 3;
      double sum = 0.0;
      int64_t count = 0;
      for (int64_t q = 0; q < K; ++q) {
        if (vis_threshold >= 0 && !(d[3 * q + 2] > vis_threshold)) continue;
        const double dx = d[3 * q] - g[3 * q], dy = d[3 * q + 1] - g[3 * q + 1];
        const double e = (dx * dx + dy * dy) / vars[q] / ((a[i] + a[j]) / 2.0 + spacing) / 2.0;
        sum += std::exp(-e);
        ++count;
      }
      const double oks = count ? sum / count : 0.0;
      if (oks > threshold) removed[j] = 1;
    }
  }
  at::Tensor out = at::empty({static_cast<int64_t>(keep.size())}, at::kLong);
  std::copy(keep.begin(), keep.end(), out.data_ptr<int64_t>());
  return out;
}

}  // namespace hrfast

TORCH_LIBRARY_IMPL(hrfast, CPU, m) {
  m.impl("oks_nms", &hrfast::oks_nms_cpu);
}
