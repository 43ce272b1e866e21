// Train-mode BatchNorm, residual add and ReLU on the CPU, for channels_last activations
// (N, C, H, W) read as M = N*H*W rows of C channels (see hrfast/ops/bn_act.py).
//
// ATen runs them as four ops forward (batch_norm's statistics, its normalization, the add,
// the ReLU) and three backward, each a full pass over the tensor. Here the forward is two
// passes (statistics; normalize + add + ReLU in one write) and the backward two (the
// gradient's statistics; dx and the residual's gradient in one write).
//
// The loops are plain C++ that the compiler vectorizes. They run over flat spans of P = k*C
// values (k rows; P a multiple of 16 floats, one AVX-512 vector, and of 256 values where it can
// be), with the per-channel parameters expanded to period P, so that W18's 18, 36 or 72
// channels vectorize as well as W32's 32, and each inner loop is long. On x86 with GCC each
// loop is cloned for x86-64-v4 (AVX-512) and v3 (AVX2) and picked at load time: at the
// baseline's SSE2 the bf16 conversions and masked sums do not vectorize and the backward runs
// about 20x slower.
// Statistics are summed in fixed chunks of ROWS rows (float within a chunk, double across), in
// chunk order, so results do not depend on the thread count.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <tuple>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HRFAST_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HRFAST_CLONES
#endif
#define HRFAST_INLINE inline __attribute__((always_inline))

namespace hrfast {

namespace {

constexpr int64_t ROWS = 256;    // rows per chunk (a multiple of every k): float sums of <= 256 terms
constexpr int64_t MIN_WORK = 32768;  // values a thread gets at least: small maps stay on one thread

using bf16 = uint16_t;  // c10::BFloat16's bits; its own conversions do not vectorize

HRFAST_INLINE float load(float v) { return v; }
HRFAST_INLINE float load(bf16 v) {
  const uint32_t u = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <typename T> HRFAST_INLINE T store(float f);
template <> HRFAST_INLINE float store<float>(float f) { return f; }
// round to nearest even, NaN kept NaN (as c10::BFloat16)
template <> HRFAST_INLINE bf16 store<bf16>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return bf16((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : r);
}

// The loops below walk `rows` spans of C values each (a span: P values, or the last part of a
// chunk); their per-channel arrays are expanded to the span period.

// sum[c] += x - shift, sq[c] += (x - shift)^2
template <typename T>
HRFAST_INLINE void stats_rows(const T* x, int64_t rows, int64_t C, const float* shift, float* sum, float* sq) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = x + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float d = load(row[c]) - shift[c];
      sum[c] += d;
      sq[c] += d * d;
    }
  }
}

// y = [relu](x * scale + shift [+ res])
template <typename T>
HRFAST_INLINE void apply_rows(const T* x, const T* res, T* y, int64_t rows, int64_t C, const float* scale,
                              const float* shift, bool relu) {
  const float lo = relu ? 0.f : -INFINITY;
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    if (res) {
      const T* rr = res + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = store<T>(std::max(load(xr[c]) * scale[c] + shift[c] + load(rr[c]), lo));
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = store<T>(std::max(load(xr[c]) * scale[c] + shift[c], lo));
    }
  }
}

// Where the ReLU's mask comes from: no ReLU, y > 0, or (without a residual) x * scale + shift
// > 0, the forward's own arithmetic, which spares the backward two reads of y.
enum Mask : int { NONE = 0, FROM_Y = 1, FROM_X = 2 };

// The gradient through the ReLU at value c of a span. The branches on `mask` are
// loop-invariant: the compiler unswitches them out of the vector loops.
template <typename T>
HRFAST_INLINE float masked(const T* g, const T* y, const T* x, int64_t c, int mask, const float* ms, const float* mt) {
  const bool on = mask == NONE || (mask == FROM_Y ? load(y[c]) > 0.f : load(x[c]) * ms[c] + mt[c] > 0.f);
  return on ? load(g[c]) : 0.f;
}

// g = dy through the ReLU; gsum[c] += g, gxsum[c] += g * (x - mean)
template <typename T>
HRFAST_INLINE void grad_stats_rows(const T* dy, const T* y, const T* x, int64_t rows, int64_t C, const float* mean,
                                   int mask, const float* ms, const float* mt, float* gsum, float* gxsum) {
  for (int64_t r = 0; r < rows; ++r) {
    const T *g = dy + r * C, *yr = y + r * C, *xr = x + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float gm = masked(g, yr, xr, c, mask, ms, mt);
      gsum[c] += gm;
      gxsum[c] += gm * (load(xr[c]) - mean[c]);
    }
  }
}

