// The CUDA kernels' launchers: plain pointers and a stream in, the launch's error out. The
// at::Tensor fronts (checks, allocation, device guard, registration) are in fronts.cpp, which
// the host compiler builds against torch; the .cu files see only this header, rules.h and the
// CUDA runtime, so nvcc never parses torch's headers (a few seconds a file instead of ~25).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "../rules.h"

namespace hrfast {

// gaussian_targets: ``n`` = B*K heatmaps of H x W; joints (n, 2), visible (n), window (S, S)
// (msra; null for udp); writes targets (n, H, W) and weight (n).
cudaError_t launch_gaussian_targets(const float* joints, const float* visible, float* targets, float* weight,
                                    const float* window, int64_t n, int64_t S, int64_t H, int64_t W, double sx,
                                    double sy, double sigma, Encoding enc, cudaStream_t stream);

// decode_heatmaps: ``n`` = B*K heatmaps of H x W; writes coords (n, 2) and maxvals (n).
cudaError_t launch_decode(const float* heatmaps, float* coords, float* maxvals, int64_t n, int64_t H, int64_t W,
                          Decode method, int blur_kernel, cudaStream_t stream);

// joints_mse: ``n`` = B*K maps of pred (n, H, W); scale (n) per joint; writes loss and weight (n).
cudaError_t launch_joints_mse(const float* pred, const float* joints, const float* visible, const float* scale,
                              const float* window, float* loss, float* weight, int64_t n, int64_t S, int64_t H,
                              int64_t W, double sx, double sy, double sigma, Encoding enc, bool use_target_weight,
                              cudaStream_t stream);

// joints_mse_backward: grad (n), the forward's weight (n); writes out (n, H, W).
cudaError_t launch_joints_mse_backward(const float* grad, const float* pred, const float* joints,
                                       const float* visible, const float* weight, const float* window, float* out,
                                       int64_t n, int64_t S, int64_t H, int64_t W, double sx, double sy,
                                       double sigma, Encoding enc, cudaStream_t stream);

}  // namespace hrfast
