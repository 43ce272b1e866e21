"""Shared plumbing of the Triton ops: availability, strided views, affines, tile choice and the
launcher of ``kernels.fused_gemm.fused_gemm_fwd_kernel``.

The ops are ``torch.library.custom_op`` with explicit fake impls rather than ``triton_op``: a
``triton_op`` is traced into its kernel by ``torch.compile``, and that trace cannot run in the
Triton interpreter (pytorch/pytorch#152868). As opaque custom ops they compile with
``fullgraph=True``, capture in CUDA graphs and pass ``opcheck`` on the CPU interpreter too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from packaging.version import Version

# The kernels take tuples of tensors and scalars as arguments, which Triton accepts from 3.2 on;
# an older Triton counts as none, so nothing fails inside a launch.
TRITON_NEEDED = "Triton 3.2 or newer (pip install 'hrfast[triton]')"

try:  # Triton is an optional dependency
    import triton
    if Version(triton.__version__).release < (3, 2):
        raise ImportError(f"triton {triton.__version__} is older than 3.2")

    from hrfast.kernels.fused_gemm import fused_gemm_fwd_kernel
    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised on machines without triton
    HAS_TRITON = False

FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
MAX_SEGMENTS = 3   # a 4-branch unit's output sums at most 3 other branches
MAX_TERMS = 4      # the identity plus 3 precomputed terms
MAX_GROUPS = 3     # the first convs of at most 3 chains leave one branch

LAUNCHES = [0]     # kernels launched so far (benchmarks/exchange_gpu.py reads it on the CPU)
# Set by benchmarks/offline_compile.py: CPU tensors stand in for CUDA ones, and every choice
# (tiles, operand dtypes) is the GPU's, so the kernels compile for sm_90 on a machine without one.
OFFLINE_GPU = [False]


def on_gpu(device: torch.device) -> bool:
    """Whether launches on ``device`` take the GPU's choices (a real or an offline target)."""
    return device.type == "cuda" or OFFLINE_GPU[0]


def triton_runs_on(device: torch.device) -> bool:
    """Whether the Triton kernels can run on ``device``: CUDA, or CPU under the interpreter."""
    if not HAS_TRITON:
        return False
    if on_gpu(device):
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def require_triton(device: torch.device, what: str) -> None:
    if not HAS_TRITON:
        raise RuntimeError(f"{what} needs {TRITON_NEEDED}")
    if not triton_runs_on(device):
        raise RuntimeError(f"{what} runs on CUDA, or on the CPU only under TRITON_INTERPRET=1; got tensors on {device}")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tl_dtype(dtype: torch.dtype):
    import triton.language as tl
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(dtype: torch.dtype) -> Optional[str]:
    """``tl.dot`` input precision: float32 follows cuDNN's TF32 switch, float64 is exact,
    bf16/fp16 need none."""
    if dtype == torch.float32:
        return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    if dtype == torch.float64:
        return "ieee"
    return None