// dx = a * g - o - (x - mean) * k, and dres = g when wanted (FROM_Y only)
template <typename T>
HRFAST_INLINE void grad_x_rows(const T* dy, const T* y, const T* x, T* dx, T* dres, int64_t rows, int64_t C,
                               const float* mean, const float* a, const float* o, const float* k, int mask,
                               const float* ms, const float* mt) {
  for (int64_t r = 0; r < rows; ++r) {
    const T *g = dy + r * C, *yr = y + r * C, *xr = x + r * C;
    T* d = dx + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float gm = masked(g, yr, xr, c, mask, ms, mt);
      d[c] = store<T>(a[c] * gm - o[c] - (load(xr[c]) - mean[c]) * k[c]);
    }
    if (dres) {
      T* dr = dres + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) dr[c] = load(yr[c]) > 0.f ? g[c] : T(0);
    }
  }
}

// One cloned entry point per loop and dtype (target_clones does not take templates).
#define HRFAST_ENTRIES(T, S)                                                                                     \
  HRFAST_CLONES void stats_##S(const T* x, int64_t rows, int64_t C, const float* shift, float* sum, float* sq) { \
    stats_rows(x, rows, C, shift, sum, sq);                                                                      \
  }                                                                                                              \
  HRFAST_CLONES void apply_##S(const T* x, const T* res, T* y, int64_t rows, int64_t C, const float* scale,      \
                               const float* shift, bool relu) {                                                  \
    apply_rows(x, res, y, rows, C, scale, shift, relu);                                                          \
  }                                                                                                              \
  HRFAST_CLONES void grad_stats_##S(const T* dy, const T* y, const T* x, int64_t rows, int64_t C,                \
                                    const float* mean, int mask, const float* ms, const float* mt, float* gsum,  \
                                    float* gxsum) {                                                              \
    grad_stats_rows(dy, y, x, rows, C, mean, mask, ms, mt, gsum, gxsum);                                         \
  }                                                                                                              \
  HRFAST_CLONES void grad_x_##S(const T* dy, const T* y, const T* x, T* dx, T* dres, int64_t rows, int64_t C,    \
                                const float* mean, const float* a, const float* o, const float* k, int mask,     \
                                const float* ms, const float* mt) {                                              \
    grad_x_rows(dy, y, x, dx, dres, rows, C, mean, a, o, k, mask, ms, mt);                                       \
  }
HRFAST_ENTRIES(float, f32)
HRFAST_ENTRIES(bf16, bf16)
#undef HRFAST_ENTRIES

void stats(const float* x, int64_t n, int64_t C, const float* s, float* a, float* b) { stats_f32(x, n, C, s, a, b); }
void stats(const bf16* x, int64_t n, int64_t C, const float* s, float* a, float* b) { stats_bf16(x, n, C, s, a, b); }
void apply(const float* x, const float* r, float* y, int64_t n, int64_t C, const float* sc, const float* sh, bool u) {
  apply_f32(x, r, y, n, C, sc, sh, u);
}
void apply(const bf16* x, const bf16* r, bf16* y, int64_t n, int64_t C, const float* sc, const float* sh, bool u) {
  apply_bf16(x, r, y, n, C, sc, sh, u);
}
void grad_stats(const float* g, const float* y, const float* x, int64_t n, int64_t C, const float* m, int mask,
                const float* ms, const float* mt, float* a, float* b) {
  grad_stats_f32(g, y, x, n, C, m, mask, ms, mt, a, b);
}
void grad_stats(const bf16* g, const bf16* y, const bf16* x, int64_t n, int64_t C, const float* m, int mask,
                const float* ms, const float* mt, float* a, float* b) {
  grad_stats_bf16(g, y, x, n, C, m, mask, ms, mt, a, b);
}
void grad_x(const float* g, const float* y, const float* x, float* d, float* dr, int64_t n, int64_t C,
            const float* m, const float* a, const float* o, const float* k, int mask, const float* ms,
            const float* mt) {
  grad_x_f32(g, y, x, d, dr, n, C, m, a, o, k, mask, ms, mt);
}
void grad_x(const bf16* g, const bf16* y, const bf16* x, bf16* d, bf16* dr, int64_t n, int64_t C, const float* m,
            const float* a, const float* o, const float* k, int mask, const float* ms, const float* mt) {
  grad_x_bf16(g, y, x, d, dr, n, C, m, a, o, k, mask, ms, mt);
}

