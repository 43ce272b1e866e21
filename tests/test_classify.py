"""The classification task: ImageNet-style folders, the official crops, top-k accuracy, the
official YAML keys, and train / eval / predict --task cls through the CLI."""
import json

import numpy as np
import pytest
import torch

from hrfast.cli import main
from hrfast.data.imagefolder import ImageFolder, center_crop, make_synthetic_imagenet, random_resized_crop
from hrfast.engine.classify import classify_settings, topk_accuracy


def test_topk_counts_against_hand_made_logits():
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0],      # label 0: top-1
                           [0.0, 1, 2, 3, 4, 5],      # label 1: 5th of 6, in the top 5
                           [0.0, 1, 2, 3, 4, 5]])     # label 0: last, in neither
    assert topk_accuracy(logits, torch.tensor([0, 1, 0])) == {1: 1, 5: 2}
    assert topk_accuracy(logits[:, :3], torch.tensor([0, 1, 0])) == {1: 1, 5: 3}   # k capped at 3 classes


def test_center_crop_is_the_middle_of_the_resized_image():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 90:110] = 255                                    # a white band in the middle column
    out = center_crop(img, 56)                              # shorter side to 64, then the middle 56
    assert out.shape == (56, 56, 3)
    assert out[:, 28].min() > 200 and out[:, 0].max() == 0 and out[:, -1].max() == 0


def test_random_resized_crop_keeps_the_size_and_falls_back_to_the_centre():
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(0, 255, (80, 120, 3)).astype(np.uint8)
    assert random_resized_crop(img, 32, rng).shape == (32, 32, 3)
    thin = np.zeros((1, 400, 3), np.uint8)                 # no crop of the allowed aspect fits
    assert random_resized_crop(thin, 16, rng).shape == (16, 16, 3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_synthetic_imagenet(tmp_path_factory.mktemp("cls"), num_classes=3, per_class_train=4,
                                   per_class_val=2, size=48, progress=False)


def test_image_folder_labels_by_sorted_folder_and_is_deterministic(tiny):
    ds = ImageFolder(tiny["train"], 32, train=True, seed=3)
    assert ds.classes == sorted(p.name for p in tiny["train"].iterdir()) and len(ds) == 12
    s = ds[5]
    assert s["image"].shape == (3, 32, 32) and s["label"] == 1
    assert torch.equal(ds[5]["image"], s["image"])                   # a function of (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(ds[5]["image"], s["image"])
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageFolder(tiny["root"] / "nosuch")


def test_settings_read_the_official_keys_and_take_overrides():
    raw = {"TRAIN": {"LR": 0.1, "LR_STEP": [3, 6], "END_EPOCH": 8, "OPTIMIZER": "adam", "WD": 0.0},
           "DATASET": {"ROOT": "imagenet/images", "TEST_SET": "val"}, "MODEL": {"IMAGE_SIZE": [160, 160]}}
    s = classify_settings(raw, epochs=2, batch_size=None)
    assert (s.lr, s.lr_step, s.epochs, s.optimizer, s.image_size, s.root) == (0.1, (3, 6), 2, "adam", 160,
                                                                              "imagenet/images")
    assert s.batch_size == 32                                          # the official default
    with pytest.raises(ValueError, match="TRAIN.OPTIMIZER must be sgd or adam"):
        classify_settings({"TRAIN": {"OPTIMIZER": "lamb"}})


def test_train_eval_predict_through_the_cli(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--task", "cls", "--config", "cls_hrnet_w18_small_64", "--data", str(tiny["root"]), "--batch", "6",
              "--workers", "0", "--quiet", "--out", str(out)]
    assert main(["train", *common, "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    assert "| top-1 | top-5 |" in text and "best top-1" in text
    assert json.loads((out / "classes.json").read_text()) == ImageFolder(tiny["train"]).classes
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert main(["train", *common, "--epochs", "2", "--resume"]) == 0          # continues at epoch 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["eval", *common[:-2], "--out", str(tmp_path / "e"), "--checkpoint", str(out / "model_best.pth")]) == 0
    assert "| top-1 | top-5 |" in capsys.readouterr().out
    image = sorted(tiny["val"].glob("*/*.JPEG"))[0]
    assert main(["predict", "--task", "cls", "--config", "cls_hrnet_w18_small_64", "--checkpoint",
                 str(out / "model_best.pth"), "--out", str(tmp_path / "p"), str(image)]) == 0
    record = json.loads((tmp_path / "p" / "classes_predicted.json").read_text())[0]
    assert len(record["top5"]) == 3 and abs(sum(c["probability"] for c in record["top5"]) - 1) < 1e-5


@pytest.mark.parametrize("extra,message", [(["--dataset", "coco"], "--dataset belongs to --task pose"),
                                           ([], "--data (a folder with train/<class>/"),
                                           (["--config", "w18_small_128x96"], "--task cls needs a cls_hrnet config")])
def test_bad_arguments_are_one_line(tmp_path, capsys, extra, message):
    assert main(["train", "--task", "cls", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
