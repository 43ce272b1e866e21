"""``hrfast.optimize``: make a model fast on the device it will run on, keeping its outputs.

Inference: fold every BatchNorm into the convolution before it; use channels_last; run the
exchange units on the fused Triton kernels on CUDA. Pick the
dtype: bf16 on CUDA and on CPUs with native bf16 (avx512_bf16 / AMX), else fp32. Then
``torch.compile`` where it helps. Training: channels_last, AMP dtype, compile (BN stays).
Every choice is recorded in ``OptimizedModel.choices`` and printed with ``verbose=True``.
"""
from __future__ import annotations

import copy
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .device import cpu_has_native_bf16

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
           "int8": torch.int8}


def fold_batchnorm(model: nn.Module) -> int:
    """Fold each eval-mode BatchNorm2d into the Conv2d that feeds it, in place; the BN becomes
    ``nn.Identity``. Two patterns cover HRNet: siblings ``convN`` / ``bnN`` (blocks, stem) and
    consecutive ``Conv2d, BatchNorm2d`` inside an ``nn.Sequential`` (transitions, exchange units,
    downsample). Returns the number of folded pairs. The model must be in eval mode."""
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (BN folding uses running statistics)")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            items = list(module._modules.items())
            for (_, a), (bn_name, b) in zip(items, items[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    _fold_into(a, b)
                    module._modules[bn_name] = nn.Identity()
                    folded += 1
        for name, child in list(module._modules.items()):
            if isinstance(child, nn.BatchNorm2d) and name.startswith("bn"):
                conv = module._modules.get("conv" + name[2:])
                if isinstance(conv, nn.Conv2d):
                    _fold_into(conv, child)
                    module._modules[name] = nn.Identity()
                    folded += 1
    return folded


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    fused = fuse_conv_bn_eval(conv, bn)
    conv.weight = fused.weight
    conv.bias = fused.bias


class OptimizedModel(nn.Module):
    """The optimized network behind the original call signature: (B, 3, H, W) float ->
    heatmaps (B, K, h, w) float32. ``choices`` lists (what, why) pairs."""

    def __init__(self, net: nn.Module, dtype: torch.dtype, channels_last: bool, autocast: bool,
                 device_type: str, choices: List[Tuple[str, str]], original: nn.Module):
        super().__init__()
        self.net = net
        self.dtype, self.channels_last, self.autocast = dtype, channels_last, autocast
        # an int8 network quantizes its float input itself, and is compiled with the global
        # freezing switch on (see optimize); another runtime takes float32 and casts itself
        self.input_dtype = torch.float32 if dtype == torch.int8 or isinstance(net, RuntimeNet) else dtype
        self.freeze_globally = dtype == torch.int8
        self.device_type = device_type
        self.choices = choices
        self.inference = not any(p.requires_grad for p in net.parameters())
        self.input_size = getattr(original, "input_size", None)
        self.num_joints = getattr(original, "num_joints", None)
        self.heatmap_size = getattr(original, "heatmap_size", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.freeze_globally:
            import torch._inductor.config as inductor_config
            with torch.no_grad(), inductor_config.patch(freezing=True):
                return self._run(x)
        if self.inference:
            with torch.no_grad():      # frozen (compiled) weights need no autograd
                return self._run(x)
        return self._run(x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast:
            with torch.autocast(self.device_type, dtype=self.dtype):
                return self.net(x).float()
        return self.net(x.to(self.input_dtype)).float()

    def report(self) -> str:
        return "\n".join(f"- {what}: {why}" for what, why in self.choices)


class CudaGraphNet(nn.Module):
    """``net`` replayed from a CUDA graph, one per input shape, dtype and layout: the first
    call of a shape warms up (Triton compiles, cuDNN picks its algorithms) and captures; each
    call copies its input into the graph's static input and replays. The output is a copy, so
    a caller may keep it across calls. Inference only (no autograd)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self._graphs = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, x.stride())
        if key not in self._graphs:
            static = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(2):
                    self.net(static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.no_grad():
                out = self.net(static)
            self._graphs[key] = (graph, static, out)
        graph, static, out = self._graphs[key]
        static.copy_(x)
        graph.replay()
        return out.clone()


class RuntimeNet(nn.Module):
    """A network compiled by another inference runtime (OpenVINO), as a module without
    parameters: ``runner`` maps a (N, 3, H, W) float32 tensor to float32 heatmaps."""

    def __init__(self, runner: Callable[[torch.Tensor], torch.Tensor], name: str):
        super().__init__()
        self.runner, self.name = runner, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x)

    def extra_repr(self) -> str:
        return self.name


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


def _calibration_batches(calibration) -> List[torch.Tensor]:
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
    import logging

    batches = _calibration_batches(calibration)    # bad input fails before any work
    log = logging.getLogger("torchao")
    level = log.level
    log.setLevel(logging.ERROR)      # its CUDA-only kernel libraries fail to load on CPU builds
    try:
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError as e:
        raise ImportError("dtype='int8' needs torchao (pip install --no-deps torchao)") from e
    finally:
        log.setLevel(level)
    net = copy.deepcopy(net).cpu().float()
    _functional_relus(net)
    # export traces with a batch of 2: a batch of 1 would be specialized (0/1 sizes are static
    # to torch.export) and the graph would refuse other batch sizes later
    example = torch.cat([b[:2] for b in batches])[:2]
    example = example.repeat(2, 1, 1, 1)[:2]
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
    return allow_exported_model_train_eval(quantized)


def optimize(model: nn.Module, *, mode: str = "inference", dtype: Optional[str] = None,
             compile: bool = True, device=None, verbose: bool = False, calibration=None,
             runtime: str = "torch") -> OptimizedModel:
    """Return a fast version of ``model`` for ``mode`` = ``"inference"`` or ``"training"``.

    Args:
        dtype: ``None`` picks (bf16 on CUDA and native-bf16 CPUs, else fp32); or ``"fp32"``,
            ``"bf16"``, ``"fp16"``, or ``"int8"`` (CPU inference only, needs ``calibration``
            and torchao: :func:`quantize_int8`).
        calibration: for int8, a (N, 3, H, W) float tensor or an iterable of them, normalized
            like the model's inputs (a few hundred real crops are plenty).
        compile: ``torch.compile`` the network (inference: mode ``max-autotune-no-cudagraphs`` on
            CPU, ``max-autotune`` with CUDA graphs on GPU for fixed shapes).
        device: where it will run (default: the model's device).
        runtime: ``"torch"``, or ``"openvino"`` for CPU inference in fp32 or bf16: the ONNX
            export of the folded network compiled by OpenVINO's CPU plugin (needs the
            openvino package; it compiles in about a second and takes any batch size); or
            ``"auto"``: openvino where it applies and is installed, else torch.
    Inference folds BN and leaves ``model`` untouched (it works on a copy). Training keeps BN,
    shares ``model``'s parameters (so an optimizer over ``model.parameters()`` trains it), and
    runs forward under autocast.
    """
    if mode not in ("inference", "training"):
        raise ValueError(f"mode must be 'inference' or 'training', got {mode!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    choices: List[Tuple[str, str]] = []
    if dtype is None:
        if device.type == "cuda":
            dt, why = torch.bfloat16, "CUDA: bf16 tensor cores"
        elif cpu_has_native_bf16():
            dt, why = torch.bfloat16, "CPU has native bf16 (avx512_bf16/AMX): oneDNN bf16 convolutions"
        else:
            dt, why = torch.float32, "CPU without native bf16: bf16 would be emulated and slower"
    else:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(set(_DTYPES))} or None, got {dtype!r}")
        dt, why = _DTYPES[dtype], "requested"
    if dt == torch.int8 and (mode != "inference" or device.type != "cpu"):
        raise ValueError("dtype='int8' is for inference on the CPU (x86 oneDNN int8); "
                         "use bf16 on CUDA and for training")
    if dt == torch.int8 and not compile:
        raise ValueError("dtype='int8' needs compile=True: only Inductor lowers the quantized graph to int8 kernels")
    choices.append((f"dtype {str(dt).replace('torch.', '')}", why))
    if runtime not in ("torch", "openvino", "auto"):
        raise ValueError(f"runtime must be 'torch', 'openvino' or 'auto', got {runtime!r}")
    ov_fits = mode == "inference" and device.type == "cpu" and dt in (torch.float32, torch.bfloat16)
    if runtime == "auto":
        import importlib.util
        runtime = "openvino" if ov_fits and importlib.util.find_spec("openvino") is not None else "torch"
        choices.append((f"runtime {runtime} (auto)", "OpenVINO for CPU inference in fp32/bf16 when installed "
                        "(it measured faster there), else torch"))
    elif runtime == "torch" and ov_fits:
        choices.append(("runtime torch", "runtime='openvino' (opt-in, needs the openvino package) measured "
                        "1.0-1.8x faster on the development CPU in fp32 and bf16"))
    if runtime == "openvino":
        if mode != "inference":
            raise ValueError("runtime='openvino' is for inference; training runs on torch")
        if device.type != "cpu":
            raise ValueError(f"runtime='openvino' runs on the CPU, got device {device}")
        if dt not in (torch.float32, torch.bfloat16):
            raise ValueError(f"runtime='openvino' runs fp32 or bf16, got dtype {str(dt).replace('torch.', '')}")

    if mode == "inference":
        net = copy.deepcopy(model).eval()
        n = fold_batchnorm(net)
        choices.append((f"folded {n} BatchNorm layers into their convolutions", "one kernel per conv, no BN pass"))
        if runtime == "openvino":
            return _reported(_openvino(net, dt, choices, model), mode, device, verbose)
        for p in net.parameters():
            p.requires_grad_(False)
        autocast = False
        if dt == torch.int8:
            net = quantize_int8(net, calibration)
            choices.append(("int8 post-training quantization (torchao PT2E, X86InductorQuantizer)",
                            "oneDNN int8 convolutions (VNNI) run about twice as fast as bf16"))
        elif dt != torch.float32:
            net = net.to(dt)
            choices.append(("weights cast to " + str(dt).replace("torch.", ""), "no per-call autocast casts"))
    else:
        net = model.train()
        autocast = dt != torch.float32
        if autocast:
            choices.append((f"autocast {str(dt).replace('torch.', '')}", "fp32 master weights, low-precision math"))
        choices.append(("the optimizer is the caller's", "hrfast.engine.optim.build_optimizer gives torch's fused "
                        "Adam/SGD step, as `hrfast train` uses (about 5x faster than the default Adam on the CPU)"))
    channels_last = dt != torch.int8
    if channels_last:
        net = net.to(device=device, memory_format=torch.channels_last)
        choices.append(("channels_last", "oneDNN/cuDNN convolutions run natively in NHWC"))
    else:
        choices.append(("layout left to Inductor", "it prepacks the int8 weights and picks the activation layout"))
    if hasattr(net, "set_backend"):
        from .ops._triton import HAS_TRITON
        if device.type == "cuda" and HAS_TRITON:
            net.set_backend("triton")
            choices.append(("exchange units on the fused Triton kernels",
                            "BN, upsample, sum and ReLU in one pass per output branch"))
        else:
            net.set_backend("reference")
            choices.append(("exchange units on the reference path",
                            "the Triton kernels need a GPU (the CPU interpreter is for tests only)"))
    if compile:
        if mode == "inference" and device.type == "cuda":
            net = torch.compile(net, mode="max-autotune", dynamic=False)
            choices.append(("torch.compile(mode='max-autotune', dynamic=False)",
                            "autotuned kernels and CUDA graphs for the fixed input shape"))
        elif mode == "inference":
            if dt == torch.int8:
                # passed as a compile option, freezing meets the quantized graph's weight
                # prepacking under fake tensors and fails (torch 2.13); the global switch,
                # held around every call (recompiles included), works: OptimizedModel.freeze_globally
                net = torch.compile(net, dynamic=False)
            else:
                net = torch.compile(net, dynamic=False, options={"freezing": True})
            choices.append(("torch.compile(dynamic=False, freezing=True)",
                            "weights become constants: oneDNN prepacks them and fuses ReLU/add into the convs"))
        else:
            net = torch.compile(net)
            choices.append(("torch.compile", "fuses elementwise work in forward and backward"))
    elif mode == "inference" and device.type == "cuda":
        net = CudaGraphNet(net)
        choices.append(("no torch.compile; a CUDA graph per input shape",
                        "one replay instead of a launch per kernel (the fused units are launch-bound)"))
    else:
        choices.append(("no torch.compile", "compile=False"))
    return _reported(OptimizedModel(net, dt, channels_last, autocast, device.type, choices, model),
                     mode, device, verbose)


def _reported(out: OptimizedModel, mode: str, device: torch.device, verbose: bool) -> OptimizedModel:
    if verbose:
        print(f"hrfast.optimize(mode={mode!r}) on {device}:\n{out.report()}")
    return out


def _openvino(net: nn.Module, dt: torch.dtype, choices: List[Tuple[str, str]],
              original: nn.Module) -> OptimizedModel:
    """optimize(runtime="openvino"): the BN-folded eval ``net`` through ONNX into OpenVINO's
    CPU plugin."""
    from .export import openvino_runner

    precision = "bf16" if dt == torch.bfloat16 else "f32"
    runner = openvino_runner(net.cpu(), precision)
    choices += [(f"OpenVINO CPU plugin, inference precision {precision}",
                 "its graph compiler fuses conv+ReLU/add and prepacks weights; it measured 1.0-1.8x "
                 "faster than the torch path on the development CPU and compiles in about a second"),
                ("no torch.compile", "the runtime compiles the graph itself")]
    return OptimizedModel(RuntimeNet(runner, f"OpenVINO {precision}"), dt, False, False, "cpu", choices, original)