// The span period of C channels: k*C values, k a power of two of at most 64 (so ROWS is a
// multiple of it) that makes the period a multiple of 16 floats and, where it can, at least 256
// values, so that each span is 16 vectors or more (looping over one row's channels, with 64-row
// chunks, a W18 backward call took 99 us; it takes 52: benchmarks/RESULTS.md).
int64_t period(int64_t C) {
  int64_t k = 16 / std::gcd<int64_t>(C, 16);
  while (k * C < 256 && k < 64) k *= 2;
  return k * C;
}

// A per-channel vector repeated to the span period.
std::vector<float> expand(const std::vector<float>& v, int64_t P) {
  std::vector<float> out(P);
  for (int64_t j = 0; j < P; ++j) out[j] = v[j % v.size()];
  return out;
}

// Rows [r0, r0 + rows) as the spans the kernels walk: f(offset, count, length) for the whole
// periods, then once for what is left (r0 is a multiple of ROWS, so spans start in phase).
template <typename F>
void spans(int64_t r0, int64_t rows, int64_t C, int64_t P, const F& f) {
  const int64_t n = rows * C, full = n / P, o = r0 * C;
  if (full) f(o, full, P);
  if (n % P) f(o + full * P, 1, n % P);
}

int64_t grain(int64_t C) { return std::max<int64_t>(1, MIN_WORK / (ROWS * C)); }

// Per-chunk float sums of two quantities over the span period, folded to channels and reduced
// in chunk order in double: (2, C). chunk(offset, count, length, sum, sum2) adds into the P-long
// sums.
template <typename F>
std::vector<double> chunked_sums(int64_t M, int64_t C, const F& chunk) {
  const int64_t chunks = (M + ROWS - 1) / ROWS, P = period(C);
  std::vector<float> part(chunks * 2 * P, 0.f);
  at::parallel_for(0, chunks, grain(C), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float *s = &part[i * 2 * P], *q = s + P;
      spans(i * ROWS, std::min(ROWS, M - i * ROWS), C, P,
            [&](int64_t o, int64_t count, int64_t len) { chunk(o, count, len, s, q); });
    }
  });
  std::vector<double> tot(2 * C, 0.0);
  for (int64_t i = 0; i < chunks; ++i)
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t j = 0; j < P; j += C)   // the k rows of the period, folded onto the channels
        for (int64_t c = 0; c < C; ++c) tot[h * C + c] += part[(i * 2 + h) * P + j + c];
  return tot;
}

// body(offset, count, length) over every span of M rows, in parallel.
template <typename F>
void for_rows(int64_t M, int64_t C, const F& body) {
  const int64_t P = period(C);
  at::parallel_for(0, (M + ROWS - 1) / ROWS, grain(C), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) spans(i * ROWS, std::min(ROWS, M - i * ROWS), C, P, body);
  });
}

template <typename T>
const T* ptr(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.const_data_ptr());
}
template <typename T>
T* mut(at::Tensor& t) {
  return reinterpret_cast<T*>(t.mutable_data_ptr());
}

// f(T{}) with T the element type of x's dtype (bf16 bits or float), for the typed loops.
template <typename F>
decltype(auto) by_dtype(const at::Tensor& x, const F& f) {
  return x.scalar_type() == at::kBFloat16 ? f(bf16{}) : f(float{});
}

void check_act(const at::Tensor& x, const char* name, const char* op) {
  TORCH_CHECK(x.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast), op, ": ", name,
              " must be a channels_last (N, C, H, W) tensor, got shape ", x.sizes(), " strides ", x.strides());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, op, ": ", name,
              " must be float32 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(x.numel() > 0, op, ": ", name, " must not be empty");
}

void check_like(const at::Tensor& t, const at::Tensor& x, const char* name, const char* op) {
  check_act(t, name, op);
  TORCH_CHECK(t.sizes() == x.sizes() && t.scalar_type() == x.scalar_type(), op, ": ", name, " must be ",
              x.sizes(), " ", x.scalar_type(), " like x, got ", t.sizes(), " ", t.scalar_type());
}

void check_channels(const at::Tensor& t, int64_t C, const char* name, const char* op) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == C && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                  t.device().is_cpu(),
              op, ": ", name, " must be a contiguous float32 (", C, ",) CPU tensor, got ", t.sizes(), " ",
              t.scalar_type());
}

void check_params(const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& var,
                  int64_t C, const char* op) {
  for (const auto& [t, name] : {std::pair{&weight, "weight"}, {&bias, "bias"}, {&mean, "mean"}, {&var, "var"}})
    check_channels(*t, C, name, op);
}

