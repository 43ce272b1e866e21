// The weight gradient of a 3x3, stride 1, padding 1 convolution in bf16 on CPUs with
// AVX512-BF16 (see hrfast/ops/conv3x3.py), and the convolution op whose backward uses it.
//
// dW[o, kh, kw, i] = sum over n, y, x of dY[n, y, x, o] * X[n, y + kh - 1, x + kw - 1, i], a GEMM
// whose reduction runs over every pixel. Without AMX, oneDNN runs it with its older direct
// kernel (`jit_bf16`) at 60-80% of the bf16 peak, where its forward and input gradient run
// brgemm kernels at the peak (benchmarks/RESULTS.md, "training"). Here it is a register-blocked
// GEMM on `vdpbf16ps`, which multiplies pairs of bf16 along the reduction: pixel pairs (x, x+1)
// of one row. Each row of dY and of the zero-padded X is packed into that pair-interleaved form
// (16 channels at a time, one permute), X twice, for pairs that start on even and on odd
// padded columns, since taps kw = 0, 2 read the former and kw = 1 the latter. Channels are
// zero-padded to multiples of 16 in the packed rows (W18's 18 channels as 32).
//
// Two schedules, by the packed size of the batch:
// - small (the low-resolution branches): the whole batch packed once, then the (tap, channel
//   block, output block) tiles shared out among threads; each tile sums every pixel in
//   registers and stores bf16;
// - large: work items of rows (whole images where they fit a budget of packed bytes) in as
//   many fixed ranges as threads; each range adds into its own float partial of the whole dW,
//   and the partials are summed in range order: the same result on every run with the same
//   thread count (another count sums in another order).
// Both accumulate in float, like oneDNN, and round once to bf16.
#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#define HRFAST_WGRAD 1
#include <cpuid.h>
#include <immintrin.h>
#define HRFAST_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define HRFAST_WGRAD 0
#endif

namespace hrfast {

#if HRFAST_WGRAD
namespace {
// AVX-512 F, BW, VL and BF16 in CPUID, and the OS saving the AVX-512 registers (XCR0: SSE, AVX,
// opmask and both upper halves). Read directly: __builtin_cpu_supports("avx512bf16") is not in
// every compiler this builds with.
bool cpu_has_avx512_bf16() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const unsigned f_bw_vl = (1u << 16) | (1u << 30) | (1u << 31);
  if ((b & f_bw_vl) != f_bw_vl || a < 1) return false;
  if (!__get_cpuid_count(1, 0, &a, &b, &c, &d) || !(c & (1u << 27))) return false;   // OSXSAVE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 0xE6u) != 0xE6u) return false;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  return (a & (1u << 5)) != 0;   // AVX512_BF16
}
}  // namespace
#endif

bool conv3x3_wgrad_native() {
#if HRFAST_WGRAD
  static const bool ok = cpu_has_avx512_bf16();
  return ok;
#else
  return false;
#endif
}

namespace {

void check_wgrad_args(const at::Tensor& grad, const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && grad.dim() == 4 && grad.size(0) == x.size(0) && grad.size(2) == x.size(2) &&
                  grad.size(3) == x.size(3),
              "conv3x3_wgrad: grad must be (N, O, H, W) over x's (N, C, H, W) = ", x.sizes(), ", got ", grad.sizes());
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && grad.scalar_type() == at::kBFloat16,
              "conv3x3_wgrad: grad and x must be bfloat16, got ", grad.scalar_type(), " and ", x.scalar_type());
  TORCH_CHECK(x.device().is_cpu() && grad.device().is_cpu(), "conv3x3_wgrad: grad and x must be CPU tensors");
}

