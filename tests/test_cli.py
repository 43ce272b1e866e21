"""The command line: help, info, one-line errors."""
import importlib.util
import math
import subprocess
import sys

import pytest

from hrfast.benchmarking import peak_memory_mib
from hrfast.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:   # --help exits, with status 0
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("info", "bench", "demo"):
        assert cmd in out


def test_unknown_config_is_one_line_error(capsys):
    assert main(["bench", "--config", "w99_1x1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hrfast: error: unknown config name 'w99_1x1'")


def test_missing_yaml_is_one_line_error(capsys):
    assert main(["bench", "--config", "/nope/cfg.yaml"]) == 2
    assert "config file not found: /nope/cfg.yaml" in capsys.readouterr().err


def test_bench_small_runs(capsys):
    assert main(["bench", "--config", "w18_small_128x96", "--batch", "2", "--iters", "1", "--warmup", "0"]) == 0
    assert "images/s" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "hrfast", "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "28,536,113" in r.stdout
    # each optional package is listed with its version or as missing, and what it enables
    optional = next(line for line in r.stdout.splitlines() if line.startswith("optional: "))
    for pkg in ("triton", "torchao", "openvino", "onnxruntime"):
        assert pkg + " " in optional
    assert ("openvino not installed" in optional) == (importlib.util.find_spec("openvino") is None)


def test_bench_compare_writes_table_and_chart(tmp_path, capsys, monkeypatch):
    """The whole --compare report on a subset of the variants, timed in this process
    (--no-isolate; the isolated timing is tests/test_bench.py's): the ones compiled by Inductor
    (torch.compile, optimize torch, optimize int8) are built and checked in test_optimize.py,
    and cost minutes here on a cold cache. The peak probe's GEMM is shrunk: its size changes
    the figure, not the report."""
    import functools

    from hrfast.benchmarking import INFERENCE_VARIANTS, available_inference_variants, compare, gemm_peak
    monkeypatch.setattr(compare, "gemm_peak", functools.partial(gemm_peak, n=512))
    assert set(INFERENCE_VARIANTS) - {"optimize torch"} <= set(available_inference_variants("cpu"))
    # the other runtimes' rows where their extras are installed (CI and make install have them;
    # the GPU image has onnxruntime only, and the core rows are checked without either)
    runtimes = [v for v in ("onnxruntime fp32", "openvino fp32") if v in available_inference_variants("cpu")]
    report, png = tmp_path / "r.md", tmp_path / "r.png"
    assert main(["bench", "--compare", "--train", "--config", "w18_small_128x96", "--batch", "2", "--iters", "1",
                 "--variants", ",".join(["eager fp32", "eager AMP", "optimize"] + runtimes), "--no-isolate",
                 "--report", str(report), "--png", str(png)]) == 0
    text = report.read_text()
    for row in ["| eager fp32 |", "| eager AMP |", "| optimize |", "| optimize(mode='training') |",
                "| eager fp32, fused Adam |", "End-to-end predict", "all variants in one process"] + [
                f"| {v} |" for v in runtimes]:
        assert row in text
    # the peak-memory column holds a MiB figure where the probe works, else n/a (not a crash)
    eager = next(ln for ln in text.splitlines() if ln.startswith("| eager fp32 |"))
    cell = eager.rstrip(" |").split("|")[-1].strip()
    assert cell.isdigit() or (cell == "n/a" and math.isnan(peak_memory_mib(lambda: None, "cpu")))
    # predict has the rows of the chosen variants: the torch path's only when it is chosen
    predict = text.split("End-to-end predict")[1]
    assert "| eager fp32 |" in predict and "| optimize |" in predict and "| optimize torch |" not in predict
    # the training rows give GFLOP/s as a fraction of the peak in their dtype (bf16 under autocast)
    train_row = next(ln for ln in text.splitlines() if ln.startswith("| optimize(mode='training') |"))
    cells = [c.strip() for c in train_row.strip(" |").split("|")]
    assert len(cells) == 6 and float(cells[3]) > 0 and cells[4].endswith("%")
    assert png.stat().st_size > 1000


def test_bench_compare_variants_are_checked(capsys):
    assert main(["bench", "--compare", "--config", "w18_small_128x96", "--variants", "optimize,eager fp32"]) == 2
    assert "must start with 'eager fp32'" in capsys.readouterr().err
    assert main(["bench", "--compare", "--config", "w18_small_128x96", "--variants", "eager fp32,fast"]) == 2
    assert "got 'eager fp32,fast'" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
    (["--batch", "0"], "argument --batch: expected an integer >= 1, got 0"),
    (["--workers", "-1"], "argument --workers: expected an integer >= 0, got -1"),
    (["--set", "TRAIN.END_EPOCH=-1"], "TRAIN.END_EPOCH must be greater than TRAIN.BEGIN_EPOCH"),
    (["--set", "TRAIN.LR_STEP=abc"], "config key 'TRAIN.LR_STEP' must be a list, got 'abc'"),
    (["--set", "TRAIN.LR_STEP=[200, 170]"], "TRAIN.LR_STEP must be increasing epochs"),
    (["--set", "MODEL.IMAGE_SIZE=[a, b]"], "must be a list of numbers"),
    (["--set", "HRFAST.MAX_TRAIN_IMAGES=-3"], "HRFAST.MAX_TRAIN_IMAGES must be at least 0"),
    (["--set", "TRAIN.LR=true"], "config key 'TRAIN.LR' must be a number"),
    (["--set", "MODEL.EXTRA.STAGE2.NUM_CHANNELS=[18]"], "MODEL.EXTRA.STAGE2.NUM_CHANNELS has 1"),
])
def test_bad_numbers_are_one_line_before_any_work(tmp_path, capsys, args, message):
    """Zero is a value, not 'unset'; every value is checked before --synthetic writes data."""
    out = tmp_path / "run"
    try:
        code = main(["train", "--config", "w18_small_128x96", "--synthetic", "--out", str(out), "--quiet", *args])
    except SystemExit as exc:   # argparse's own checks exit
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("hrfast: error: ") and message in err and "\n" not in err, err
    assert not (out / "data").exists()


