"""Model weights from the files people have: what the file holds, whether it fits the model, and
what to pass when it does not.

``state_dict_of`` finds the state_dict in the layouts in use: a plain state_dict (the official
model zoo, hrfast's ``model_best.pth``), the official training ``checkpoint.pth``
(``{'epoch', 'model': 'pose_hrnet', 'state_dict', 'perf', 'optimizer'}``), hrfast's training
checkpoint (``{'model': state_dict, 'optimizer', ...}``) and ``{'state_dict': ...}``; DataParallel
``module.`` prefixes are removed, as are the segmentation repository's ``model.`` and mmpose's
``backbone.`` / ``keypoint_head.`` / ``head.`` (:func:`from_mmpose`). ``load_weights`` loads
it strictly; a mismatch is one line with the first keys that differ and, when a built-in
config fits the file, which one to pass. A legacy (non-zip) file has no CRCs, so its values
are checked for plausibility instead.
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

from .safe_load import CheckpointError, load_checkpoint

# no trained HRNet weight comes near this; a flipped exponent bit in a float32 does
PLAUSIBLE_MAGNITUDE = 1e4


def state_dict_of(obj, path) -> Dict[str, torch.Tensor]:
    """The state_dict inside a loaded checkpoint object (module doc)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "optimizer" in obj:
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        kind = "an empty dict" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise CheckpointError(f"checkpoint {path} holds {kind}, not a state_dict (a mapping of parameter names "
                              f"to tensors)")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is not a state_dict: entry {bad!r} is a "
                              f"{type(obj[bad]).__name__}, not a tensor")
    if all(k.startswith("module.") for k in obj):        # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    if any(k.startswith("model.") for k in obj) and all(k.startswith(("model.", "loss.")) for k in obj):
        # the segmentation repository's FullModel: the net as ``model``, its loss (class weights) as ``loss``
        obj = {k[len("model."):]: v for k, v in obj.items() if k.startswith("model.")}
    if any(k.startswith("backbone.") for k in obj):
        obj = from_mmpose(obj, path)
    return obj


# the final 1x1 conv of mmpose's top-down heatmap head: 0.x TopdownHeatmapSimpleHead, 1.x HeatmapHead
MMPOSE_HEADS = ("keypoint_head.final_layer.", "head.final_layer.")


def from_mmpose(obj: Dict[str, torch.Tensor], path) -> Dict[str, torch.Tensor]:
    """An mmpose top-down HRNet state_dict (``backbone.*`` plus the head's ``final_layer``,
    mmpose 0.x or 1.x) in the official pose_hrnet keys. mmpose's HRNet backbone names its
    modules as the official code does, so the keys only lose their prefix. A head with more
    than its final conv (deconvolutions, the HRNetV2 concat head) is one clear error."""
    out, other = {}, []
    for key, value in obj.items():
        if key.startswith("backbone."):
            out[key[len("backbone."):]] = value
        elif key.startswith(MMPOSE_HEADS):
            out["final_layer." + key.split("final_layer.", 1)[1]] = value
        elif not key.startswith("data_preprocessor."):   # 1.x's normalisation constants
            other.append(key)
    if other or "final_layer.weight" not in out:
        raise CheckpointError(f"checkpoint {path} is an mmpose model whose head hrfast does not load "
                              f"({', '.join(other[:3]) or 'no final_layer'}): hrfast loads top-down HRNet "
                              f"heatmap models whose head is one final conv (keypoint_head.final_layer in mmpose "
                              f"0.x, head.final_layer in 1.x)")
    return out


def check_plausible(state: Dict[str, torch.Tensor], path) -> None:
    """Finite values of a sane size, positive BN variances: what a file with no CRC can be
    checked for."""
    for key, t in state.items():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"checkpoint {path} is damaged: {key} holds NaN or inf")
        if float(t.abs().max()) > PLAUSIBLE_MAGNITUDE:
            raise CheckpointError(f"checkpoint {path} is damaged: {key} holds {float(t.abs().max()):.3g}, "
                                  f"beyond any trained weight (a flipped bit?)")
        if key.endswith("running_var") and bool((t <= 0).any()):
            raise CheckpointError(f"checkpoint {path} is damaged: {key} holds a BN variance <= 0")


def read_weights(path) -> Dict[str, torch.Tensor]:
    """The state_dict of the checkpoint file ``path``, read as data only (``safe_load``)."""
    path = Path(path)
    state = state_dict_of(load_checkpoint(path), path)
    if not zipfile.is_zipfile(path):
        warnings.warn(f"checkpoint {path} is a legacy (non-zip) file: it has no CRCs, so damage shows only "
                      f"as implausible values (checked)", RuntimeWarning, stacklevel=2)
        check_plausible(state, path)
    return state


