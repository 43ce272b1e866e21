"""What every launcher of hrfast's Triton kernels shares: whether Triton can run, the target
the launches choose for (a GPU, real or offline, or the CPU interpreter), strided views,
dtype choices, the affine/segment/term arguments, and the launch counter.

Triton is optional here: without it (or with one older than 3.6) ``HAS_TRITON`` is False and
the rest still imports, so the ops can say what they need. The kernels
and their launchers are one module per kernel family: ``fused_gemm`` (the gather-GEMM
forward and the conv backward), ``batchnorm`` (train-mode statistics) and ``branch_sum`` (the
output branches' sums and their fused backward). Most take several problems of different
shapes a launch: a 1-D grid in which problem k owns the programs ``offsets[k] <= pid <
offsets[k + 1]``. Their ``torch.library`` ops are ``hrfast.ops.conv``,
``hrfast.ops.batchnorm`` and ``hrfast.ops.branch_sum``.

The ops are ``torch.library.custom_op`` with explicit fake impls rather than ``triton_op``: a
``triton_op`` is traced into its kernel by ``torch.compile``, and that trace cannot run in the
Triton interpreter (pytorch/pytorch#152868). As opaque custom ops they compile with
``fullgraph=True``, capture in CUDA graphs and pass ``opcheck`` on the CPU interpreter too.
"""
from __future__ import annotations

import contextlib
import enum
import os
import threading
from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional, Sequence

import torch
from packaging.version import Version

# The kernels take tuples of tensors and scalars, and constexpr tuples of per-problem choices
# indexed in static loops; the offline sm_90a compile checks them under Triton 3.6 (the GPU
# image's), 3.8 and 3.9. An older Triton counts as none, so nothing fails inside a launch.
TRITON_NEEDED = "Triton 3.6 or newer (pip install 'hrfast[triton]')"

try:  # Triton is an optional dependency
    import triton
    if Version(triton.__version__).release < (3, 6):
        raise ImportError(f"triton {triton.__version__} is older than 3.6")

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised on machines without triton
    HAS_TRITON = False

FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
MAX_SEGMENTS = 3   # a 4-branch unit's output sums at most 3 other branches
MAX_TERMS = 4      # the identity plus 3 precomputed terms
MAX_GROUPS = 3     # the first convs of at most 3 chains leave one branch


class _LaunchState:
    """The launch counter and the offline-GPU switch. Private: launchers call
    :func:`record_launch`, everyone else :func:`count_launches` and :func:`offline_gpu`.
    Process-wide rather than per thread, because autograd runs CUDA backward passes on its
    own device threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.launches = 0
        self.offline = 0


_STATE = _LaunchState()


def record_launch(n: int = 1) -> None:
    """Called by every launcher, once per kernel launch (and per torch reduction it runs)."""
    with _STATE.lock:
        _STATE.launches += n


class LaunchCount:
    """The launches made inside a :func:`count_launches` block (``.n``, read at any time)."""

    def __init__(self):
        self._start = _STATE.launches
        self._end: Optional[int] = None

    @property
    def n(self) -> int:
        return (_STATE.launches if self._end is None else self._end) - self._start


@contextlib.contextmanager
def count_launches() -> Iterator[LaunchCount]:
    """``with count_launches() as c: ...`` then ``c.n``: the kernels launched in the block."""
    count = LaunchCount()
    try:
        yield count
    finally:
        count._end = _STATE.launches


@contextlib.contextmanager
def offline_gpu() -> Iterator[None]:
    """Launches inside the block take the GPU's choices (tiles, operand dtypes) for CPU
    tensors: with Triton's driver set to an offline sm_90a target, the kernels then compile
    for the GPU on a machine without one (``benchmarks/offline_compile.py``)."""
    with _STATE.lock:
        _STATE.offline += 1
    try:
        yield
    finally:
        with _STATE.lock:
            _STATE.offline -= 1


def on_gpu(device: torch.device) -> bool:
    """Whether launches on ``device`` take the GPU's choices (a real or an offline target)."""
    return device.type == "cuda" or _STATE.offline > 0


