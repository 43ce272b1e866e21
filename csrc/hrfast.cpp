// The hrfast operator library: every schema lives here; CPU kernels register in their own
// files (csrc/<op>.cpp), CUDA kernels through csrc/cuda/fronts.cpp (kernels in csrc/cuda/<op>.cu).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace hrfast {

bool cuda_built() {
#ifdef HRFAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// How many threads at::parallel_for gives this library's CPU kernels: ATen's parallel_for is
// inlined into the extension, so a build without -fopenmp runs it on one thread whatever
// torch.get_num_threads() says.
bool conv3x3_wgrad_native();   // csrc/conv3x3.cpp

int64_t parallel_threads() {
  std::vector<char> seen(std::max(1, at::get_num_threads()), 0);
  at::parallel_for(0, 1024, 1, [&](int64_t, int64_t) {
    size_t t = static_cast<size_t>(at::get_thread_num());
    if (t < seen.size()) seen[t] = 1;
  });
  return static_cast<int64_t>(std::count(seen.begin(), seen.end(), 1));
}

}  // namespace hrfast

TORCH_LIBRARY(hrfast, m) {
  m.def("cuda_built() -> bool", &hrfast::cuda_built);
  m.def("parallel_threads() -> int", &hrfast::parallel_threads);
  // joints (B, K, 2) float32 in input-image pixels, visible (B, K) float32;
  // image_size / heatmap_size are (width, height). encoding: "msra" or "udp".
  // window: the (S, S) float32 msra Gaussian (S = len(arange(0, 6 sigma + 1))), made once per
  // sigma by the Python front with the official numpy float32 arithmetic so pasted values are
  // bit-identical to it; ignored for udp (pass an empty tensor).
  // Returns targets (B, K, H, W) float32 and target_weight (B, K) float32.
  m.def("gaussian_targets(Tensor joints, Tensor visible, int[] image_size, int[] heatmap_size, "
        "float sigma, str encoding, Tensor window) -> (Tensor, Tensor)");
  // The heatmap MSE loss straight from the joints (the targets are never stored): pred
  // (B, K, H, W) float32, joints / visible as gaussian_targets (heatmap_size is pred's), scale
  // (B, K) float32 multiplies the target weight (joint weights; ones for none). Returns the
  // per-joint loss (B, K) = 0.5 w^2 mean_pixels (pred - target)^2, and w (B, K): the target
  // weight when use_target_weight, else 1. The backward takes that w.
  m.def("joints_mse(Tensor pred, Tensor joints, Tensor visible, Tensor scale, int[] image_size, float sigma, "
        "str encoding, Tensor window, bool use_target_weight) -> (Tensor, Tensor)");
  m.def("joints_mse_backward(Tensor grad, Tensor pred, Tensor joints, Tensor visible, Tensor weight, "
        "int[] image_size, float sigma, str encoding, Tensor window) -> Tensor");
  // Train-mode BatchNorm + residual + ReLU (CPU; csrc/bn_act.cpp). x, residual, y, grad:
  // channels_last (N, C, H, W) float32 or bfloat16, all alike; the per-channel tensors are
  // float32 (C,). batch_stats returns x's mean and biased variance and updates the running
  // statistics as nn.BatchNorm2d does (momentum None: the cumulative average).
  // bn_act_backward takes mean / var that are x's batch statistics, and y (bn_act's output)
  // when relu and residual (else None: the mask is rebuilt from x); it returns (dx, dweight,
  // dbias, dresidual); dresidual is written only when relu and residual, else it is empty.
  m.def("batch_stats(Tensor x, Tensor(a!) running_mean, Tensor(b!) running_var, Tensor(c!) num_batches_tracked, "
        "float? momentum) -> (Tensor, Tensor)");
  m.def("bn_act(Tensor x, Tensor? residual, Tensor weight, Tensor bias, Tensor mean, Tensor var, float eps, "
        "bool relu) -> Tensor");
  m.def("bn_act_backward(Tensor grad, Tensor x, Tensor? y, Tensor weight, Tensor bias, Tensor mean, Tensor var, "
        "float eps, bool relu, bool residual) -> (Tensor, Tensor, Tensor, Tensor)");
  // A 3x3 convolution, stride 1, padding 1, no bias or groups (CPU; csrc/conv3x3.cpp): x
  // (N, C, H, W), weight (O, C, 3, 3), ATen's forward. Its backward takes the weight gradient
  // from conv3x3_wgrad where that runs natively (bfloat16, a CPU with AVX512-BF16): grad
  // (N, O, H, W) and x bfloat16, returns (O, C, 3, 3) bfloat16 channels_last.
  m.def("conv3x3(Tensor x, Tensor weight) -> Tensor");
  m.def("conv3x3_wgrad(Tensor grad, Tensor x) -> Tensor");
  m.def("conv3x3_wgrad_native() -> bool", &hrfast::conv3x3_wgrad_native);
  // heatmaps (B, K, H, W) float32. method: "quarter", "dark" or "udp".
  // Returns coords (B, K, 2) float32 in heatmap pixels and maxvals (B, K) float32.
  m.def("decode_heatmaps(Tensor heatmaps, str method, int blur_kernel) -> (Tensor, Tensor)");
  // keypoints (N, K, 3) float32 [x, y, score], scores (N,), areas (N,), sigmas (K,).
  // Greedy OKS NMS; returns kept indices (int64), highest score first.
  m.def("oks_nms(Tensor keypoints, Tensor scores, Tensor areas, float threshold, Tensor sigmas, "
        "float vis_threshold) -> Tensor");
}

// Python loads the library through this module ("import hrfast._C").
extern "C" {
#include <Python.h>
static struct PyModuleDef hrfast_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&hrfast_module); }
}