// The forward's per-channel scale and shift; the backward's FROM_X mask needs the same floats.
void affine(const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& var,
            double eps, std::vector<float>& scale, std::vector<float>& shift) {
  for (size_t c = 0; c < scale.size(); ++c) {
    scale[c] = float(weight.const_data_ptr<float>()[c] / std::sqrt(double(var.const_data_ptr<float>()[c]) + eps));
    shift[c] = bias.const_data_ptr<float>()[c] - mean.const_data_ptr<float>()[c] * scale[c];
  }
}

std::vector<double> batch_sums(const at::Tensor& x, int64_t M, int64_t C, std::vector<float>& shift) {
  return by_dtype(x, [&](auto tag) {
    const auto* xp = ptr<decltype(tag)>(x);
    for (int64_t c = 0; c < C; ++c) shift[c] = load(xp[c]);  // first row: keeps the squares small
    const auto sh = expand(shift, period(C));
    return chunked_sums(M, C, [&](int64_t o, int64_t n, int64_t L, float* s, float* q) {
      stats(xp + o, n, L, sh.data(), s, q);
    });
  });
}

}  // namespace

// Batch mean and biased variance (C,) float32 of x, and the running statistics updated as
// nn.BatchNorm2d does in training (momentum, or the cumulative average when momentum is None).
std::tuple<at::Tensor, at::Tensor> batch_stats_cpu(const at::Tensor& x, at::Tensor& running_mean,
                                                   at::Tensor& running_var, at::Tensor& num_batches_tracked,
                                                   std::optional<double> momentum) {
  const char* op = "batch_stats";
  check_act(x, "x", op);
  const int64_t C = x.size(1), M = x.numel() / C;
  check_channels(running_mean, C, "running_mean", op);
  check_channels(running_var, C, "running_var", op);
  TORCH_CHECK(num_batches_tracked.numel() == 1 && num_batches_tracked.scalar_type() == at::kLong, op,
              ": num_batches_tracked must be a one-element int64 tensor");
  std::vector<float> shift(C);
  const auto tot = batch_sums(x, M, C, shift);
  auto mean = at::empty({C}, x.options().dtype(at::kFloat)), var = at::empty({C}, mean.options());
  int64_t& nbt = *num_batches_tracked.mutable_data_ptr<int64_t>();
  nbt += 1;
  const double m = momentum ? *momentum : 1.0 / double(nbt);
  const double unbias = double(M) / double(std::max<int64_t>(M - 1, 1));
  float *mp = mean.mutable_data_ptr<float>(), *vp = var.mutable_data_ptr<float>();
  float *rm = running_mean.mutable_data_ptr<float>(), *rv = running_var.mutable_data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double d = tot[c] / M;
    mp[c] = float(shift[c] + d);
    vp[c] = float(std::max(tot[C + c] / M - d * d, 0.0));
    rm[c] = float((1 - m) * rm[c] + m * mp[c]);
    rv[c] = float((1 - m) * rv[c] + m * vp[c] * unbias);
  }
  return {mean, var};
}

// y = [relu]((x - mean) / sqrt(var + eps) * weight + bias [+ residual]), channels_last like x.
at::Tensor bn_act_cpu(const at::Tensor& x, const std::optional<at::Tensor>& residual, const at::Tensor& weight,
                      const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& var, double eps, bool relu) {
  const char* op = "bn_act";
  check_act(x, "x", op);
  const int64_t C = x.size(1), M = x.numel() / C;
  if (residual) check_like(*residual, x, "residual", op);
  check_params(weight, bias, mean, var, C, op);
  std::vector<float> sc(C), sh(C);
  affine(weight, bias, mean, var, eps, sc, sh);
  const auto scale = expand(sc, period(C)), shift = expand(sh, period(C));
  auto y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  by_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    for_rows(M, C, [&](int64_t o, int64_t n, int64_t L) {
      apply(ptr<T>(x) + o, residual ? ptr<T>(*residual) + o : nullptr, mut<T>(y) + o, n, L, scale.data(),
            shift.data(), relu);
    });
  });
  return y;
}