// The reference: ATen's weight gradient (oneDNN on the CPU).
at::Tensor wgrad_aten(const at::Tensor& grad, const at::Tensor& x, int64_t out_channels) {
  auto w = at::empty({out_channels, x.size(1), 3, 3}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  return std::get<1>(at::convolution_backward(grad, x, w, std::nullopt, {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1,
                                              {false, true, false}));
}

#if HRFAST_WGRAD

// Packed operands. A row of dY packs to P2 = ceil(W/2) pairs of op u32 (o-major within a
// pair); a row of X to P2 + 1 pairs of cp u32, padded column c holding X's column c - 1.
struct Shape {
  int64_t N, C, H, W, O, cp, op, P2;
  Shape(const at::Tensor& grad, const at::Tensor& x)
      : N(x.size(0)), C(x.size(1)), H(x.size(2)), W(x.size(3)), O(grad.size(1)), cp((C + 15) / 16 * 16),
        op((O + 15) / 16 * 16), P2((W + 1) / 2) {}
  int64_t dy_row() const { return P2 * op; }
  int64_t x_row() const { return (P2 + 1) * cp; }
  int64_t row_bytes() const { return 4 * (dy_row() + 2 * x_row()); }
};

// Walk of the packed rows: `segs` segments of seg_rows rows, of which the first `rows` are
// summed (the last two of a segment hold only X's halo rows).
struct Geo {
  int64_t dy_row, dy_pair, x_row, x_pair;
  int segs, rows, seg_rows, pairs;
  int64_t acc_stride, out_stride;
};

HRFAST_BF16 inline __m256i load16(const c10::BFloat16* p, int64_t n) {
  if (p == nullptr || n <= 0) return _mm256_setzero_si256();
  if (n >= 16) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << n) - 1), p);
}

// Columns first + 2j and first + 2j + 1 of a channels_last row (`width` columns of `ch`
// channels) for j < npairs, interleaved channel by channel; columns outside the row, channels
// from ch to cp and a null row are zeros.
HRFAST_BF16 void pack_row(const c10::BFloat16* row, int64_t width, int64_t ch, int64_t cp, int64_t first,
                          int64_t npairs, uint32_t* out) {
  alignas(64) static const int16_t order[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(order);
  for (int64_t j = 0; j < npairs; ++j) {
    const int64_t c0 = first + 2 * j;
    const c10::BFloat16* p0 = (row && c0 >= 0 && c0 < width) ? row + c0 * ch : nullptr;
    const c10::BFloat16* p1 = (row && c0 + 1 >= 0 && c0 + 1 < width) ? row + (c0 + 1) * ch : nullptr;
    for (int64_t i = 0; i < cp; i += 16) {
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(load16(p0 ? p0 + i : nullptr, ch - i)),
                                              load16(p1 ? p1 + i : nullptr, ch - i), 1);
      _mm512_storeu_si512(out + j * cp + i, _mm512_permutexvar_epi16(idx, both));
    }
  }
}

// MO output channels x 16*NV input channels of one tap, over the walk g. DIRECT: start from
// zero and store bf16 (`valid` input channels from this tile's first); else add into acc.
template <int MO, int NV, bool DIRECT>
HRFAST_BF16 void tile(const uint32_t* dy, const uint32_t* xs, float* acc, c10::BFloat16* out, int64_t valid,
                      const Geo& g) {
  __m512 c[MO][NV];
  for (int m = 0; m < MO; ++m)
    for (int v = 0; v < NV; ++v)
      c[m][v] = DIRECT ? _mm512_setzero_ps() : _mm512_loadu_ps(acc + m * g.acc_stride + 16 * v);
  for (int s = 0; s < g.segs; ++s)
    for (int r = 0; r < g.rows; ++r) {
      const int64_t row = static_cast<int64_t>(s) * g.seg_rows + r;
      const uint32_t* a = dy + row * g.dy_row;
      const uint32_t* b = xs + row * g.x_row;
      for (int j = 0; j < g.pairs; ++j) {
        __m512bh bv[NV];
        for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + j * g.x_pair + 16 * v);
        for (int m = 0; m < MO; ++m) {
          const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[j * g.dy_pair + m]));
          for (int v = 0; v < NV; ++v) c[m][v] = _mm512_dpbf16_ps(c[m][v], av, bv[v]);
        }
      }
    }
  for (int m = 0; m < MO; ++m)
    for (int v = 0; v < NV; ++v) {
      if (!DIRECT) {
        _mm512_storeu_ps(acc + m * g.acc_stride + 16 * v, c[m][v]);
        continue;
      }
      const int64_t n = std::min<int64_t>(16, valid - 16 * v);
      if (n <= 0) break;
      _mm256_mask_storeu_epi16(out + m * g.out_stride + 16 * v, static_cast<__mmask16>((1u << n) - 1),
                               (__m256i)_mm512_cvtneps_pbh(c[m][v]));
    }
}

