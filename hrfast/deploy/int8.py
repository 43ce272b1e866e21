"""The int8 runtime of :func:`hrfast.optimize`: post-training static quantization with
torchao's PT2E flow, lowered by Inductor to oneDNN int8 convolutions (x86 CPUs)."""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import List

import torch
from torch import nn

from ..extras import require
from .model import OptimizedModel
from .plan import Plan
from .torch_runtime import frozen_inference_copy


def _functional_relus(net: nn.Module) -> None:
    """Replace the ``nn.ReLU`` attributes of blocks (``self.relu``) with ``F.relu``, in place.

    The x86 int8 quantizer finds conv-add-ReLU patterns through source partitions. A ReLU
    module called twice, as in the official blocks, forms one partition with two outputs,
    which it rejects. With the functional form, each call is a partition of its own.
    ReLUs inside ``nn.Sequential`` are called once and are left alone (a Sequential runs only
    its registered children)."""
    for module in list(net.modules()):
        if isinstance(module, nn.Sequential):
            continue
        for name, child in list(module._modules.items()):
            if isinstance(child, nn.ReLU):
                del module._modules[name]
                object.__setattr__(module, name, nn.functional.relu)


def calibration_batches(calibration) -> List[torch.Tensor]:
    """``calibration`` (a tensor or an iterable of them) as a list of float32 CPU batches;
    ``ValueError`` naming what was expected otherwise."""
    if calibration is None:
        raise ValueError("dtype='int8' needs calibration: a (N, 3, H, W) float tensor or an iterable of "
                         "them, normalized like the model's inputs")
    batches = [calibration] if isinstance(calibration, torch.Tensor) else list(calibration)
    for b in batches:
        if not (isinstance(b, torch.Tensor) and b.dim() == 4 and b.shape[1] == 3 and b.is_floating_point()):
            got = f"{tuple(b.shape)} {b.dtype}" if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f"calibration must hold (N, 3, H, W) float tensors, got {got}")
    if not batches:
        raise ValueError("calibration is empty")
    return [b.float().cpu() for b in batches]


def _torchao_pt2e():
    """torchao's PT2E entry points; its CUDA-only kernel libraries log load failures on CPU
    builds, which say nothing here and are silenced."""
    log = logging.getLogger("torchao")
    level = log.level
    log.setLevel(logging.ERROR)
    require("torchao", "optimize(dtype='int8')")
    try:
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError as e:
        raise ImportError(f"dtype='int8' needs torchao 0.18 (pip install --no-deps 'hrfast[int8]'): {e}") from e
    finally:
        log.setLevel(level)
    return allow_exported_model_train_eval, prepare_pt2e, convert_pt2e, xiq


def quantize_int8(net: nn.Module, calibration, keep_float=("conv1", "final_layer")) -> nn.Module:
    """Post-training static int8 quantization of an eval-mode, BN-folded ``net`` for x86 CPUs
    (torchao's PT2E flow with ``X86InductorQuantizer``: per-channel symmetric int8 weights,
    per-tensor affine uint8 activations, ranges observed on ``calibration``). The result is
    an exported graph with quantize/dequantize nodes. ``torch.compile`` with freezing then
    lowers it to oneDNN int8 convolutions with ReLU/add fused.

    ``keep_float`` names top-level modules left in float: the stem's first conv (3 input
    channels, little to gain) and the final layer, which writes the heatmaps whose sub-pixel
    shape the decoders read. On the demo's trained model, keeping both in float halves the
    heatmap error (0.094 -> 0.045 of the output scale) and lowers the mean DARK keypoint
    drift from 0.034 to 0.027 heatmap px."""
    batches = calibration_batches(calibration)    # bad input fails before any work
    allow_train_eval, prepare_pt2e, convert_pt2e, xiq = _torchao_pt2e()
    net = copy.deepcopy(net).cpu().float()
    _functional_relus(net)
    # export traces with a batch of 2: a batch of 1 would be specialized (0/1 sizes are static
    # to torch.export) and the graph would refuse other batch sizes later
    example = torch.cat([b[:2] for b in batches])[:2].repeat(2, 1, 1, 1)[:2]
    with torch.no_grad():
        exported = torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},)).module()
        quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
        for name in keep_float:
            quantizer.set_module_name_qconfig(name, None)
        prepared = prepare_pt2e(exported, quantizer)
        for b in batches:
            prepared(b)
        quantized = convert_pt2e(prepared)
    # an exported graph refuses .eval() by default; callers (evaluate, PoseEstimator) use it
    return allow_train_eval(quantized)


@contextlib.contextmanager
def _frozen_call():
    # passed as a compile option, freezing meets the quantized graph's weight prepacking under
    # fake tensors and fails (torch 2.13); the global switch, held around every call
    # (recompiles included), works. Imported here: Inductor's config imports Dynamo, a second
    # of `import hrfast` that most programs never use.
    import torch._inductor.config as inductor_config
    with torch.no_grad(), inductor_config.patch(freezing=True):
        yield


def build(model: nn.Module, plan: Plan, calibration=None, **_) -> OptimizedModel:
    calibration_batches(calibration)
    net = quantize_int8(frozen_inference_copy(model, plan), calibration)
    plan.note("int8 post-training quantization (torchao PT2E, X86InductorQuantizer)",
              "oneDNN int8 convolutions (VNNI) run about twice as fast as bf16")
    plan.note("layout left to Inductor", "it prepacks the int8 weights and picks the activation layout")
    plan.note("torch.compile(dynamic=False), freezing on around every call",
              "weights become constants: oneDNN prepacks them and fuses ReLU/add into the convs")
    net = torch.compile(net, dynamic=False)
    # the int8 graph quantizes its float input itself
    return OptimizedModel(net, plan, model, input_dtype=torch.float32, call_context=_frozen_call)