// The backward of bn_act with the batch statistics' dependence on x included (mean and var
// must be x's batch statistics, as batch_stats gives them). y (bn_act's output) is needed
// only with relu and residual; without a residual the ReLU's mask is rebuilt from x. Returns
// (dx, dweight, dbias, dresidual); dresidual (the masked gradient) only when relu and
// residual, else empty.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_act_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& y, const at::Tensor& weight,
    const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& var, double eps, bool relu, bool residual) {
  const char* op = "bn_act_backward";
  check_act(x, "x", op);
  check_like(grad, x, "grad", op);
  const int64_t C = x.size(1), M = x.numel() / C;
  check_params(weight, bias, mean, var, C, op);
  const int mask = !relu ? NONE : residual ? FROM_Y : FROM_X;
  TORCH_CHECK(mask != FROM_Y || y, op, ": y (bn_act's output) is needed with relu and residual");
  if (mask == FROM_Y) check_like(*y, x, "y", op);
  const at::Tensor& yt = mask == FROM_Y ? *y : x;   // read only when FROM_Y
  const int64_t P = period(C);
  std::vector<float> sc(C), sh(C);
  affine(weight, bias, mean, var, eps, sc, sh);
  const auto ms = expand(sc, P), mt = expand(sh, P);
  const auto me = expand(std::vector<float>(mean.const_data_ptr<float>(), mean.const_data_ptr<float>() + C), P);
  const float* mp = me.data();
  const auto tot = by_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    return chunked_sums(M, C, [&](int64_t o, int64_t n, int64_t L, float* gs, float* gx) {
      grad_stats(ptr<T>(grad) + o, ptr<T>(yt) + o, ptr<T>(x) + o, n, L, mp, mask, ms.data(), mt.data(), gs, gx);
    });
  });
  auto dweight = at::empty({C}, weight.options()), dbias = at::empty({C}, weight.options());
  std::vector<float> a(C), off(C), k(C);
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = 1.0 / std::sqrt(double(var.const_data_ptr<float>()[c]) + eps);
    const double w = weight.const_data_ptr<float>()[c] * invstd;
    dbias.mutable_data_ptr<float>()[c] = float(tot[c]);
    dweight.mutable_data_ptr<float>()[c] = float(tot[C + c] * invstd);
    a[c] = float(w);
    off[c] = float(w * tot[c] / M);
    k[c] = float(w * invstd * invstd * tot[C + c] / M);
  }
  a = expand(a, P), off = expand(off, P), k = expand(k, P);
  auto dx = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  auto dres = mask == FROM_Y ? at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast))
                             : at::empty({0}, x.options());
  by_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    for_rows(M, C, [&](int64_t o, int64_t n, int64_t L) {
      grad_x(ptr<T>(grad) + o, ptr<T>(yt) + o, ptr<T>(x) + o, mut<T>(dx) + o,
             mask == FROM_Y ? mut<T>(dres) + o : nullptr, n, L, mp, a.data(), off.data(), k.data(), mask, ms.data(),
             mt.data());
    });
  });
  return {dx, dweight, dbias, dres};
}

namespace {

// The autograd of bn_act in C++: a Python autograd formula cost about 0.1 ms of interpreter
// time per call, a third of the backward kernel's time on W32's branch shapes.
class BnActFunction : public torch::autograd::Function<BnActFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const std::optional<at::Tensor>& residual, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& var, double eps,
                            bool relu) {
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("hrfast::bn_act", "").typed<decltype(bn_act_cpu)>();
    at::Tensor y;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      y = op.call(x, residual, weight, bias, mean, var, eps, relu);
    }
    // y is kept only where the backward reads it (relu and residual)
    ctx->save_for_backward({x, relu && residual ? y : at::Tensor(), weight, bias, mean, var});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["relu"] = relu;
    ctx->saved_data["residual"] = residual.has_value();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("hrfast::bn_act_backward", "")
                         .typed<decltype(bn_act_backward_cpu)>();
    const auto saved = ctx->get_saved_variables();
    const bool relu = ctx->saved_data["relu"].toBool(), has_res = ctx->saved_data["residual"].toBool();
    const auto grad = grads[0].contiguous(at::MemoryFormat::ChannelsLast);
    const std::optional<at::Tensor> y = saved[1].defined() ? std::optional<at::Tensor>(saved[1]) : std::nullopt;
    auto [dx, dw, db, dres] = op.call(grad, saved[0], y, saved[2], saved[3], saved[4], saved[5],
                                      ctx->saved_data["eps"].toDouble(), relu, has_res);
    if (has_res && !relu) dres = grad;
    return {dx, has_res ? dres : at::Tensor(), dw, db, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor bn_act_autograd(const at::Tensor& x, const std::optional<at::Tensor>& residual, const at::Tensor& weight,
                           const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& var, double eps,
                           bool relu) {
  return BnActFunction::apply(x, residual, weight, bias, mean, var, eps, relu);
}

}  // namespace

}  // namespace hrfast

TORCH_LIBRARY_IMPL(hrfast, Autograd, m) { m.impl("bn_act", &hrfast::bn_act_autograd); }

TORCH_LIBRARY_IMPL(hrfast, CPU, m) {
  m.impl("batch_stats", &hrfast::batch_stats_cpu);
  m.impl("bn_act", &hrfast::bn_act_cpu);
  m.impl("bn_act_backward", &hrfast::bn_act_backward_cpu);
}