using TileFn = void (*)(const uint32_t*, const uint32_t*, float*, c10::BFloat16*, int64_t, const Geo&);
constexpr int kMaxMO = 12;
constexpr int kMO[5] = {0, 12, 12, 8, 6};   // output channels per tile by NV: 24 accumulators or fewer
using MoSeq = std::make_integer_sequence<int, kMaxMO>;

template <int NV, bool D, int... M>
constexpr std::array<TileFn, kMaxMO> tiles_of(std::integer_sequence<int, M...>) {
  return {&tile<M + 1, NV, D>...};
}

// kTiles[direct][NV - 1][MO - 1]
const std::array<std::array<TileFn, kMaxMO>, 4> kTiles[2] = {
    {tiles_of<1, false>(MoSeq{}), tiles_of<2, false>(MoSeq{}), tiles_of<3, false>(MoSeq{}),
     tiles_of<4, false>(MoSeq{})},
    {tiles_of<1, true>(MoSeq{}), tiles_of<2, true>(MoSeq{}), tiles_of<3, true>(MoSeq{}),
     tiles_of<4, true>(MoSeq{})}};

// Scratch that lives as long as its thread and only grows: a fresh buffer per call would be
// mapped, faulted in page by page and unmapped each time (glibc maps blocks over 128 KiB).
template <typename T>
T* scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

struct Tile {
  int tap;
  int64_t i0;   // first input-channel block of 16
  int nv;
  int64_t o0;
  int mo;
};

// Every (tap, channel block, output block) tile: blocks of 64 input channels (5 blocks as 3 + 2).
std::vector<Tile> all_tiles(const Shape& s) {
  std::vector<Tile> tiles;
  const int64_t blocks = s.cp / 16;
  for (int t = 0; t < 9; ++t)
    for (int64_t i0 = 0; i0 < blocks;) {
      const int nv = blocks - i0 == 5 ? 3 : static_cast<int>(std::min<int64_t>(4, blocks - i0));
      for (int64_t o0 = 0; o0 < s.O; o0 += kMO[nv])
        tiles.push_back({t, i0, nv, o0, static_cast<int>(std::min<int64_t>(kMO[nv], s.O - o0))});
      i0 += nv;
    }
  return tiles;
}

// Packs rows y0 - 1 .. y0 + rows of X and y0 .. y0 + rows - 1 of dY of image n into segment
// row 0 onwards of the buffers.
void pack_segment(const Shape& s, const c10::BFloat16* x, const c10::BFloat16* dy, int64_t n, int64_t y0,
                  int64_t rows, uint32_t* dyb, uint32_t* xe, uint32_t* xo) {
  for (int64_t r = 0; r < rows; ++r)
    pack_row(dy + ((n * s.H + y0 + r) * s.W) * s.O, s.W, s.O, s.op, 0, s.P2, dyb + r * s.dy_row());
  for (int64_t r = 0; r < rows + 2; ++r) {
    const int64_t yy = y0 - 1 + r;
    const c10::BFloat16* row = (yy >= 0 && yy < s.H) ? x + ((n * s.H + yy) * s.W) * s.C : nullptr;
    pack_row(row, s.W, s.C, s.cp, -1, s.P2 + 1, xe + r * s.x_row());
    pack_row(row, s.W, s.C, s.cp, 0, s.P2 + 1, xo + r * s.x_row());
  }
}

// The packed X that tap t reads: even pairs for kw = 0 and 2 (one pair later), odd for kw = 1.
const uint32_t* tap_source(const Shape& s, int t, const uint32_t* xe, const uint32_t* xo) {
  const int kh = t / 3, kw = t % 3;
  return (kw == 1 ? xo : xe) + kh * s.x_row() + (kw == 2 ? s.cp : 0);
}

