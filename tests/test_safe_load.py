"""No code runs from a checkpoint (issue 13): every path that reads a user's .pth file
(predict, eval, PoseEstimator, --resume) loads data only, and a damaged file is one line."""
import builtins

import pytest
import torch
from conftest import COCO_MINI

from hrfast import PoseEstimator
from hrfast.cli import main
from hrfast.engine.train import train
from hrfast.safe_load import CheckpointError, load_checkpoint


class Payload:
    """Unpickling this calls open(marker, 'w'): a file appears if the loader runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    # real weights around the payload: the stealthy kind that would otherwise load and run
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3), "x": Payload(marker)}, path)
    return path, marker


def test_load_checkpoint_refuses_code_and_names_it(evil):
    path, marker = evil
    with pytest.raises(CheckpointError, match=r"evil.pth holds more than tensors .*asks for \w+\.open\)"):
        load_checkpoint(path)
    assert not marker.exists()


def test_predict_eval_and_estimator_refuse_it(evil, capsys):
    path, marker = evil
    image = str(sorted((COCO_MINI / "images").glob("*.jpg"))[0])
    assert main(["predict", "--config", "w18_small_128x96", "--checkpoint", str(path), image]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hrfast: error: checkpoint") and "refusing to load it" in err and "\n" not in err
    assert main(["eval", "--config", "w18_small_128x96", "--synthetic", "--checkpoint", str(path),
                 "--out", str(path.parent / "ev"), "--quiet"]) == 2
    assert "refusing to load it" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="refusing to load it"):
        PoseEstimator(config="w18_small_128x96", checkpoint=path)
    assert not marker.exists()


def test_resume_refuses_it(evil, tmp_path):
    path, marker = evil
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pth").write_bytes(path.read_bytes())
    from test_engine import _tiny_cfg
    with pytest.raises(CheckpointError, match="--resume checkpoint .* refusing to load it"):
        train(_tiny_cfg(tmp_path, epochs=1), run, resume=True, progress=False)
    assert not marker.exists()


def test_bit_flip_is_caught_by_the_crc(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"w": torch.randn(4096)}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt: CRC mismatch"):
        load_checkpoint(path)


def test_plain_state_dicts_and_resume_state_load(tmp_path):
    """What hrfast writes, and what the official code writes, loads as data: the resume
    checkpoint keeps its RNG states as tensors and plain values."""
    import random

    import numpy as np

    from hrfast.engine.checkpoint import rng_state, set_rng_state
    path = tmp_path / "ck.pth"
    torch.save({"rng": rng_state(), "model": {"a": torch.ones(2)}}, path)
    before = (np.random.rand(), random.random(), torch.rand(1).item())
    set_rng_state(load_checkpoint(path)["rng"])
    assert (np.random.rand(), random.random(), torch.rand(1).item()) == before


def test_cli_resume_refuses_it_and_out_must_be_a_folder(evil, tmp_path, capsys):
    path, marker = evil
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pth").write_bytes(path.read_bytes())
    common = ["train", "--config", "w18_small_128x96", "--synthetic", "--workers", "0", "--quiet", "--epochs", "1",
              "--set", "MODEL.IMAGE_SIZE=[64,64]", "--set", "MODEL.HEATMAP_SIZE=[16,16]"]
    assert main([*common, "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--resume checkpoint" in err and "refusing to load it" in err and "\n" not in err
    assert not marker.exists()
    assert main([*common, "--out", str(path)]) == 2     # --out names a file
    err = capsys.readouterr().err.strip()
    assert err.startswith("hrfast: error: ") and str(path) in err and "\n" not in err


def test_truncated_checkpoint_through_predict_is_one_line(tmp_path, capsys):
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.randn(4096)}, path)
    path.write_bytes(path.read_bytes()[:3000])
    image = str(sorted((COCO_MINI / "images").glob("*.jpg"))[0])
    assert main(["predict", "--config", "w18_small_128x96", "--checkpoint", str(path), image]) == 2
    err = capsys.readouterr().err.strip()
    assert "cut.pth" in err and ("damaged" in err or "not a readable PyTorch file" in err) and "\n" not in err
