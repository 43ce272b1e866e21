"""Command line: ``hrfast <command>`` or ``python -m hrfast <command>``.

Errors the user can fix (a wrong path, an unknown config key, bad arguments) print one line
``hrfast: error: ...`` and exit with status 2; ``--traceback`` shows the full trace instead.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from pathlib import Path
from typing import List, Optional

import torch

from . import __version__
from ._extension import HAS_EXTENSION, built_against, has_cuda_ops, parallel_threads
from .benchmarking import available_inference_variants, bar_chart, compare_report, emit_report, inference_throughput
from .check import model_check
from .config import DATASETS, ConfigError, available_configs, merge_config, merge_dotted, resolve_config
from .data.boxes import boxes_for_images
from .data.keypoints import KeypointSet
from .data.mpii import MPII16
from .data.synthetic import KEYPOINT_SETS, make_synthetic_coco, make_synthetic_mpii
from .data.transforms import check_image_file
from .data.wholebody import NUM_WHOLEBODY, WHOLEBODY133
from .demo import run_demo
from .deploy import maybe_optimize
from .deploy.plan import RUNTIMES
from .detect import LAYOUTS, build_detector, no_person_hint
from .device import cpu_has_native_bf16
from .engine.evaluate import evaluate_checkpoint, format_stats
from .engine.train import train
from .extras import EXTRAS, MissingExtra
from .inference import inference_settings
from .kernels.launch import HAS_TRITON, TRITON_NEEDED, interpreter_problem, triton_runs_on
from .models import HRNet, build_model, family_configs
from .ops.decode import METHODS as DECODE_METHODS
from .outputs import check_output_dir, check_output_file
from .predictor import PoseEstimator, predict_images
from .profile import count_macs, count_parameters
from .settings import settings_of
from .tasks import TASKS
from .tasks import run as run_task
from .video import is_footage, run_video
from .weights import joints_of, load_weights, read_weights


def _add_model_args(p: argparse.ArgumentParser, default: str = "w32_256x192",
                    backend_default: Optional[str] = "reference") -> None:
    p.add_argument("--config", default=default,
                   help=f"built-in config name (see `hrfast info`) or a YAML file (default: {default})")
    p.add_argument("--backend", default=backend_default, choices=["reference", "triton", "auto"],
                   help="exchange-unit implementation: triton = fused kernels (CUDA) (default: "
                        + (backend_default or "the config's HRFAST.BACKEND, auto") + ")")


def environment_lines() -> List[str]:
    """What ``hrfast info`` says of the installation before the configs: versions, the native
    ops, the optional packages, and a Triton interpreter that cannot run the kernels."""
    built = f", built against torch {built_against()}" if built_against() else ""
    lines = [f"hrfast {__version__}  torch {torch.__version__}  C++ ops: {HAS_EXTENSION}  "
             f"(on {parallel_threads()} of {torch.get_num_threads()} threads{built})  "
             f"CUDA ops: {has_cuda_ops()}  CUDA device: {torch.cuda.is_available()}  "
             f"CPU native bf16: {cpu_has_native_bf16()}"]
    # the optional packages behind optimize's paths and bench's rows
    optional = {"triton": "fused exchange units (CUDA)", "torchao": "optimize(dtype='int8', runtime='torch')",
                "nncf": "optimize(dtype='int8') on OpenVINO",
                "openvino": "optimize's default CPU runtime", "onnxruntime": "optimize(runtime='onnxruntime')"}
    found = []
    for pkg, use in optional.items():
        try:
            found.append(f"{pkg} {importlib.metadata.version(pkg)} ({use})")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{pkg} not installed ({use}: pip install 'hrfast[{EXTRAS[pkg][1]}]')")
    lines.append("optional: " + "; ".join(found))
    problem = interpreter_problem()
    if problem:
        lines.append(f"TRITON_INTERPRET=1: {problem}")
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    print("\n".join(environment_lines()))
    print(f"{'config':<36} {'input (WxH)':>12} {'params':>12} {'GMACs':>8} {'GFLOPs':>8}")
    for name in available_configs() + family_configs():
        with torch.device("meta"):   # shapes only: no weights allocated, no arithmetic done
            m = build_model(name)
        c = count_macs(m, m.input_size)
        w, h = m.input_size
        print(f"{name:<36} {f'{w}x{h}':>12} {count_parameters(m):>12,} {c['macs'] / 1e9:>8.2f} "
              f"{c['flops'] / 1e9:>8.2f}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.compare:
        return _bench_compare(args)

    torch.manual_seed(0)
    model = build_model(args.config, backend=args.backend).to(args.device)   # any of the HRNet family
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    r = inference_throughput(model, args.batch, model.input_size, args.device, dtype,
                             warmup=args.warmup, iters=args.iters, channels_last=args.channels_last)
    print(f"{args.config} batch {args.batch} {args.dtype} on {args.device}: "
          f"{r['images_per_s']:.1f} images/s ({r['seconds_per_batch'] * 1e3:.1f} ms/batch)")
    return 0


def _bench_compare(args: argparse.Namespace) -> int:
    dev = torch.device(args.device)
    variants = None
    if args.variants:
        variants = tuple(v.strip() for v in args.variants.split(","))
        known = available_inference_variants(dev)
        if any(v not in known for v in variants) or variants[0] != "eager fp32":
            raise ValueError(f"--variants must start with 'eager fp32' (the baseline) and name only "
                             f"{', '.join(known)}; got {args.variants!r}")
    text, rows = compare_report(args.config, args.batch, dev, variants, args.iters, args.train,
                                isolate=False if args.no_isolate else None)
    emit_report(text, args.report)
    if args.png:
        bar_chart(rows, args.png, f"{args.config} inference, batch {args.batch}, {dev.type}")
        print(f"chart written to {args.png}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    return model_check(config=args.config, batch=args.batch, out_dir=Path(args.out) if args.out else None)


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.out, epochs=args.epochs, num_train=args.num_train, num_val=args.num_val,
             batch=args.batch, workers=args.workers, overrides=args.set, progress=not args.quiet)
    return 0


def _training_config(args: argparse.Namespace):
    cfg = resolve_config(args.config)
    over = {}
    if getattr(args, "data", None):
        root = Path(args.data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data folder not found: {root}")
        over["DATASET"] = {"ROOT": str(root)}
    if getattr(args, "epochs", None) is not None:
        over.setdefault("TRAIN", {})["END_EPOCH"] = args.epochs
    if getattr(args, "batch", None) is not None:
        over.setdefault("TRAIN", {})["BATCH_SIZE_PER_GPU"] = args.batch
        over.setdefault("TEST", {})["BATCH_SIZE_PER_GPU"] = args.batch
    if getattr(args, "workers", None) is not None:
        over["WORKERS"] = args.workers
    if getattr(args, "backend", None):
        over["HRFAST"] = {"BACKEND": args.backend}
    cfg = merge_dotted(merge_config(cfg, over), args.set)   # every value checked before any work
    if getattr(args, "dataset", None):
        over = {"DATASET": {"DATASET": args.dataset}}
        if args.dataset == "coco-wholebody":          # its 133 keypoints, whatever the config's net had
            over["MODEL"] = {"NUM_JOINTS": NUM_WHOLEBODY}
        cfg = merge_config(cfg, over)
    if getattr(args, "synthetic", False):
        cfg = _synthetic_data(cfg, args)
    return cfg


def _synthetic_data(cfg, args: argparse.Namespace):
    """Generate (or reuse) the synthetic data under OUT/data in the config's dataset format,
    and point the config at it."""
    data = Path(args.out) / "data"
    if cfg.DATASET.DATASET == "mpii":
        p = make_synthetic_mpii(data / "mpii", progress=not args.quiet)
        return merge_config(cfg, {"MODEL": {"NUM_JOINTS": 16}, "DATASET": {
            "ROOT": str(p["root"]), "TRAIN_SET": "train", "TEST_SET": "valid", "TRAIN_ANN": "", "TEST_ANN": "",
            "TRAIN_IMAGES": "", "TEST_IMAGES": ""}})
    k = NUM_WHOLEBODY if cfg.DATASET.DATASET == "coco-wholebody" else int(args.synthetic_keypoints)
    if int(cfg.MODEL.NUM_JOINTS) != k:
        cfg = merge_config(cfg, {"MODEL": {"NUM_JOINTS": k}})
    p = make_synthetic_coco(data / ("" if k == 17 else f"k{k}"), progress=not args.quiet, keypoints=k)
    return merge_config(cfg, {"DATASET": {"TRAIN_ANN": str(p["train_ann"]), "TRAIN_IMAGES": str(p["train_images"]),
                                          "TEST_ANN": str(p["val_ann"]), "TEST_IMAGES": str(p["val_images"])},
                              "TEST": {"COCO_BBOX_FILE": str(p["val_dets"])}})


def cmd_train(args: argparse.Namespace) -> int:
    if args.task != "pose":
        return run_task("train", args)
    cfg = _training_config(args)
    r = train(cfg, args.out, resume=args.resume, device=args.device, progress=not args.quiet)
    if r["rank"] == 0:
        print(format_stats(r["stats"]) if r["stats"] else "(no evaluation)")
        metric = "PCKh" if r["stats"] and "AP" not in r["stats"] else "AP"
        print(f"best {metric} {r['best_ap']:.3f}; checkpoints in {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.task != "pose":
        return run_task("eval", args)
    cfg = _training_config(args)
    if args.detections:
        cfg = merge_config(cfg, {"TEST": {"USE_GT_BBOX": False, "COCO_BBOX_FILE": args.detections}})
    results = check_output_file(Path(args.out) / "results.json", "the results file")   # before any work
    s = settings_of(cfg)
    checkpoint = args.checkpoint or s.test.model_file
    if not checkpoint:
        raise ValueError("--checkpoint (or the config's TEST.MODEL_FILE) must name the weights to evaluate")
    _check_dtype(args.optimize, args.dtype)
    settings = inference_settings(s.test, args.no_flip, args.decode)
    print(settings.describe())
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _check_backend(s.runtime.backend, device)
    stats = evaluate_checkpoint(s, checkpoint, results, device, settings, args.optimize, args.dtype,
                                progress=not args.quiet)
    print(format_stats(stats))
    return 0


def _check_dtype(runtime: Optional[str], dtype: Optional[str]) -> None:
    if dtype and not runtime:
        raise ValueError(f"--dtype {dtype} needs --optimize (the eager model runs in float32)")


def _optimize_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"],
                   help="with --optimize: the precision (default: the runtime's choice; fp32 for onnxruntime)")
    p.add_argument("--optimize", choices=RUNTIMES,
                   help="run the network through hrfast.optimize on this runtime (default: eager for images "
                        "and eval, auto for footage; auto: the fastest installed, which is openvino for CPU "
                        "inference when installed; openvino and onnxruntime: CPU only, need their packages)")


def cmd_predict(args: argparse.Namespace) -> int:
    if args.task != "pose":
        return run_task("predict", args)
    footage = [im for im in args.images if is_footage(im)]
    if footage and len(args.images) > 1:
        raise ValueError(f"a video, webcam or frame folder ({footage[0]}) is predicted alone, not with other inputs")
    if not footage:
        for im in args.images:   # every image is checked before any output is written
            check_image_file(im)
    out = check_output_dir(args.out)
    boxes = None if footage else boxes_for_images(args.images, args.boxes, args.box_thre)
    est = _estimator(args, runtime=args.optimize or ("auto" if footage else None))
    detector = build_detector(args.detector or "hog", args.detector_format, args.det_thre) \
        if footage or args.detector else None
    if footage:
        return _predict_footage(args, est, detector, out)
    return _predict_images(args, est, detector, boxes, out)


def _predict_images(args: argparse.Namespace, est: PoseEstimator, detector, boxes, out: Path) -> int:
    r = predict_images(args.images, est, out, boxes, None if args.boxes else detector, args.threshold)
    print("\n".join(r["lines"] + [f"keypoints written to {r['json']}"]))
    if r["outside"]:
        print(f"note: dropped {r['outside']} boxes that lie wholly outside their image")
    if r["found_none"]:
        print(no_person_hint(args.detector or "hog", r["found_none"], len(args.images), "images"))
    return 0


def _estimator(args: argparse.Namespace, runtime: Optional[str]) -> PoseEstimator:
    cfg = merge_dotted(resolve_config(args.config), args.set)
    keypoints = KeypointSet.load(args.keypoints) if args.keypoints else None
    state = read_weights(args.checkpoint) if args.checkpoint else None
    known = {16: (MPII16, "an MPII model, drawn with MPII's keypoints"),
             NUM_WHOLEBODY: (WHOLEBODY133, "a COCO-WholeBody model, drawn part by part")}
    joints = joints_of(state) if state is not None else None
    if keypoints is None and joints in known and joints != int(cfg.MODEL.NUM_JOINTS):
        keypoints = known[joints][0]
        print(f"{args.checkpoint} predicts {joints} joints: {known[joints][1]}")
    if keypoints is not None and keypoints.num_joints != int(cfg.MODEL.NUM_JOINTS):
        cfg = merge_config(cfg, {"MODEL": {"NUM_JOINTS": keypoints.num_joints}})   # the set's joints
    _check_backend(args.backend, torch.device(args.device))
    _check_dtype(runtime, args.dtype)
    settings = inference_settings(settings_of(cfg).test, args.no_flip, args.decode)
    print(settings.describe())
    model = HRNet.from_config(cfg, backend=args.backend)
    if state is not None:
        load_weights(model, args.checkpoint, state)
    else:
        print("note: no --checkpoint, so the weights are random and no joint is confident: pass official "
              "weights (README, Quick start) or a trained model")
    return PoseEstimator(maybe_optimize(model, runtime, args.device, args.dtype), device=args.device,
                         flip_test=settings.flip_test, shift_heatmap=settings.shift_heatmap, method=settings.decode,
                         keypoints=keypoints)


def _check_backend(backend: Optional[str], device: torch.device) -> None:
    """--backend triton runs where its kernels run: CUDA, or Triton's CPU interpreter when
    TRITON_INTERPRET=1 is set (slow: for tests), which is said once."""
    if backend != "triton":
        return
    if not triton_runs_on(device):
        raise ValueError(f"--backend triton runs the fused kernels on a CUDA GPU (or, with TRITON_INTERPRET=1, "
                         f"slowly in Triton's interpreter); {device.type} has neither: use --backend reference "
                         f"or auto" + ("" if HAS_TRITON else f" ({TRITON_NEEDED})"))
    if device.type == "cpu":
        print("note: --backend triton on the CPU runs the kernels in Triton's interpreter (slow; for tests)")


def _predict_footage(args: argparse.Namespace, est: PoseEstimator, detector, out: Path) -> int:
    sync = torch.cuda.synchronize if est.device.type == "cuda" else None
    r = run_video(args.images[0], est, detector, out, detect_every=args.detect_every,
                  batch_frames=args.batch_frames, threshold=args.threshold, progress=not args.quiet, sync=sync)
    print(f"{args.images[0]}: {r['frames']} frames, {r['people']} people -> {r['video']}, {r['jsonl']}")
    print(r["timer"].report())
    if r["frames_without_people"]:
        print(no_person_hint(args.detector or "hog", r["frames_without_people"], r["frames"], "frames"))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with hrfast's error form: one line ``hrfast: error: ...``, exit status 2
    (argparse would print the usage first)."""

    def error(self, message: str):
        print(f"hrfast: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _int_at_least(lo: int):
    """An argparse type: an integer >= lo (0 is a value, never 'unset')."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {value}")
        return value
    return parse


def _float_in(lo: float, hi: float):
    """An argparse type: a number in [lo, hi]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo}, {hi}], got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo}, {hi}], got {value}")
        return value
    return parse


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="versions, extension status and the built-in configs (params, GFLOPs)")
    p.set_defaults(func=cmd_info)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="inference throughput of a model on random inputs")
    _add_model_args(p)
    p.add_argument("--batch", type=_int_at_least(1), default=8, help="batch size (default: 8)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="fp32, or autocast to bf16/fp16 (default: fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels_last inputs and weights")
    p.add_argument("--warmup", type=_int_at_least(0), default=2, help="untimed iterations (default: 2)")
    p.add_argument("--iters", type=_int_at_least(1), default=5, help="timed iterations, median reported (default: 5)")
    p.add_argument("--compare", action="store_true",
                   help="compare eager fp32, eager AMP, torch.compile and hrfast.optimize in one run (a table)")
    p.add_argument("--train", action="store_true", help="with --compare: also the training step")
    p.add_argument("--report", help="with --compare: write the Markdown table to this file")
    p.add_argument("--png", help="with --compare: write a bar chart of the ratios to this PNG")
    p.add_argument("--no-isolate", action="store_true",
                   help="with --compare on the CPU: time every variant in this process (faster to start; by default "
                        "each runs in a process of its own, so the runtimes' thread pools do not slow each other)")
    p.add_argument("--variants", help="with --compare: comma-separated inference variants, eager fp32 first "
                                      "(default: all available here)")
    p.set_defaults(func=cmd_bench)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the README's main job: train and evaluate a small HRNet on synthetic data")
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    p.add_argument("--epochs", type=_int_at_least(1), default=9, help="training epochs (default: 9)")
    p.add_argument("--num-train", type=_int_at_least(1), default=500, help="synthetic training images (default: 500)")
    p.add_argument("--num-val", type=_int_at_least(1), default=100, help="synthetic val images (default: 100)")
    p.add_argument("--batch", type=_int_at_least(1), default=16, help="training batch size (default: 16)")
    p.add_argument("--workers", type=_int_at_least(0), default=1, help="data-loading processes (default: 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set HRFAST.AMP=bf16 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


def _add_check(sub) -> None:
    p = sub.add_parser("check", help="build a model, round-trip its checkpoint, run it on a real COCO crop")
    p.add_argument("--config", default="w32_256x192", help="config name or YAML (default: w32_256x192)")
    p.add_argument("--batch", type=_int_at_least(1), default=8,
                   help="batch size for the throughput figure (default: 8)")
    p.add_argument("--out", help="keep the checkpoint in this folder (default: a temporary folder, removed after)")
    p.set_defaults(func=cmd_check)


def _task_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=TASKS, default="pose",
                   help="pose (heatmaps of keypoints), cls (ImageNet-style classification with HRNet-W*-C; "
                        "--config defaults to cls_hrnet_w18_224) or face (facial landmarks from the face "
                        "repository's CSV lists; --config defaults to face_hrnetv2_w18_wflw_256) or seg "
                        "(Cityscapes' 19 classes; --config defaults to seg_hrnetv2_w48_cityscapes_1024x512) "
                        "(default: pose)")


def _data_args(p: argparse.ArgumentParser, out_default: str) -> None:
    """The arguments train and eval share."""
    _add_model_args(p, backend_default=None)
    _task_arg(p)
    p.add_argument("--data", help="dataset root: COCO (annotations/person_keypoints_<SET>.json, images/<SET>/), "
                                  "COCO-WholeBody (annotations/coco_wholebody_<train|val>_v1.0.json, "
                                  "images/<SET>/) or MPII (annot/<SET>.json, annot/gt_<SET>.mat, images/)")
    p.add_argument("--dataset", choices=DATASETS,
                   help="dataset kind (DATASET.DATASET): coco = any COCO-format keypoint file, coco-wholebody = "
                        "COCO-WholeBody's 133 keypoints (sets MODEL.NUM_JOINTS, per-part AP), mpii = the "
                        "official MPII layout (default: the config's)")
    p.add_argument("--synthetic", action="store_true",
                   help="use (generate) the synthetic dataset in OUT/data, in the --dataset format")
    p.add_argument("--synthetic-keypoints", type=int, choices=sorted(KEYPOINT_SETS), default=17,
                   help="with --synthetic: COCO's 17 keypoints, a COCO-format set of 5 (head, hands, "
                        "feet; sets MODEL.NUM_JOINTS), or 133 (as --dataset coco-wholebody) (default: 17)")
    p.add_argument("--out", default=out_default, help=f"output folder (default: {out_default})")
    p.add_argument("--batch", type=_int_at_least(1), help="batch size per process (default: from the config)")
    p.add_argument("--workers", type=_int_at_least(0), help="data-loading processes (default: config WORKERS)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override in dotted form, e.g. --set TRAIN.LR=5e-4 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train on COCO-format data (torchrun --nproc_per_node N -m hrfast train for DDP)")
    _data_args(p, "outputs/train")
    p.add_argument("--epochs", type=_int_at_least(1), help="last epoch (TRAIN.END_EPOCH)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pth")
    p.set_defaults(func=cmd_train)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="COCO keypoint AP of a checkpoint (flip test, OKS NMS, COCOeval)")
    _data_args(p, "outputs/eval")
    p.add_argument("--checkpoint", help="state_dict or hrfast checkpoint file (default: the config's TEST.MODEL_FILE)")
    p.add_argument("--detections", help="detector results json (default: ground-truth boxes)")
    p.add_argument("--decode", choices=DECODE_METHODS, help="decoding (default: the config's "
                                                                          "HRFAST.DECODE)")
    p.add_argument("--no-flip", action="store_true", help="no flip test (default: the config's TEST.FLIP_TEST)")
    _optimize_arg(p)
    p.set_defaults(func=cmd_eval, epochs=None)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="keypoints of the people in images (a json and PNGs with skeletons), or in "
                                       "a video, webcam or frame folder (an annotated mp4 and JSON lines, tracked)")
    _add_model_args(p)
    _task_arg(p)
    p.add_argument("--classes", help="--task cls: the label order, a json list (default: classes.json beside "
                                     "--checkpoint, which train writes)")
    p.add_argument("images", nargs="+", help="image files; or one video file, webcam index (0) or folder of frames")
    p.add_argument("--detector", help="person detector for footage and for images without --boxes: hog (OpenCV's "
                                      "embedded HOG, weak) or an .onnx export of YOLOX, RTMDet or YOLOv8 "
                                      "(default for footage: hog)")
    p.add_argument("--detector-format", default="auto", choices=["auto", *LAYOUTS],
                   help="the ONNX detector's output layout (default: told from its output shapes)")
    p.add_argument("--det-thre", type=_float_in(0.0, 1.0), default=0.3,
                   help="minimum detector score (default: 0.3)")
    p.add_argument("--detect-every", type=_int_at_least(1), default=5,
                   help="footage: run the detector every N frames; the frames between take boxes from the "
                        "previous frame's keypoints, and a lost track detects again at once (default: 5)")
    p.add_argument("--batch-frames", type=_int_at_least(1), default=4,
                   help="footage: frames whose crops go through the network together (default: 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint",
                   help="state_dict file (official pose_hrnet checkpoints work); random weights if omitted")
    p.add_argument("--boxes", help="json of person boxes: {file name: [[x,y,w,h],...]} or COCO detections; "
                                   "default: the whole image is one person")
    p.add_argument("--keypoints", help="the model's keypoint set: the keypoint_set.json that train writes, or a "
                                       "COCO annotation file; sets MODEL.NUM_JOINTS (default: COCO's 17)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override in dotted form, e.g. --set MODEL.NUM_JOINTS=5 (repeatable)")
    p.add_argument("--out", default="outputs/predict", help="output folder (default: outputs/predict)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--decode", choices=DECODE_METHODS,
                   help="decoding (default: the config's HRFAST.DECODE)")
    p.add_argument("--no-flip", action="store_true", help="no flip test (default: the config's TEST.FLIP_TEST)")
    _optimize_arg(p)
    p.add_argument("--threshold", type=_float_in(0.0, 1.0), default=0.2,
                   help="joint score needed to draw a joint (default: 0.2)")
    p.add_argument("--box-thre", type=_float_in(0.0, 1.0), default=0.5,
                   help="minimum detector score of COCO-detection boxes (default: 0.5)")
    p.set_defaults(func=cmd_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hrfast", description=__doc__.split("\n")[0])
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_info, _add_bench, _add_demo, _add_check, _add_train, _add_eval, _add_predict):
        add(sub)
    return parser


def _check_device(name: Optional[str]) -> None:
    """--device names a device that hrfast runs on and this machine has (torch's own error is
    a traceback, and meta or mps would fail deep inside a kernel)."""
    if not name:
        return
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device must be a torch device such as cpu, cuda or cuda:1, got {name!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: hrfast runs on cpu and cuda devices, not {dev.type}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA device (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_device(getattr(args, "device", None))
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # the reader went away (`hrfast info | head`): nothing left to say to it
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        # outputs are written whole or not at all (hrfast.outputs), so nothing is half-written
        print("hrfast: interrupted", file=sys.stderr)
        return 130
    except (OSError, ConfigError, ValueError, NotImplementedError, KeyError, FloatingPointError, MissingExtra) as exc:
        # user errors, disk full and permissions included: one line; HRFAST_DEBUG=1 or
        # --traceback shows the traceback (programming errors always do)
        if args.traceback or os.environ.get("HRFAST_DEBUG") == "1":
            raise
        print(f"hrfast: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing key {exc.args[0]!r}" if exc.args else "missing key"
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    lines = str(exc).strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Caught ") and "worker" in lines[0]:
        return f"{lines[-1]} (in a data-loading worker)"   # the worker's own error, not its traceback
    return lines[0] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