void wgrad_small(const Shape& s, const c10::BFloat16* x, const c10::BFloat16* dy, c10::BFloat16* out) {
  const int64_t seg = s.H + 2;
  // the calling thread's scratch, shared with the workers for this call
  thread_local std::vector<uint32_t> dy_buf, xe_buf, xo_buf;
  uint32_t* dyb = scratch(dy_buf, s.N * seg * s.dy_row());
  uint32_t* xe = scratch(xe_buf, s.N * seg * s.x_row());
  uint32_t* xo = scratch(xo_buf, s.N * seg * s.x_row());
  at::parallel_for(0, s.N, 1, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n)
      pack_segment(s, x, dy, n, 0, s.H, dyb + n * seg * s.dy_row(), xe + n * seg * s.x_row(), xo + n * seg * s.x_row());
  });
  const std::vector<Tile> tiles = all_tiles(s);
  const Geo g{s.dy_row(), s.op, s.x_row(), s.cp, static_cast<int>(s.N), static_cast<int>(s.H),
              static_cast<int>(seg), static_cast<int>(s.P2), 0, 9 * s.C};
  at::parallel_for(0, static_cast<int64_t>(tiles.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const Tile& t = tiles[k];
      kTiles[1][t.nv - 1][t.mo - 1](dyb + t.o0, tap_source(s, t.tap, xe, xo) + t.i0 * 16, nullptr,
                                    out + t.o0 * 9 * s.C + t.tap * s.C + t.i0 * 16, s.C - t.i0 * 16, g);
    }
  });
}

HRFAST_BF16 void sum_partials(const Shape& s, const float* part, int parts, int64_t o_begin,
                              int64_t o_end, c10::BFloat16* out) {
  const int64_t each = 9 * s.op * s.cp;
  for (int64_t o = o_begin; o < o_end; ++o)
    for (int t = 0; t < 9; ++t)
      for (int64_t c = 0; c < s.C; c += 16) {
        __m512 acc = _mm512_setzero_ps();
        for (int p = 0; p < parts; ++p)
          acc = _mm512_add_ps(acc, _mm512_loadu_ps(part + p * each + (t * s.op + o) * s.cp + c));
        const int64_t n = std::min<int64_t>(16, s.C - c);
        _mm256_mask_storeu_epi16(out + (o * 9 + t) * s.C + c, static_cast<__mmask16>((1u << n) - 1),
                                 (__m256i)_mm512_cvtneps_pbh(acc));
      }
}

// Items of R rows of one image, or of G whole images, within `budget` packed bytes.
void wgrad_large(const Shape& s, const c10::BFloat16* x, const c10::BFloat16* dy, c10::BFloat16* out,
                 int64_t budget) {
  const int threads = at::get_num_threads();
  int64_t R = s.H, G = 1;
  if ((s.H + 2) * s.row_bytes() <= budget)
    G = std::max<int64_t>(1, std::min<int64_t>(budget / ((s.H + 2) * s.row_bytes()),
                                               (s.N + threads - 1) / threads));
  else
    R = std::max<int64_t>(1, budget / s.row_bytes() - 2);
  const int64_t yblocks = (s.H + R - 1) / R, items = (s.N + G - 1) / G * yblocks, each = 9 * s.op * s.cp;
  // one float partial per fixed range of items; parallel_for hands each thread whole ranges
  const int parts = static_cast<int>(std::min<int64_t>(threads, items));
  thread_local std::vector<float> part_buf;
  float* part = scratch(part_buf, parts * each);
  const std::vector<Tile> tiles = all_tiles(s);
  at::parallel_for(0, parts, 1, [&](int64_t pb, int64_t pe) {
    const int64_t seg = R + 2;
    thread_local std::vector<uint32_t> dy_buf, xe_buf, xo_buf;   // this worker's
    uint32_t* dyb = scratch(dy_buf, G * seg * s.dy_row());
    uint32_t* xe = scratch(xe_buf, G * seg * s.x_row());
    uint32_t* xo = scratch(xo_buf, G * seg * s.x_row());
    std::fill(part + pb * each, part + pe * each, 0.f);
    for (int64_t p = pb; p < pe; ++p)
      for (int64_t it = items * p / parts; it < items * (p + 1) / parts; ++it) {
        const int64_t n0 = (it / yblocks) * G, y0 = (it % yblocks) * R, rows = std::min(R, s.H - y0);
        const int64_t segs = std::min(G, s.N - n0);
        for (int64_t k = 0; k < segs; ++k)
          pack_segment(s, x, dy, n0 + k, y0, rows, dyb + k * seg * s.dy_row(), xe + k * seg * s.x_row(),
                       xo + k * seg * s.x_row());
        const Geo g{s.dy_row(), s.op, s.x_row(), s.cp, static_cast<int>(segs), static_cast<int>(rows),
                    static_cast<int>(seg), static_cast<int>(s.P2), s.cp, 0};
        for (const Tile& t : tiles)
          kTiles[0][t.nv - 1][t.mo - 1](dyb + t.o0, tap_source(s, t.tap, xe, xo) + t.i0 * 16,
                                        part + p * each + (t.tap * s.op + t.o0) * s.cp + t.i0 * 16, nullptr, 0, g);
      }
  });
  at::parallel_for(0, s.O, 1, [&](int64_t b, int64_t e) { sum_partials(s, part, parts, b, e, out); });
}