def test_missing_annotation_key_and_disk_full_are_one_line(tmp_path, capsys, monkeypatch):
    import errno
    import json
    import shutil

    import torch
    from conftest import COCO_MINI

    from hrfast import HRNet
    ann = json.loads((COCO_MINI / "annotations" / "person_keypoints.json").read_text())
    for a in ann["annotations"]:
        a.pop("iscrowd", None)
    bad = tmp_path / "ann.json"
    bad.write_text(json.dumps(ann))
    weights = tmp_path / "w.pth"
    torch.save(HRNet.from_config("w18_small_128x96").state_dict(), weights)
    assert main(["eval", "--config", "w18_small_128x96", "--checkpoint", str(weights),
                 "--set", f"DATASET.TEST_ANN={bad}",
                 "--set", f"DATASET.TEST_IMAGES={COCO_MINI / 'images'}", "--out", str(tmp_path / "e"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lacks the key 'iscrowd'" in err and "\n" not in err

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(getattr(f, "name", f)))
    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "run"
    code = main(["train", "--config", "w18_small_128x96", "--synthetic", "--out", str(out), "--workers", "0",
                 "--quiet", "--epochs", "1", "--batch", "16", "--set", "HRFAST.MAX_TRAIN_IMAGES=16",
                 "--set", "MODEL.IMAGE_SIZE=[64,64]", "--set", "MODEL.HEATMAP_SIZE=[16,16]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("hrfast: error: No space left on device: ") and "\n" not in err, err
    assert not list(out.glob(".*.tmp"))     # nothing half-written is left behind
    shutil.rmtree(out, ignore_errors=True)


def test_worker_errors_and_bad_detections_are_one_line(tmp_path):
    from hrfast.cli import _one_line
    exc = ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                     "  File \"x.py\", line 1, in f\nValueError: could not decode image: a.jpg")
    assert _one_line(exc) == "ValueError: could not decode image: a.jpg (in a data-loading worker)"
    import json

    from conftest import COCO_MINI

    from hrfast.data.coco import COCOKeypoints
    bad = tmp_path / "dets.json"
    bad.write_text(json.dumps([{"image_id": 785, "bbox": [1, 2, "x", 4], "score": 0.9}]))
    with pytest.raises(ValueError, match=r"detection 0 must be \{image_id, bbox"):
        COCOKeypoints(COCO_MINI / "annotations" / "person_keypoints.json", COCO_MINI / "images", (192, 256),
                      (48, 64), det_file=bad)


def test_predict_thresholds_are_range_checked(capsys):
    for flag in ("--threshold", "--box-thre"):
        try:
            code = main(["predict", "--config", "w18_small_128x96", flag, "1.5", "a.jpg"])
        except SystemExit as exc:
            code = exc.code
        assert code == 2
        assert f"argument {flag}: expected a number in [0.0, 1.0], got 1.5" in capsys.readouterr().err


def test_a_closed_pipe_is_not_an_error():
    """`hrfast info | head -1`: the reader leaving early ends the command quietly."""
    r = subprocess.run(f"{sys.executable} -m hrfast info | head -c 10", shell=True, capture_output=True, text=True)
    assert len(r.stdout) == 10 and "error" not in r.stderr, r.stderr
