"""The fused exchange unit: the ``triton`` and ``auto`` backends of ``hrfast.models.backends``.

For output branch i of inputs x_0 .. x_{n-1} (branch j at 1/2^j resolution)::

    y_i = ReLU( x_i + sum_{j>i} up_{2^(j-i)}(BN(conv1x1(x_j))) + sum_{j<i} chain_{j->i}(x_j) )

Convs that read the same input run as one GEMM: for each branch j, the 1x1 convs of all its
upsample paths are one conv, and the first strided 3x3 convs of all chains leaving j are one
conv (``hrfast.ops.conv``, grouped outputs: each chain keeps its own weights and output, so
gradients reach the official parameters and the state_dict is unchanged).

Two plans, chosen per call:

- **inference** (no gradient needed, BN on running statistics): each output branch is one
  ``exchange_branch`` kernel. The 1x1 convs of the upsample paths run inside it on the
  low-resolution inputs (or, for large factors, as one low-resolution conv per source whose
  output the kernel upsamples by index; ``upsample=``), the last conv of every chain longer
  than one step is a GEMM segment of it, BN is in each segment's epilogue, and y_i is written
  once. A stage-4 unit is 8 to 11 launches.
- **training** (or any call that needs gradients): convs write their raw outputs with the BN
  statistics in the epilogue (``convs(..., stats=True)``: one launch, and one backward launch,
  for all the convs of a level), level by level (the convs that read the inputs, then each
  further chain step); under autocast the unit's weights are first packed into bf16
  channels_last in one launch (:func:`pack_unit`); one ``bn_stats_many`` launch per level (per 3
  convs) makes the batch statistics of its convs and updates the running ones; ``branch_sums``
  applies each level's chain-step BN + ReLU in one launch, and BN, upsampling, the identity,
  the sum and the ReLU of every output branch in one launch, each with a fused backward of
  three launches for all their terms.

``conv="cudnn"`` runs the convs on cuDNN (oneDNN on the CPU) with the same BN and sum
kernels, for the per-shape measurement against the Triton conv (benchmarks/RESULTS.md).

Every choice of the plan is an argument of :class:`FusedExchange`; nothing is read from a
mutable module global. :func:`register_fused_backends` (called by ``hrfast/__init__.py``)
makes the plan the ``triton`` and ``auto`` backends of ``hrfast.models.backends``.
"""
from __future__ import annotations

from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.launch import HAS_TRITON, MAX_SEGMENTS, TRITON_NEEDED, Affine, Segment, Term, Upsample, triton_runs_on
from ..models.backends import register_backend
from ..models.exchange import ExchangeUnit
from .batchnorm import bn_partials, bn_stats_many
from .branch_sum import branch_sum, branch_sums, exchange_branch
from .conv import conv_bn_act, pack_weights
from .conv import convs as convs_op

# Upsample factors whose 1x1 conv runs inside the branch kernel, at the output resolution
# (F^2 times its low-resolution FLOPs, no intermediate tensor). Larger factors run the 1x1 at
# low resolution first. Provisional: the GPU measurement decides (benchmarks/RESULTS.md).
IN_KERNEL_UPSAMPLE = (2,)

# Merged convs that run on cuDNN rather than the Triton GEMM, by (kernel size, stride, input
# channels, output channels of the merged conv). The table of "Per-shape dispatch" in
# benchmarks/RESULTS.md fills it from the GPU measurement (benchmarks/exchange_gpu.py); until
# then it is empty and every conv runs on Triton.
CUDNN_CONVS: FrozenSet[Tuple[int, int, int, int]] = frozenset()


def conv_key(convs: Sequence[nn.Conv2d], stride: int) -> Tuple[int, int, int, int]:
    """A merged conv's entry in a ``cudnn_convs`` table."""
    return convs[0].kernel_size[0], stride, convs[0].in_channels, sum(c.out_channels for c in convs)


def _batch_stats(bn: nn.Module) -> bool:
    return isinstance(bn, nn.BatchNorm2d) and (bn.training or not bn.track_running_stats)