def mismatch(model: nn.Module, state: Dict[str, torch.Tensor]) -> Optional[str]:
    """What keeps ``state`` from loading strictly into ``model``, in one line (the first three
    missing, unexpected and differently shaped keys), or None when it fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {_shape(state[k])} in the file, {_shape(own[k])} in the model"
              for k in own if k in state and state[k].shape != own[k].shape]
    parts = []
    for name, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{name}: {', '.join(items[:3])}{more}")
    return "; ".join(parts) or None


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"


def joints_of(state: Dict[str, torch.Tensor]) -> Optional[int]:
    """The keypoint count a pose state_dict predicts (its final layer's outputs)."""
    w = state.get("final_layer.weight")
    return int(w.shape[0]) if w is not None and w.dim() == 4 else None


def fitting_configs(state: Dict[str, torch.Tensor]) -> List[str]:
    """The built-in configs whose network has exactly the file's keys and shapes, whatever
    their keypoint count (built on the meta device: no memory, no time)."""
    from .config import available_configs, get_config
    from .models import HRNet
    joints = joints_of(state)
    found = []
    for name in available_configs():
        # the spec's joints, not the config's: a dataset key may tie the config to its count
        extra = {} if joints is None else {"num_joints": joints}
        with torch.device("meta"):
            model = HRNet.from_config(get_config(name), **extra)
        if mismatch(model, state) is None:
            found.append(name)
    return found


def load_pose_model(path, config: Optional[str] = None, backend: str = "reference") -> nn.Module:
    """A pose HRNet with the weights of ``path`` (official, hrfast or mmpose layout), its
    keypoint count taken from the file. ``config`` names the input size and widths; by
    default the built-in config whose network fits the file (the first, when several do:
    they differ only in input size). A file that no built-in config fits, without ``config``,
    is one CheckpointError."""
    from .config import resolve_config
    from .models import HRNet
    state = read_weights(path)
    name = config or (fitting_configs(state) or [None])[0]
    if name is None:
        raise CheckpointError(f"checkpoint {path} fits no built-in config: pass config= (a name or a YAML)")
    joints = joints_of(state)
    model = HRNet.from_config(resolve_config(str(name)), backend=backend,
                              **({} if joints is None else {"num_joints": joints}))
    load_weights(model, path, state)
    return model


def load_family_model(raw, checkpoint, device="cpu") -> nn.Module:
    """The net of a parsed experiment YAML (:func:`hrfast.build_model`) with the weights of
    ``checkpoint`` (strict, weights only), on ``device``, in eval mode."""
    from .models import build_model
    model = build_model(raw)
    load_weights(model, checkpoint)
    return model.to(device).eval()


def load_weights(model: nn.Module, checkpoint, state: Optional[Dict[str, torch.Tensor]] = None) -> None:
    """Load the checkpoint file into ``model`` with ``strict=True`` (``state``: its state_dict,
    when already read); a file that does not fit is one ``ValueError`` naming the file, what
    differs and what to pass instead."""
    path = Path(checkpoint)
    state = read_weights(path) if state is None else state
    problem = mismatch(model, state)
    if problem is not None:
        raise ValueError(f"checkpoint {path} does not fit the model: {problem}{_hint(model, state)}")
    model.load_state_dict(state, strict=True)


def _hint(model: nn.Module, state: Dict[str, torch.Tensor]) -> str:
    fits = fitting_configs(state)
    joints, ours = joints_of(state), getattr(model, "num_joints", None)
    extra = f" --set MODEL.NUM_JOINTS={joints}" if joints is not None and joints != ours else ""
    if joints == 16 and ours != 16:
        extra += " (16 joints: an MPII model; predict recognises it)"
    if joints == 133 and ours != 133:
        extra += " (133 joints: a COCO-WholeBody model; predict recognises it)"
    if fits:
        return f". It is a {' / '.join(fits)} network: pass --config {fits[0]}{extra}"
    if extra:
        return f". It predicts {joints} joints: pass{extra}"
    return ""


def load_pretrained(model: nn.Module, path, layers=("*",)) -> str:
    """Initialise ``model`` from a checkpoint whose layers share its names, as the official
    ``init_weights`` does with ``MODEL.PRETRAINED`` and ``MODEL.EXTRA.PRETRAINED_LAYERS``: an
    ImageNet checkpoint of HRNet-Image-Classification (``hrnet_w32-36af842e.pth``: the same
    stem, stages and transitions, plus a classification head) or a pose checkpoint. Tensors
    whose top-level name is in ``layers`` (``"*"``: all) and whose shape matches are copied;
    the rest keep their initialisation. Returns one line saying what was loaded and skipped;
    a missing file, or one that shares no tensor with the model, is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MODEL.PRETRAINED not found: {path}")
    state = read_weights(path)
    own = model.state_dict()
    wanted = set(layers)
    chosen, outside, absent, shape = {}, [], [], []
    for key, value in state.items():
        if "*" not in wanted and key.split(".")[0] not in wanted:
            outside.append(key)
        elif key not in own:
            absent.append(key)
        elif own[key].shape != value.shape:
            shape.append(key)
        else:
            chosen[key] = value
    if not chosen:
        raise CheckpointError(f"MODEL.PRETRAINED {path} shares no tensor with the network (of {len(state)}, "
                              f"{len(outside)} are outside PRETRAINED_LAYERS, {len(absent)} are not in it, "
                              f"{len(shape)} differ in shape): is it an HRNet of this width?")
    model.load_state_dict(chosen, strict=False)
    kept = sorted({k.split(".")[0] for k in chosen})
    parts = [f"{len(outside)} outside MODEL.EXTRA.PRETRAINED_LAYERS ({_tops(outside)})" if outside else "",
             f"{len(absent)} not in this network ({_tops(absent)})" if absent else "",
             f"{len(shape)} of another shape ({', '.join(shape[:3])})" if shape else ""]
    skipped = "; ".join(p for p in parts if p) or "none"
    return (f"MODEL.PRETRAINED {path}: loaded {len(chosen)} of the network's {len(own)} tensors "
            f"({', '.join(kept)}); skipped {skipped}")


def _tops(keys) -> str:
    tops = sorted({k.split(".")[0] for k in keys})
    return ", ".join(tops[:6]) + (", ..." if len(tops) > 6 else "")
