"""The command line's tasks beyond pose: ``hrfast train|eval|predict --task cls``.

Each function takes the parsed arguments of its command, calls the library
(:mod:`hrfast.engine.classify`) and prints what the user reads; a bad argument is a ValueError
or FileNotFoundError that names it (one line, exit status 2, through the CLI's handler).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .data.imagefolder import ImageFolder, make_synthetic_imagenet
from .engine.classify import (
    classify_settings,
    evaluate_classifier,
    format_classification,
    load_classifier,
    predict_classes,
    read_classes,
    read_task_yaml,
    train_classifier,
)
from .engine.data import loader_workers, make_loader
from .outputs import check_output_dir, write_json

TASKS = ("pose", "cls")
DEFAULT_CONFIGS = {"cls": "cls_hrnet_w18_224"}
POSE_DEFAULT = "w32_256x192"


def _config(args: argparse.Namespace) -> str:
    """--config, or the task's default config when it was left at the pose default."""
    return DEFAULT_CONFIGS[args.task] if args.config == POSE_DEFAULT else args.config


def _refuse_pose_only(args: argparse.Namespace, names) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} belongs to --task pose; --task {args.task} does not take it")


def _settings(args: argparse.Namespace):
    _refuse_pose_only(args, ("dataset", "set", "detections", "decode", "optimize", "dtype"))
    config = _config(args)
    raw = read_task_yaml(config)
    model = raw.get("MODEL") or {}
    if model.get("NAME") != "cls_hrnet":
        raise ValueError(f"--config {config} is a {model.get('NAME', 'pose_hrnet')} model; --task cls needs a "
                         f"cls_hrnet config (e.g. cls_hrnet_w18_224, cls_hrnet_w18_small_64)")
    root = args.data
    if getattr(args, "synthetic", False):
        root = str(make_synthetic_imagenet(Path(args.out) / "data" / "imagenet", progress=not args.quiet)["root"])
    s = classify_settings(raw, root=root, epochs=getattr(args, "epochs", None), batch_size=args.batch,
                          test_batch_size=args.batch, workers=args.workers)
    if not s.root:
        raise ValueError("--data (a folder with train/<class>/ and val/<class>/) or --synthetic must name the images")
    return config, s


def train_cls(args: argparse.Namespace) -> int:
    config, s = _settings(args)
    r = train_classifier(config, s, args.out, resume=args.resume, device=args.device or "cpu",
                         progress=not args.quiet)
    print(format_classification(r["stats"]))
    print(f"best top-1 {r['best']:.2f}%; checkpoints in {args.out}")
    return 0


def eval_cls(args: argparse.Namespace) -> int:
    config, s = _settings(args)
    if not args.checkpoint:
        raise ValueError("--checkpoint must name the weights to evaluate (train writes OUT/model_best.pth)")
    classes = read_classes(Path(args.checkpoint).parent / "classes.json")
    device = args.device or "cpu"
    model = load_classifier(config, args.checkpoint, classes, device)
    val = ImageFolder(Path(s.root) / s.test_set, s.image_size, classes=classes)
    stats = evaluate_classifier(model, make_loader(val, s.test_batch_size, False, loader_workers(s.workers), 1, 0, 0),
                                device, progress=not args.quiet)
    print(format_classification(stats))
    return 0


def predict_cls(args: argparse.Namespace) -> int:
    _refuse_pose_only(args, ("boxes", "detector", "keypoints", "set", "optimize", "dtype"))
    if not args.checkpoint:
        raise ValueError("--checkpoint must name the classifier's weights (train writes OUT/model_best.pth)")
    for image in args.images:
        if not Path(image).is_file():
            raise FileNotFoundError(f"image not found: {image}")
    config = _config(args)
    classes = read_classes(args.classes or Path(args.checkpoint).parent / "classes.json")
    model = load_classifier(config, args.checkpoint, classes, args.device)
    size = int(((read_task_yaml(config).get("MODEL") or {}).get("IMAGE_SIZE") or [224])[0])
    out = check_output_dir(args.out)
    results = predict_classes(model, args.images, classes, size, args.device)
    records = []
    for image, top in zip(args.images, results):
        print(f"{image}: " + ", ".join(f"{name} {p:.3f}" for name, p in top))
        records.append({"image": str(image), "top5": [{"class": name, "probability": p} for name, p in top]})
    write_json(out / "classes_predicted.json", records, indent=1)
    print(f"top-5 written to {out / 'classes_predicted.json'}")
    return 0