def triton_runs_on(device: torch.device) -> bool:
    """Whether the Triton kernels can run on ``device``: CUDA, or CPU under the interpreter."""
    if not HAS_TRITON:
        return False
    if on_gpu(device):
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def interpreter_problem() -> Optional[str]:
    """Why Triton's CPU interpreter, where chosen (``TRITON_INTERPRET=1``), cannot run hrfast's
    kernels with the installed packages (one line), or None. Triton 3.6's interpreter (the GPU
    image's Triton) turns an int inside a tuple argument into a 1-element array and reads it
    back with ``int()``, which NumPy 2.4 and newer refuse ("only 0-dimensional arrays can be
    converted"); 3.7 squeezes it first."""
    if not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1":
        return None
    import numpy
    if Version(triton.__version__).release[:2] < (3, 7) and Version(numpy.__version__).release[:2] >= (2, 4):
        return (f"Triton {triton.__version__}'s CPU interpreter cannot run hrfast's kernels with NumPy "
                f"{numpy.__version__}: install 'numpy<2.4' or 'triton>=3.7'")
    return None


def require_triton(device: torch.device, what: str) -> None:
    if not HAS_TRITON:
        raise RuntimeError(f"{what} needs {TRITON_NEEDED}")
    if not triton_runs_on(device):
        raise RuntimeError(f"{what} runs on CUDA, or on the CPU only under TRITON_INTERPRET=1; got tensors on {device}")
    if not on_gpu(device) and (problem := interpreter_problem()):
        raise RuntimeError(f"{what}: {problem}")


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


def block_rows(n: int, cap: int = 1024) -> int:
    """A power of two covering n, between 16 and cap."""
    return max(16, min(cap, 1 << (max(int(n), 1) - 1).bit_length()))


def stats_tile(M: int, P: int) -> int:
    """The pixel tile of a (P, N) partial-statistics buffer over M pixels: with power-of-two
    tiles and P = ceil(M / tile), next_pow2(ceil(M / P)) is that tile (see the tests)."""
    return 1 << (-(-M // max(P, 1)) - 1).bit_length()


class AffineMode(enum.IntEnum):
    """What an :class:`Affine` applies; the kernels take it as a constexpr int."""
    NONE = 0        # the identity
    BIAS = 1        # a bias alone (a BatchNorm folded into its conv)
    BATCHNORM = 2   # scale = w / sqrt(var + eps), shift = b - mean * scale


class Upsample(enum.IntEnum):
    """How a term at 1/F of the output's resolution is brought up to it (a constexpr int in
    the kernels). Bilinear follows ``F.interpolate(size=...)``: source = (dst + 0.5) * in / out
    - 0.5 (clamped at 0), or dst * (in - 1) / (out - 1) with ``align_corners``."""
    NEAREST = 0             # an index: z[dst // F]
    BILINEAR = 1            # align_corners=False (HRNetV2's default)
    BILINEAR_ALIGNED = 2    # align_corners=True

    @classmethod
    def of(cls, mode: str, align_corners: bool = False) -> "Upsample":
        """The mode of an exchange unit's ``upsample`` ("nearest" or "bilinear")."""
        if mode == "nearest":
            return cls.NEAREST
        if mode == "bilinear":
            return cls.BILINEAR_ALIGNED if align_corners else cls.BILINEAR
        raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {mode!r}")

    @classmethod
    def code(cls, value) -> int:
        """``value`` (a member or its int) as the kernels' constexpr int. Checked against the
        members' values, not by ``Upsample(value)``: the Dynamo of torch 2.11 (the GPU image's)
        cannot build an enum inside a compiled region, and an op front runs in one."""
        code = int(value)
        if code not in UPSAMPLE_CODES:
            raise ValueError(f"upsample must be one of {sorted(UPSAMPLE_CODES)} (Upsample), got {value!r}")
        return code


UPSAMPLE_CODES = frozenset(int(m) for m in Upsample)


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
    def mode(self) -> AffineMode:
        if self.var is not None:
            return AffineMode.BATCHNORM
        return AffineMode.BIAS if self.bias is not None else AffineMode.NONE

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


def prefix_sums(counts: Iterable[int]) -> tuple:
    """(0, c0, c0 + c1, ...): where item k starts and ends, item k having counts[k] entries (the
    flat lists of the op schemas, the programs of a launch of several problems)."""
    out = [0]
    for n in counts:
        out.append(out[-1] + int(n))
    return tuple(out)


def spans(counts: Iterable[int]) -> Iterator[tuple]:
    """(lo, hi) of each item's entries in the op schemas' flat lists, item k having counts[k]."""
    starts = prefix_sums(counts)
    return zip(starts[:-1], starts[1:])


def elementwise_block(device: torch.device) -> int:
    """Elements a program of the 1-D elementwise kernels (masks, casts, sums of partials)."""
    return 1024 if on_gpu(device) else 256


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
    """An elementwise term ``affine(z)`` brought up by ``factor`` (``mode``: :class:`Upsample`)."""
    z: torch.Tensor
    factor: int = 1
    affine: Affine = field(default_factory=Affine)
    mode: int = 0