#endif  // HRFAST_WGRAD

// Packed bytes up to which the whole batch is packed at once (the small schedule), and the
// large schedule's packed bytes per item: both about what a core's L2 holds beside the tiles'
// working set (measured on W32's branch shapes, benchmarks/conv3x3_wgrad.py).
constexpr int64_t kSmallBytes = 1 << 20;
constexpr int64_t kItemBytes = 256 << 10;

}  // namespace

// grad (N, O, H, W), x (N, C, H, W): bfloat16 CPU tensors. The weight gradient (O, C, 3, 3),
// bfloat16 channels_last, of a 3x3 convolution with stride 1, padding 1 and no groups.
at::Tensor conv3x3_wgrad_cpu(const at::Tensor& grad, const at::Tensor& x) {
  check_wgrad_args(grad, x);
#if HRFAST_WGRAD
  if (!conv3x3_wgrad_native()) return wgrad_aten(grad, x, grad.size(1));
  const auto xc = x.contiguous(at::MemoryFormat::ChannelsLast), gc = grad.contiguous(at::MemoryFormat::ChannelsLast);
  const Shape s(gc, xc);
  auto out = at::empty({s.O, s.C, 3, 3}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (s.N * s.H * s.W == 0 || s.C == 0 || s.O == 0) return out.zero_();
  const auto* xp = xc.const_data_ptr<c10::BFloat16>();
  const auto* dp = gc.const_data_ptr<c10::BFloat16>();
  auto* op = out.mutable_data_ptr<c10::BFloat16>();
  if (s.N * (s.H + 2) * s.row_bytes() <= kSmallBytes)
    wgrad_small(s, xp, dp, op);
  else
    wgrad_large(s, xp, dp, op, kItemBytes);
  return out;
#else
  return wgrad_aten(grad, x, grad.size(1));
#endif
}

// A 3x3 convolution, stride 1, padding 1, no bias, no groups: ATen's forward.
at::Tensor conv3x3_cpu(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3 && x.dim() == 4 &&
                  weight.size(1) == x.size(1),
              "conv3x3: weight must be (O, C, 3, 3) over x's (N, C, H, W) = ", x.sizes(), ", got ", weight.sizes());
  return at::convolution(x, weight, std::nullopt, {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1);
}

namespace {

// ATen's input gradient; the weight gradient from conv3x3_wgrad where it runs natively (bf16
// on an AVX512-BF16 CPU), else from the same ATen call.
class Conv3x3Function : public torch::autograd::Function<Conv3x3Function> {
 public:
  // Both through the dispatcher, so that fake tensors (torch.compile) meet the fake kernels.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight) {
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("hrfast::conv3x3", "").typed<decltype(conv3x3_cpu)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, weight});
    return op.call(x, weight);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("hrfast::conv3x3_wgrad", "")
            .typed<decltype(conv3x3_wgrad_cpu)>();
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &grad = grads[0];
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const bool native = need_w && conv3x3_wgrad_native() && x.scalar_type() == at::kBFloat16 &&
                        grad.scalar_type() == at::kBFloat16 && x.device().is_cpu();
    auto [dx, dw, db] = at::convolution_backward(grad, x, w, std::nullopt, {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1,
                                                 {need_x, need_w && !native, false});
    if (native) dw = op.call(grad, x).to(w.scalar_type()).contiguous(w.suggest_memory_format());
    return {need_x ? dx : at::Tensor(), need_w ? dw : at::Tensor()};
  }
};

at::Tensor conv3x3_autograd(const at::Tensor& x, const at::Tensor& weight) {
  return Conv3x3Function::apply(x, weight);
}

}  // namespace

}  // namespace hrfast

TORCH_LIBRARY_IMPL(hrfast, Autograd, m) { m.impl("conv3x3", &hrfast::conv3x3_autograd); }

TORCH_LIBRARY_IMPL(hrfast, CPU, m) {
  m.impl("conv3x3", &hrfast::conv3x3_cpu);
  m.impl("conv3x3_wgrad", &hrfast::conv3x3_wgrad_cpu);
}
