"""The command line's tasks beyond pose: ``hrfast train|eval|predict --task cls|face``.

Each function takes the parsed arguments of its command, calls the library
(:mod:`hrfast.engine.classify`) and prints what the user reads; a bad argument is a ValueError
or FileNotFoundError that names it (one line, exit status 2, through the CLI's handler).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .data.faces import make_synthetic_faces
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
from .engine.face import evaluate_faces, face_settings, format_faces, landmarks_of_images, train_faces
from .outputs import check_output_dir, write_json

TASKS = ("pose", "cls", "face")
DEFAULT_CONFIGS = {"cls": "cls_hrnet_w18_224", "face": "face_hrnetv2_w18_wflw_256"}
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


def _need_checkpoint(args: argparse.Namespace) -> None:
    if not args.checkpoint:
        raise ValueError(f"--checkpoint must name the weights of the --task {args.task} model (train writes "
                         f"OUT/model_best.pth)")


def _report(args: argparse.Namespace, table: str, best: str) -> int:
    print(table)
    print(f"{best}; checkpoints in {args.out}")
    return 0


def _task_yaml(args: argparse.Namespace, model_name: str, examples: str):
    """(config, parsed YAML) of the task, after refusing the pose-only flags; a YAML of another
    model is one error that names the configs to use."""
    _refuse_pose_only(args, ("dataset", "set", "detections", "decode", "optimize", "dtype"))
    config = _config(args)
    raw = read_task_yaml(config)
    found = (raw.get("MODEL") or {}).get("NAME", "pose_hrnet")
    if found != model_name:
        raise ValueError(f"--config {config} is a {found} model; --task {args.task} needs a {model_name} config "
                         f"(e.g. {examples})")
    return config, raw


def _settings(args: argparse.Namespace):
    config, raw = _task_yaml(args, "cls_hrnet", "cls_hrnet_w18_224, cls_hrnet_w18_small_64")
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
    return _report(args, format_classification(r["stats"]), f"best top-1 {r['best']:.2f}%")


def eval_cls(args: argparse.Namespace) -> int:
    _need_checkpoint(args)
    config, s = _settings(args)
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
    _need_checkpoint(args)
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


def _face_settings(args: argparse.Namespace):
    _, raw = _task_yaml(args, "hrnet", "face_hrnetv2_w18_wflw_256, face_hrnetv2_w18_small_300w_128")
    over = {"root": args.data}
    if getattr(args, "synthetic", False):
        points = int((raw.get("MODEL") or {}).get("NUM_JOINTS", 98))
        if points != 68:
            raise ValueError(f"--synthetic writes 300W's 68 landmarks, but --config {_config(args)} predicts "
                             f"{points}: use face_hrnetv2_w18_small_300w_128 or another 68-landmark config")
        p = make_synthetic_faces(Path(args.out) / "data" / "faces", progress=not args.quiet)
        over = {"root": str(p["images"]), "train_list": str(p["train"]), "test_list": str(p["valid"])}
    s = face_settings(raw, epochs=getattr(args, "epochs", None), batch_size=args.batch, test_batch_size=args.batch,
                      workers=args.workers, **over)
    if not (s.root and s.test_list):
        raise ValueError("--data (the image root; the YAML's DATASET.TRAINSET / TESTSET name the CSV lists) or "
                         "--synthetic must name the faces")
    return raw, s


def train_face(args: argparse.Namespace) -> int:
    raw, s = _face_settings(args)
    r = train_faces(raw, s, args.out, resume=args.resume, device=args.device or "cpu", progress=not args.quiet)
    return _report(args, format_faces(r["stats"]), f"best NME {-r['best'] * 100:.2f}%")


def eval_face(args: argparse.Namespace) -> int:
    _need_checkpoint(args)
    raw, s = _face_settings(args)
    from .models import build_model
    from .weights import load_weights
    model = build_model(raw)
    load_weights(model, args.checkpoint)
    print(format_faces(evaluate_faces(model.to(args.device or "cpu"), s, args.device or "cpu", not args.quiet)))
    return 0


def predict_face(args: argparse.Namespace) -> int:
    """Landmarks of each image (the whole image is the face), drawn to PNG and written to json."""
    _refuse_pose_only(args, ("boxes", "detector", "keypoints", "set", "optimize", "dtype", "classes"))
    _need_checkpoint(args)
    for image in args.images:
        if not Path(image).is_file():
            raise FileNotFoundError(f"image not found: {image}")
    import cv2

    from .data.transforms import read_image_rgb
    from .models import build_model
    from .outputs import write_png
    from .weights import load_weights
    raw = read_task_yaml(_config(args))
    model = build_model(raw)
    load_weights(model, args.checkpoint)
    size = int(((raw.get("MODEL") or {}).get("IMAGE_SIZE") or [256])[0])
    out = check_output_dir(args.out)
    records = []
    for image, pts in zip(args.images, landmarks_of_images(model.to(args.device), args.images, size, args.device)):
        img = read_image_rgb(image).copy()
        for x, y in pts:
            cv2.circle(img, (int(round(x)), int(round(y))), max(1, img.shape[0] // 150), (255, 255, 0), -1,
                       cv2.LINE_AA)
        png = out / f"{Path(image).stem}_landmarks.png"
        write_png(png, img)
        records.append({"image": str(image), "landmarks": np.round(pts, 2).tolist()})
        print(f"{image}: {len(pts)} landmarks -> {png}")
    write_json(out / "landmarks.json", records, indent=1)
    return 0