def dot_upcast(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the kernels must widen bf16 operands before ``tl.dot``: only in the CPU
    interpreter, whose dot multiplies bf16's raw bits (Triton 3.9)."""
    return dtype == torch.bfloat16 and not on_gpu(device)


def is_channels_last(t: torch.Tensor) -> bool:
    """Channels innermost (NHWC storage), for a dense tensor or a channel slice of one."""
    return t.dim() == 4 and t.shape[1] > 1 and t.stride(1) == 1


def empty_like_layout(ref: torch.Tensor, shape: Sequence[int], dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """An uninitialized (B, C, H, W) tensor in ``ref``'s layout (NHWC or NCHW). Real and fake
    impls both allocate through this, so their strides agree."""
    fmt = torch.channels_last if is_channels_last(ref) else torch.contiguous_format
    return torch.empty(tuple(shape), dtype=dtype or ref.dtype, device=ref.device, memory_format=fmt)


def view(t: torch.Tensor) -> tuple:
    """The kernels' view tuple (tensor, sB, sC, sH, sW)."""
    return (t, *t.stride())


def weight_view(w: torch.Tensor) -> tuple:
    return (w, *w.stride())


def needs_int64(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether some offset can reach 2^31 elements (the kernels then index in int64)."""
    return any(t is not None and t.numel() > 0 and
               sum((s - 1) * st for s, st in zip(t.shape, t.stride())) >= 2 ** 31 - 1 for t in tensors)


@dataclass
class Affine:
    """A per-channel affine after a conv or on a term: a BatchNorm (weight, bias, mean, var,
    eps), a bias alone (a BN folded into its conv), or nothing."""
    weight: Optional[torch.Tensor] = None
    bias: Optional[torch.Tensor] = None
    mean: Optional[torch.Tensor] = None
    var: Optional[torch.Tensor] = None
    eps: float = 0.0

    @property
    def mode(self) -> int:
        if self.var is not None:
            return 2
        return 1 if self.bias is not None else 0

    def args(self, dummy: torch.Tensor) -> tuple:
        pick = lambda t: dummy if t is None else t  # noqa: E731
        return (pick(self.weight), pick(self.bias), pick(self.mean), pick(self.var), float(self.eps))

    @staticmethod
    def from_lists(w, b, mean, var, eps, k: int) -> "Affine":
        """Entry k of the op schemas' parallel lists, where an empty tensor means absent."""
        absent = lambda t: None if t is None or t.numel() == 0 else t  # noqa: E731
        return Affine(absent(w[k]), absent(b[k]), absent(mean[k]), absent(var[k]), float(eps[k]))


def affine_lists(affines: Sequence[Affine], like: torch.Tensor) -> tuple:
    """The op schemas' parallel lists (weight, bias, mean, var, eps) of ``affines``. An absent
    vector is an empty tensor, not None: torch's custom-op autograd tracks a tensor list only
    when every entry is a tensor."""
    empty = like.new_empty(0)
    pick = lambda t: empty if t is None else t  # noqa: E731
    return ([pick(a.weight) for a in affines], [pick(a.bias) for a in affines], [pick(a.mean) for a in affines],
            [pick(a.var) for a in affines], [float(a.eps) for a in affines])


NO_AFFINE = Affine()


@dataclass
class Segment:
    """A GEMM term: ``x`` convolved (KS = weight size, ``stride``) after nearest upsampling by
    ``factor``, one weight and one affine per output group."""
    x: torch.Tensor
    weights: List[torch.Tensor]
    stride: int = 1
    factor: int = 1
    affines: Optional[List[Affine]] = None

    @property
    def ks(self) -> int:
        return int(self.weights[0].shape[-1])


@dataclass
class Term:
    """An elementwise term ``affine(z)`` nearest-upsampled by ``factor``."""
    z: torch.Tensor
    factor: int = 1
    affine: Affine = field(default_factory=Affine)


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def gemm_tiles(M: int, N: int, K: int, device: torch.device) -> dict:
    """Tile shape for a GEMM of M pixels x N channels over K input channels per tap.

    GPU: 128-pixel tiles (64 when the grid would not fill the machine), N and K tiles matched
    to the channel counts of HRNet (32 to 384), fp32 accumulators at most 128 x 128. The CPU
    interpreter gets small tiles: its cost grows with the tile, not the pixel count."""
    if not on_gpu(device):
        return dict(BLOCK_M=64, BLOCK_N=_pow2(N, 16, 32), BLOCK_K=_pow2(K, 16, 32), num_warps=4, num_stages=1)
    bn = _pow2(N, 16, 128)
    bm = 128 if triton.cdiv(M, 128) * triton.cdiv(N, bn) >= 132 else 64
    # 128 x 128 tiles take K in steps of 32: with 64, the grouped 3x3 conv with the statistics
    # epilogue needed 255 registers and spilled under Triton 3.6 (the GPU image's; 3.9 fits)
    bk = _pow2(K, 16, 32 if bm * bn >= 128 * 128 else 64)
    # 8 warps from 64 x 128 up: with 4, the merged 1x1 convs' grouped weight pointers and the
    # statistics epilogue needed 255 registers and spilled (benchmarks/offline_compile.py)
    warps = 8 if bm * bn >= 64 * 128 else 4
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=3)


def wgrad_tiles(Cout: int, Cin: int, device: torch.device) -> dict:
    """Tiles of the weight-gradient GEMM: output channels x input channels of one tap, over
    pixels in BLOCK_K steps (long steps: the reduction is over B*Ho*Wo pixels)."""
    if not on_gpu(device):
        return dict(BLOCK_M=_pow2(Cout, 16, 32), BLOCK_N=_pow2(Cin, 16, 32), BLOCK_K=128, num_warps=4, num_stages=1)
    bm, bn = _pow2(Cout, 64, 128), _pow2(Cin, 16, 128)   # 64 rows at least: Hopper's wgmma
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=64, num_warps=8 if bm * bn >= 64 * 128 else 4, num_stages=3)


def stats_tile(M: int, P: int) -> int:
    """The pixel tile of a (P, N) partial-statistics buffer over M pixels: with power-of-two
    tiles and P = ceil(M / tile), next_pow2(ceil(M / P)) is that tile (see the tests)."""
    return triton.next_power_of_2(-(-M // max(P, 1)))


def launch_fused_gemm(outs: Sequence[torch.Tensor], segments: Sequence[Segment] = (), terms: Sequence[Term] = (),
                      relu: Sequence[bool] = (False,), stats: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                      tiles: Optional[dict] = None) -> None:
    """Launch ``fused_gemm_fwd_kernel`` writing ``outs`` (groups split along channels).

    ``stats``: (mean, M2) buffers of shape (P, N), P = ceil(M / BLOCK_M), written from the raw
    accumulator (only with one segment and no affine)."""
    G, NS, NT = len(outs), len(segments), len(terms)
    assert 1 <= G <= MAX_GROUPS and NS <= MAX_SEGMENTS and NT <= MAX_TERMS and (G == 1 or NT == 0)
    y = outs[0]
    B, _, Ho, Wo = y.shape
    widths = [o.shape[1] for o in outs]
    N = sum(widths)
    bounds = (widths[0], widths[0] + (widths[1] if G > 1 else 0))
    dummy = y
    seg_args, seg_meta = [], []
    for s in segments:
        aff = s.affines or [NO_AFFINE] * G
        seg_args.append((view(s.x), s.x.shape[2], s.x.shape[3], s.x.shape[1],
                         tuple(weight_view(w) for w in s.weights), tuple(a.args(dummy) for a in aff)))
        seg_meta += [s.ks, s.stride, s.factor, aff[0].mode]
    term_args, term_meta = [], []
    for t in terms:
        term_args.append((view(t.z), t.affine.args(dummy)))
        term_meta += [t.factor, t.affine.mode]
    seg_meta += [1, 1, 1, 0] * (MAX_SEGMENTS - NS)
    term_meta += [1, 0] * (MAX_TERMS - NT)
    # unused slots are never read (NS, NT guard them); Triton wants no empty tuples
    seg_args = seg_args or [(view(y), 1, 1, 1, (weight_view(y),), ((y, y, y, y, 0.0),))]
    term_args = term_args or [(view(y), (y, y, y, y, 0.0))]
    relu = [int(bool(r)) for r in relu] + [0] * (MAX_GROUPS - len(relu))
    M = B * Ho * Wo
    K = max([s.x.shape[1] for s in segments] + [1])
    cfg = dict(tiles or gemm_tiles(M, N, K, y.device))
    if stats is not None:
        assert stats[0].shape == (triton.cdiv(M, cfg["BLOCK_M"]), N), "stats buffers must be (ceil(M / BLOCK_M), N)"
    st = tuple(stats) if stats is not None else (dummy, dummy)
    ref = segments[0].x if segments else y
    grid = (triton.cdiv(M, cfg["BLOCK_M"]), triton.cdiv(N, cfg["BLOCK_N"]))
    big = needs_int64(*outs, *[s.x for s in segments], *[t.z for t in terms])
    LAUNCHES[0] += 1
    fused_gemm_fwd_kernel[grid](
        tuple(view(o) for o in outs), bounds, tuple(seg_args), tuple(term_args), st, B, Ho, Wo, N,
        NS, *seg_meta, NT, *term_meta, G, *relu, stats is not None, tl_dtype(ref.dtype),
        dot_precision(ref.dtype), dot_upcast(ref.dtype, y.device), big, **cfg)
