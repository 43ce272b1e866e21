"""What does each inference dtype of ``hrfast.optimize`` cost in accuracy? A report, not a test.

It reads the demo's trained model (run ``make demo`` first: outputs/demo) and compares fp32
eager, ``optimize`` in bf16, torchao's int8 and, when openvino is installed,
``optimize(runtime="openvino")`` in fp32 and bf16 and (with nncf) in int8. int8 is calibrated on 128
augmented training crops. The report gives:
- COCO AP on the demo's val split (ground-truth boxes, flip test, DARK);
- the mean, median and 95th-percentile keypoint drift against fp32 eager, in heatmap pixels,
  over 64 val crops (joints with score > 0.2), for DARK and quarter-offset decoding.

Usage: python benchmarks/quantization_accuracy.py [--demo outputs/demo]
"""
import argparse
import importlib.util
from pathlib import Path

import torch

import hrfast
from hrfast import optimize
from hrfast.engine.data import build_dataset, dataset_paths, make_loader
from hrfast.engine.evaluate import evaluate
from hrfast.ops.decode import decode_heatmaps
from hrfast.predictor import load_weights
from hrfast.settings import settings_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="outputs/demo", help="the demo's output folder")
    args = ap.parse_args()
    train_dir = Path(args.demo) / "train"
    cfg = hrfast.load_config(train_dir / "config.yaml")
    model = hrfast.HRNet.from_config(cfg).eval()
    load_weights(model, train_dir / "final_state.pth")
    data = settings_of(cfg).data
    val, train = build_dataset(data, train=False), build_dataset(data, train=True)
    calibration = [torch.stack([train[i]["image"] for i in range(j, j + 32)]) for j in range(0, 128, 32)]
    crops = torch.stack([val[i]["image"] for i in range(64)])
    loader = make_loader(val, 32, False, 0, 1, 0, 0)
    ann, _ = dataset_paths(data, "test")
    with torch.no_grad():
        ref = model(crops)
    variants = [("fp32 eager", model), ("optimize bf16", optimize(model, dtype="bf16", runtime="torch")),
                ("optimize int8 (torchao)", optimize(model, dtype="int8", calibration=calibration, runtime="torch"))]
    if importlib.util.find_spec("openvino") is not None:
        variants += [(f"optimize openvino {d}", optimize(model, dtype=d, runtime="openvino")) for d in ("fp32", "bf16")]
    if importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None:
        variants += [("optimize openvino int8 (NNCF)", optimize(model, dtype="int8", runtime="openvino",
                                                               calibration=calibration))]
    print("| variant | AP | AR | DARK drift mean / median / p95 (px) | quarter drift mean / median / p95 (px) |")
    print("|---|---:|---:|---|---|")
    for name, net in variants:
        stats = evaluate(net, loader, ann, method="dark", progress=False)
        with torch.no_grad():
            out = net(crops)
        cells = []
        for method in ("dark", "quarter"):
            c_ref, s_ref = decode_heatmaps(ref, method)
            c_got, _ = decode_heatmaps(out, method)
            keep = s_ref.reshape(c_ref.shape[:2]) > 0.2
            d = (c_got - c_ref).norm(dim=-1)[keep]
            cells.append(f"{d.mean():.3f} / {d.median():.3f} / {d.quantile(0.95):.3f}")
        print(f"| {name} | {stats['AP']:.3f} | {stats['AR']:.3f} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
