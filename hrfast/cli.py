"""Command line: ``hrfast <command>`` or ``python -m hrfast <command>``.

Errors the user can fix (a wrong path, an unknown config key, bad arguments) print one line
``hrfast: error: ...`` and exit with status 2; ``--traceback`` shows the full trace instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
COCO_MINI = REPO_ROOT / "data" / "coco-mini"


def _add_model_args(p: argparse.ArgumentParser, default: str = "w32_256x192") -> None:
    p.add_argument("--config", default=default,
                   help=f"built-in config name (see `hrfast info`) or a YAML file (default: {default})")
    p.add_argument("--backend", default="reference", choices=["reference", "triton", "auto"],
                   help="exchange-unit implementation (default: reference)")


def resolve_config(name_or_path: str):
    """A built-in config name or a YAML path -> Config."""
    from .config import available_configs, get_config, load_config
    if name_or_path in available_configs():
        return get_config(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).exists():
        return load_config(name_or_path)
    return get_config(name_or_path)  # raises with the list of names


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from . import HAS_EXTENSION, __version__, available_configs
    from ._extension import has_cuda_ops
    from .models import HRNet
    from .profile import count_macs, count_parameters

    print(f"hrfast {__version__}  torch {torch.__version__}  C++ ops: {HAS_EXTENSION}  "
          f"CUDA ops: {has_cuda_ops()}  CUDA device: {torch.cuda.is_available()}")
    print(f"{'config':<20} {'input (WxH)':>12} {'params':>12} {'GMACs':>8} {'GFLOPs':>8}")
    for name in available_configs():
        m = HRNet.from_config(name)
        c = count_macs(m, m.input_size)
        w, h = m.input_size
        print(f"{name:<20} {f'{w}x{h}':>12} {count_parameters(m):>12,} {c['macs'] / 1e9:>8.2f} "
              f"{c['flops'] / 1e9:>8.2f}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from .bench import inference_throughput
    from .models import HRNet

    torch.manual_seed(0)
    cfg = resolve_config(args.config)
    model = HRNet.from_config(cfg, backend=args.backend).to(args.device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    r = inference_throughput(model, args.batch, model.input_size, args.device, dtype,
                             warmup=args.warmup, iters=args.iters, channels_last=args.channels_last)
    print(f"{args.config} batch {args.batch} {args.dtype} on {args.device}: "
          f"{r['images_per_s']:.1f} images/s ({r['seconds_per_batch'] * 1e3:.1f} ms/batch)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import model_check
    return model_check(config=args.config, batch=args.batch, out_dir=Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrfast", description=__doc__.split("\n")[0])
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="versions, extension status and the built-in configs (params, GFLOPs)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("bench", help="inference throughput of a model on random inputs")
    _add_model_args(p)
    p.add_argument("--batch", type=int, default=8, help="batch size (default: 8)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="fp32, or autocast to bf16/fp16 (default: fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels_last inputs and weights")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations (default: 2)")
    p.add_argument("--iters", type=int, default=5, help="timed iterations, median reported (default: 5)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="the README's main job (see README)")
    p.add_argument("--config", default="w32_256x192", help="config name or YAML (default: w32_256x192)")
    p.add_argument("--batch", type=int, default=8, help="batch size for the throughput figure (default: 8)")
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from .config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ConfigError, ValueError, NotImplementedError, KeyError) as exc:
        if args.traceback:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"hrfast: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
