"""The command line's tasks beyond pose: ``hrfast train|eval|predict --task cls|face|seg``.

Each function takes the parsed arguments of its command, calls the library
(:mod:`hrfast.engine.classify`) and prints what the user reads; a bad argument is a ValueError
or FileNotFoundError that names it (one line, exit status 2, through the CLI's handler).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .data.cityscapes import colour_overlay, make_synthetic_cityscapes
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
from .engine.segment import (
    evaluate_segmentation,
    format_segmentation,
    predict_segmentation,
    seg_settings,
    train_segmentation,
)
from .outputs import check_output_dir, write_json
from .weights import load_family_model

TASKS = ("pose", "cls", "face", "seg")
DEFAULT_CONFIGS = {"cls": "cls_hrnet_w18_224", "face": "face_hrnetv2_w18_wflw_256",
                   "seg": "seg_hrnetv2_w48_cityscapes_1024x512"}
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


def _predict_inputs(args: argparse.Namespace, also=()) -> None:
    """What every task's predict checks first: no pose-only flag (nor those of ``also``), a
    checkpoint, the images."""
    _refuse_pose_only(args, ("boxes", "detector", "keypoints", "set", "optimize", "dtype", *also))
    _need_checkpoint(args)
    for image in args.images:
        if not Path(image).is_file():
            raise FileNotFoundError(f"image not found: {image}")


def _need_checkpoint(args: argparse.Namespace) -> None:
    if not args.checkpoint:
        raise ValueError(f"--checkpoint must name the weights of the --task {args.task} model (train writes "
                         f"OUT/model_best.pth)")


def _run_overrides(args: argparse.Namespace) -> dict:
    """The command line's values for every task's settings (None: the YAML's)."""
    return {"epochs": getattr(args, "epochs", None), "batch_size": args.batch, "test_batch_size": args.batch,
            "workers": args.workers}


def _with_data(s, message: str):
    if not (s.root and s.test_list):
        raise ValueError(message)
    return s


def _eval(args: argparse.Namespace, settings, evaluate, table) -> int:
    """Build the task's net with --checkpoint, evaluate it on the test data, print the table."""
    _need_checkpoint(args)
    raw, s = settings(args)
    device = args.device or "cpu"
    print(table(evaluate(load_family_model(raw, args.checkpoint, device), s, device, not args.quiet)))
    return 0


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
    s = classify_settings(raw, root=root, **_run_overrides(args))
    if not s.root:
        raise ValueError("--data (a folder with train/<class>/ and val/<class>/) or --synthetic must name the images")
    return config, s


def _train(args: argparse.Namespace, settings, train, table, best) -> int:
    """Read the task's settings, train, print its table and its best figure."""
    first, s = settings(args)
    r = train(first, s, args.out, resume=args.resume, device=args.device or "cpu", progress=not args.quiet)
    return _report(args, table(r["stats"]), best(r["best"]))


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
    _predict_inputs(args)
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
    s = face_settings(raw, **_run_overrides(args), **over)
    return raw, _with_data(s, "--data (the image root; the YAML's DATASET.TRAINSET / TESTSET name the CSV lists) "
                              "or --synthetic must name the faces")


def predict_face(args: argparse.Namespace) -> int:
    """Landmarks of each image (the whole image is the face), drawn to PNG and written to json."""
    _predict_inputs(args, also=("classes",))
    import cv2

    from .data.transforms import read_image_rgb
    from .outputs import write_png
    raw = read_task_yaml(_config(args))
    model = load_family_model(raw, args.checkpoint, args.device)
    size = int(((raw.get("MODEL") or {}).get("IMAGE_SIZE") or [256])[0])
    out = check_output_dir(args.out)
    records = []
    pipeline = face_settings(raw).pipeline
    found = landmarks_of_images(model.to(args.device), args.images, size, args.device, pipeline)
    for image, pts in zip(args.images, found):
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


def _seg_settings(args: argparse.Namespace):
    _, raw = _task_yaml(args, "seg_hrnet", "seg_hrnetv2_w48_cityscapes_1024x512, seg_hrnetv2_w18_small_256x128")
    over = {"root": args.data}
    if getattr(args, "synthetic", False):
        p = make_synthetic_cityscapes(Path(args.out) / "data" / "cityscapes", progress=not args.quiet)
        over = {"root": str(p["root"]), "train_list": str(p["train"]), "test_list": str(p["val"])}
    d = raw.get("DATASET") or {}
    if args.data and not getattr(args, "synthetic", False):      # the YAML's lists, under the new root
        over.update(train_list=str(Path(args.data) / d.get("TRAIN_SET", "list/train.lst")),
                    test_list=str(Path(args.data) / d.get("TEST_SET", "list/val.lst")))
    s = seg_settings(raw, **_run_overrides(args), **over)
    return raw, _with_data(s, "--data (the Cityscapes root with its list files) or --synthetic must name the images")


def predict_seg(args: argparse.Namespace) -> int:
    """The train ids of each image, as a colour overlay PNG and a label PNG (255: ignored)."""
    _predict_inputs(args, also=("classes",))
    from .data.transforms import read_image_rgb
    from .outputs import write_png
    model = load_family_model(read_task_yaml(_config(args)), args.checkpoint, args.device)
    out = check_output_dir(args.out)
    for image in args.images:
        ids = predict_segmentation(model, image, args.device)
        png = out / f"{Path(image).stem}_segmentation.png"
        write_png(png, colour_overlay(read_image_rgb(image), ids))
        write_png(out / f"{Path(image).stem}_trainids.png", np.repeat(ids[..., None], 3, axis=2))
        print(f"{image}: {len(np.unique(ids))} classes -> {png}")
    return 0


# task -> command -> what runs it
COMMANDS = {
    "cls": {"train": lambda a: _train(a, _settings, train_classifier, format_classification,
                                      lambda b: f"best top-1 {b:.2f}%"),
            "eval": eval_cls, "predict": predict_cls},
    "face": {"train": lambda a: _train(a, _face_settings, train_faces, format_faces,
                                       lambda b: f"best NME {-b * 100:.2f}%"),
             "eval": lambda a: _eval(a, _face_settings, evaluate_faces, format_faces), "predict": predict_face},
    "seg": {"train": lambda a: _train(a, _seg_settings, train_segmentation, format_segmentation,
                                      lambda b: f"best mIoU {b * 100:.2f}"),
            "eval": lambda a: _eval(a, _seg_settings, evaluate_segmentation, format_segmentation),
            "predict": predict_seg},
}


def run(command: str, args: argparse.Namespace) -> int:
    """``hrfast <command> --task <task>`` for a task other than pose."""
    return COMMANDS[args.task][command](args)