def _pair_ok(conv_m: nn.Module, bn: nn.Module, ks: int, stride: int) -> bool:
    """A conv (+ BN) the kernels implement: no groups or dilation, 'same' padding, and either a
    BatchNorm with affine parameters after a bias-free conv, or a BN folded into the conv
    (``nn.Identity``, bias or not)."""
    if not (isinstance(conv_m, nn.Conv2d) and conv_m.kernel_size == (ks, ks) and conv_m.stride == (stride, stride)
            and conv_m.padding == ((ks - 1) // 2,) * 2 and conv_m.groups == 1 and conv_m.dilation == (1, 1)):
        return False
    if isinstance(bn, nn.Identity):
        return True
    return isinstance(bn, nn.BatchNorm2d) and bn.affine and conv_m.bias is None


def unit_mode(unit: ExchangeUnit) -> Upsample:
    """How ``unit``'s upsample paths come up: nearest, or HRNetV2's bilinear resize."""
    return Upsample.of(unit.upsample, unit.align_corners)


def unit_supported(unit: ExchangeUnit) -> bool:
    """Whether every path of ``unit`` has the structure the kernels implement (nearest or
    bilinear upsampling, 1x1 conv + BN up, strided 3x3 conv + BN chains down)."""
    n = len(unit.channels)
    if n - 1 > MAX_SEGMENTS or unit.upsample not in ("nearest", "bilinear"):
        return False
    modes = set()
    for i in range(unit.num_outputs):
        for j in range(n):
            if j > i:
                path = unit[i][j]
                if not _pair_ok(path[0], path[1], 1, 1):
                    return False
                modes.add(_batch_stats(path[1]))
            elif j < i:
                for step in unit[i][j]:
                    if not _pair_ok(step[0], step[1], 3, 2):
                        return False
                    modes.add(_batch_stats(step[1]))
    return len(modes) <= 1   # one BN mode for the whole unit (model.train() / .eval())


def _affine(conv_m: nn.Conv2d, bn: nn.Module, mean=None, var=None) -> Affine:
    """The affine that follows ``conv_m``'s raw output: its BN (with batch statistics when given)
    or the bias of a folded conv."""
    if isinstance(bn, nn.BatchNorm2d):
        return Affine(bn.weight, bn.bias, bn.running_mean if mean is None else mean,
                      bn.running_var if var is None else var, bn.eps)
    return Affine(bias=conv_m.bias)


def conv_raw(x: torch.Tensor, convs: Sequence[nn.Conv2d], bns: Sequence[nn.Module], stride: int,
             cudnn: bool = False) -> tuple:
    """(raw outputs, their BN partials or None, whether each BN uses batch statistics, convs,
    bns) of convs that read ``x``: one GEMM with the statistics in its epilogue, or one cuDNN
    conv and a partials pass with ``cudnn``. :func:`finish_bn` turns them into affines."""
    return conv_raws([(x, convs, bns, stride)], [cudnn])[0]


def conv_raws(items: Sequence[tuple], cudnn: Sequence[bool], packed: Optional[Dict[int, torch.Tensor]] = None
              ) -> List[tuple]:
    """:func:`conv_raw` of several ``(x, convs, bns, stride)``: the Triton ones are one ``convs``
    op, so their backward is one launch (and one sum of the split-K partials). ``packed``: the
    weights' copies for the kernels, by ``id`` of the conv (:func:`pack_unit`)."""
    out: Dict[int, tuple] = {}
    tri = [k for k in range(len(items)) if not cudnn[k]]
    if tri:
        stats = any(_batch_stats(bn) for k in tri for bn in items[k][2])
        res = convs_op([(items[k][0], [c.weight for c in items[k][1]], items[k][3]) for k in tri], stats=stats,
                       packed=[[packed[id(c)] for c in items[k][1]] for k in tri] if packed else None)
        for k, r in zip(tri, res):
            x, cs, bns, stride = items[k]
            batch = [_batch_stats(bn) for bn in bns]
            out[k] = (r[:len(cs)], r[len(cs):] if any(batch) else None, batch, cs, bns)
    for k in range(len(items)):
        if cudnn[k]:
            x, cs, bns, stride = items[k]
            ks = cs[0].kernel_size[0]
            z = F.conv2d(x, torch.cat([c.weight for c in cs]).to(x.dtype), stride=stride, padding=(ks - 1) // 2)
            batch = [_batch_stats(bn) for bn in bns]
            out[k] = (list(torch.split(z, [c.out_channels for c in cs], dim=1)),
                      bn_partials(z) if any(batch) else None, batch, cs, bns)
    return [out[k] for k in range(len(items))]


def finish_bn(raws: Sequence[tuple]) -> List[Tuple[List[torch.Tensor], List[Affine], List[bool]]]:
    """(outputs, the affine each needs, batch flags) of :func:`conv_raw` results: the batch
    statistics of all of them in one launch per running-statistics mode (``bn_stats_many``),
    which also updates the BNs' running statistics, once."""
    stats = {}
    for update in (True, False):
        need = [k for k, r in enumerate(raws) if r[1] is not None
                and all(bn.training and bn.track_running_stats for bn in r[4]) == update]
        if need:
            items = [(raws[k][1][0], raws[k][1][1], raws[k][0][0].shape[0] * raws[k][0][0].shape[2]
                      * raws[k][0][0].shape[3], raws[k][4]) for k in need]
            stats.update(zip(need, bn_stats_many(items, update)))
    out = []
    for k, (outs, _, batch, convs, bns) in enumerate(raws):
        if k not in stats:
            out.append((outs, [_affine(c, bn) for c, bn in zip(convs, bns)], batch))
            continue
        mean, var = stats[k]
        affines, lo = [], 0
        for c, bn in zip(convs, bns):
            affines.append(_affine(c, bn, mean[lo:lo + bn.num_features], var[lo:lo + bn.num_features]))
            lo += bn.num_features
        out.append((outs, affines, batch))
    return out


def convs_bn(x: torch.Tensor, convs: Sequence[nn.Conv2d], bns: Sequence[nn.Module], stride: int,
             cudnn: bool = False) -> Tuple[List[torch.Tensor], List[Affine], List[bool]]:
    """Raw outputs of convs that read ``x``, the affine each needs, and whether that affine
    uses batch statistics (:func:`conv_raw` then :func:`finish_bn`)."""
    return finish_bn([conv_raw(x, convs, bns, stride, cudnn)])[0]


def pack_unit(unit: ExchangeUnit, dtype: torch.dtype) -> Optional[Dict[int, torch.Tensor]]:
    """The unit's fuse-path conv weights in ``dtype`` and channels_last, by ``id`` of the conv, in
    one launch (``hrfast.ops.conv.pack_weights``), where ``dtype`` is a 16-bit float the weights
    are not in (autocast: float32 parameters, bf16 activations); else None. Once per call, so
    once per training step: the GEMMs then read 16-byte runs of bf16 input channels."""
    if dtype not in (torch.bfloat16, torch.float16):
        return None
    convs = [m for m in unit.modules() if isinstance(m, nn.Conv2d) and m.weight.dtype != dtype]
    if not convs:
        return None
    return dict(zip((id(c) for c in convs), pack_weights([c.weight for c in convs], dtype)))


def _chains_from(unit: ExchangeUnit, j: int) -> List[int]:
    return list(range(j + 1, unit.num_outputs))


def _ups_from(unit: ExchangeUnit, j: int) -> List[int]:
    return list(range(min(j, unit.num_outputs)))


class FusedExchange:
    """The fused forward of an :class:`ExchangeUnit` (installed as ``unit.fused_impl``).

    ``conv``: "triton" (the Triton GEMMs) or "cudnn" (cuDNN convs, Triton BN and sum kernels).
    ``cudnn_convs``: with "triton", the merged convs (:func:`conv_key`) that run on cuDNN.
    ``upsample``: which 1x1 convs run inside the branch kernel: "auto" (the factors in
    ``in_kernel_factors``), "in_kernel" (all) or "low_res" (none).
    ``cuda_only``: apply to CUDA tensors only (the ``auto`` backend)."""

    def __init__(self, conv: str = "triton", upsample: str = "auto", cuda_only: bool = False,
                 cudnn_convs: Iterable[Tuple[int, int, int, int]] = CUDNN_CONVS,
                 in_kernel_factors: Iterable[int] = IN_KERNEL_UPSAMPLE):
        if conv not in ("triton", "cudnn"):
            raise ValueError(f"conv must be 'triton' or 'cudnn', got {conv!r}")
        if upsample not in ("auto", "in_kernel", "low_res"):
            raise ValueError(f"upsample must be 'auto', 'in_kernel' or 'low_res', got {upsample!r}")
        self.conv, self.upsample, self.cuda_only = conv, upsample, cuda_only
        self.cudnn_convs = frozenset(tuple(k) for k in cudnn_convs)
        self.in_kernel_factors = frozenset(int(f) for f in in_kernel_factors)

    def _raws(self, items: Sequence[tuple], packed: Optional[Dict[int, torch.Tensor]] = None) -> List[tuple]:
        """:func:`conv_raws` of ``(x, convs, bns, stride)`` items, each on the backend of the plan."""
        return conv_raws(items, [self.on_cudnn(it[1], it[3]) for it in items], packed)

    def on_cudnn(self, convs: Sequence[nn.Conv2d], stride: int) -> bool:
        """Whether the merged conv of ``convs`` runs on cuDNN in this plan."""
        return self.conv == "cudnn" or conv_key(convs, stride) in self.cudnn_convs

    def applies(self, unit: ExchangeUnit, xs: Sequence[torch.Tensor]) -> bool:
        x0 = xs[0]
        if self.cuda_only and x0.device.type != "cuda":
            return False
        return (all(isinstance(x, torch.Tensor) and x.is_floating_point() for x in xs)
                and triton_runs_on(x0.device) and unit_supported(unit))

    def __call__(self, unit: ExchangeUnit, xs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        unit.check_inputs(xs)
        dtype = xs[0].dtype
        xs = [x.to(dtype) for x in xs]
        needs_grad = torch.is_grad_enabled() and (any(x.requires_grad for x in xs) or
                                                  any(p.requires_grad for p in unit.parameters()))
        batch = any(_batch_stats(m) for m in unit.modules())
        if needs_grad or batch or self.conv == "cudnn":
            return self._train(unit, xs)
        return self._inference(unit, xs)

    # ------------------------------------------------------------------ training plan
    def _train(self, unit: ExchangeUnit, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        """Level by level: every conv that reads an input (the upsample paths' 1x1 and the chains'
        first steps), then each further step of the chains, each level's BN statistics in one
        launch."""
        terms: Dict[int, List[Tuple[int, torch.Tensor, int, Affine, bool]]] = {i: [] for i in range(unit.num_outputs)}
        items, tags = [], []
        for j, x in enumerate(xs):
            for kind, targets, stride in (("up", _ups_from(unit, j), 1), ("down", _chains_from(unit, j), 2)):
                if targets:
                    pairs = [unit[i][j][:2] if kind == "up" else unit[i][j][0][:2] for i in targets]
                    items.append((x, [p[0] for p in pairs], [p[1] for p in pairs], stride))
                    tags.append((kind, j, targets))
        packed = pack_unit(unit, xs[0].dtype)
        raws = self._raws(items, packed)
        chains = []   # [i, j, steps done, z, affine, batch statistics]
        for (zs, affs, bts), (kind, j, targets) in zip(finish_bn(raws), tags):
            for i, z, a, bt in zip(targets, zs, affs, bts):
                if kind == "up":
                    terms[i].append((j, z, 2 ** (j - i), a, bt))
                else:
                    chains.append([i, j, 1, z, a, bt])
        live = [c for c in chains if c[2] < len(unit[c[0]][c[1]])]
        while live:   # BN + ReLU of the previous steps (one launch), then the next convs
            hs = branch_sums([(None, [z], [1], [a], [bt], True) for _, _, _, z, a, bt in live])
            raws = self._raws([(h, [unit[i][j][done][0]], [unit[i][j][done][1]], 2)
                               for h, (i, j, done, _, _, _) in zip(hs, live)], packed)
            for c, ((z,), (a,), (bt,)) in zip(live, finish_bn(raws)):
                c[2], c[3], c[4], c[5] = c[2] + 1, z, a, bt
            live = [c for c in chains if c[2] < len(unit[c[0]][c[1]])]
        for i, j, _, z, a, bt in chains:
            terms[i].append((j, z, 1, a, bt))
        branches = []
        for i in range(unit.num_outputs):
            ts = sorted(terms[i], key=lambda t: t[0])   # the official summation order
            branches.append((xs[i], [t[1] for t in ts], [t[2] for t in ts], [t[3] for t in ts], [t[4] for t in ts],
                             True))
        return branch_sums(branches, unit_mode(unit))   # every output in one launch, and one backward

    # ------------------------------------------------------------------ inference plan
    def _in_kernel(self, factor: int, mode: Upsample) -> bool:
        """Whether an upsample path's 1x1 conv runs inside the branch kernel (a segment reads
        its input by a nearest index only; bilinear paths always run at low resolution)."""
        if mode != Upsample.NEAREST:
            return False
        return self.upsample == "in_kernel" or (self.upsample == "auto" and factor in self.in_kernel_factors)

    def _inference(self, unit: ExchangeUnit, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        terms: Dict[int, List[Term]] = {i: [Term(xs[i])] for i in range(unit.num_outputs)}
        segs: Dict[int, List[Segment]] = {i: [] for i in range(unit.num_outputs)}
        mode = unit_mode(unit)
        for j, x in enumerate(xs):
            ups = _ups_from(unit, j)
            low = [i for i in ups if not self._in_kernel(2 ** (j - i), mode)]
            for i in ups:
                if i not in low:
                    c, bn = unit[i][j][0], unit[i][j][1]
                    segs[i].append(Segment(x, [c.weight], 1, 2 ** (j - i), [_affine(c, bn)]))
            if low:
                pairs = [(unit[i][j][0], unit[i][j][1]) for i in low]
                zs = self._merged(x, [c for c, _ in pairs], [bn for _, bn in pairs], 1, [False] * len(low))
                for i, z in zip(low, zs):
                    terms[i].append(Term(z, 2 ** (j - i), mode=mode))
            downs = _chains_from(unit, j)
            if downs:
                firsts = [unit[i][j][0] for i in downs]
                zs = self._merged(x, [s[0] for s in firsts], [s[1] for s in firsts], 2,
                                  [len(unit[i][j]) > 1 for i in downs])
                for i, h in zip(downs, zs):
                    chain = unit[i][j]
                    if len(chain) == 1:
                        terms[i].append(Term(h))
                        continue
                    for step in chain[1:-1]:
                        h = self._merged(h, [step[0]], [step[1]], 2, [True])[0]
                    last = chain[-1]
                    segs[i].append(Segment(h, [last[0].weight], 2, 1, [_affine(last[0], last[1])]))
        return [exchange_branch(terms[i], segs[i], relu=True) for i in range(unit.num_outputs)]

    def _merged(self, x: torch.Tensor, convs, bns, stride: int, relu: Sequence[bool]) -> List[torch.Tensor]:
        """act(BN(conv(x))) for convs that read x: one Triton GEMM with the BN and ReLU in its
        epilogue, or a cuDNN conv and one elementwise pass per output (the dispatch table)."""
        affs = [_affine(c, bn) for c, bn in zip(convs, bns)]
        if not self.on_cudnn(convs, stride):
            return conv_bn_act(x, [c.weight for c in convs], stride, affs, relu)
        zs, _, _ = convs_bn(x, convs, bns, stride, cudnn=True)
        return branch_sums([(None, [z], [1], [a], [False], r) for z, a, r in zip(zs, affs, relu)])


def exchange_unit(unit: ExchangeUnit, xs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """The fused forward of ``unit`` on inputs ``xs`` (branch j: (B, C_j, H/2^j, W/2^j)),
    whatever backend the unit has installed."""
    return FusedExchange()(unit, xs)


def exchange_unit_ref(unit: ExchangeUnit, xs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Eager twin of :func:`exchange_unit` (the official summation order)."""
    return unit.forward_reference(xs)


class FusedTransition:
    """A transition's (conv 3x3, BN, ReLU) step on the same kernels (``model.transition_impl``)."""

    def __init__(self, fused: FusedExchange):
        self.fused = fused

    def applies(self, x: torch.Tensor) -> bool:
        if self.fused.cuda_only and x.device.type != "cuda":
            return False
        return x.is_floating_point() and triton_runs_on(x.device)

    def __call__(self, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        c, bn = seq[0], seq[1]
        if not _pair_ok(c, bn, 3, c.stride[0]) or c.stride[0] not in (1, 2):
            return seq(x)
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in seq.parameters()))
        if needs_grad or _batch_stats(bn) or self.fused.conv == "cudnn":
            (z,), (a,), (bt,) = convs_bn(x, [c], [bn], c.stride[0], self.fused.on_cudnn([c], c.stride[0]))
            return branch_sum(None, [z], [1], [a], [bt], relu=True)
        return conv_bn_act(x, [c.weight], c.stride[0], [_affine(c, bn)], [True])[0]


def _install(fused: Optional[FusedExchange]):
    def install(model: nn.Module) -> None:
        if not HAS_TRITON:
            raise RuntimeError(f"backend='triton' needs {TRITON_NEEDED}")
        for unit in model.modules():
            if isinstance(unit, ExchangeUnit):
                unit.fused_impl = fused
        if hasattr(model, "transition_impl"):
            model.transition_impl = FusedTransition(fused)
    return install


def register_fused_backends() -> None:
    """Register ``triton`` (the fused units wherever Triton runs) and ``auto`` (on CUDA only;
    without Triton, the reference path) with ``hrfast.models.backends``."""
    register_backend("triton", _install(FusedExchange()))
    if HAS_TRITON:
        register_backend("auto", _install(FusedExchange(cuda_only=True)))
    else:  # pragma: no cover - exercised on machines without triton
        register_backend("auto", lambda model: None)
