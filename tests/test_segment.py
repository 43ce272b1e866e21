"""The segmentation task: Cityscapes' label mapping and list files, mIoU against its definition
and hand-made cases, the loss, and train / eval / predict --task seg through the CLI."""
import numpy as np
import pytest
import torch
from conftest import write_task_yaml

from hrfast.cli import main
from hrfast.data.cityscapes import (
    IGNORE,
    CityscapesSegmentation,
    make_synthetic_cityscapes,
    read_list,
    to_train_ids,
)
from hrfast.engine.segment import (
    SegSettings,
    _starts,
    confusion,
    miou_stats,
    seg_loss,
    seg_settings,
    segment,
    sliding_logits,
)


def test_label_ids_map_to_the_19_train_ids():
    ids = np.array([[7, 8, 11, 26], [0, 6, 255, 33]], np.uint8)   # road, sidewalk, building, car; void x3, bicycle
    assert to_train_ids(ids).tolist() == [[0, 1, 2, 13], [IGNORE, IGNORE, IGNORE, 18]]


def numpy_miou(pred, label, classes):
    """mIoU from its definition: per class, |pred == c and label == c| over |pred == c or
    label == c| among the valid pixels (0 when the union is empty), averaged over classes."""
    valid = label != IGNORE
    ious = []
    for c in range(classes):
        inter = np.sum((pred == c) & (label == c) & valid)
        union = np.sum(((pred == c) | (label == c)) & valid)
        ious.append(inter / max(union, 1))
    return float(np.mean(ious))


def test_miou_of_a_hand_made_case_and_against_its_definition():
    label = np.array([[0, 0, 1, 1], [IGNORE, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [5, 0, 1, 0]])
    stats = miou_stats(confusion(pred, label))
    # class 0: 2 right of 3 labelled, 1 more predicted -> 2 / 4; class 1: 3 / 5; 17 others 0
    assert stats["IoU road"] == 0.5 and stats["IoU sidewalk"] == 0.6
    assert stats["mIoU"] == pytest.approx((0.5 + 0.6) / 19) and stats["pixel acc"] == pytest.approx(5 / 7)
    rng = np.random.default_rng(0)
    label, pred = rng.integers(0, 19, (40, 50)), rng.integers(0, 19, (40, 50))
    label[rng.random((40, 50)) < 0.2] = IGNORE
    assert miou_stats(confusion(pred, label))["mIoU"] == pytest.approx(numpy_miou(pred, label, 19), abs=1e-12)


def test_the_loss_ignores_255_and_ohem_keeps_the_hard_pixels():
    logits = torch.zeros(1, 19, 2, 2)
    logits[0, 0] = 10.0                              # confident road everywhere
    label = torch.tensor([[[0, 0], [1, IGNORE]]])    # two easy pixels, one hard, one ignored
    plain = seg_loss(logits, label, SegSettings())
    hard = torch.nn.functional.cross_entropy(logits[..., 1, 0], torch.tensor([1]))
    easy = torch.nn.functional.cross_entropy(logits[..., 0, 0], torch.tensor([0]))
    assert plain == pytest.approx(float((2 * easy + hard) / 3), rel=1e-6)
    ohem = seg_loss(logits, label, SegSettings(ohem=True, ohem_keep=1, ohem_thres=0.7))
    assert ohem == pytest.approx(float(hard), rel=1e-6)


@pytest.fixture(scope="module")
def streets(tmp_path_factory):
    return make_synthetic_cityscapes(tmp_path_factory.mktemp("city"), num_train=4, num_val=2, size=(128, 64),
                                     progress=False)


def test_lists_samples_and_crops(streets, tmp_path):
    pairs = read_list(streets["root"], streets["val"])
    assert len(pairs) == 2 and pairs[0][1].name.endswith("_gtFine_labelIds.png")
    ds = CityscapesSegmentation(streets["root"], streets["train"], train=True, crop=(96, 96))
    s = ds[0]
    assert s["image"].shape == (3, 96, 96) and s["label"].shape == (96, 96)
    assert set(np.unique(s["label"].numpy())) <= set(range(19)) | {IGNORE}
    (tmp_path / "bad.lst").write_text("only_one_column.png\n")
    with pytest.raises(ValueError, match=r"bad.lst:1: expected"):
        read_list(streets["root"], tmp_path / "bad.lst")


def test_train_eval_predict_through_the_cli(streets, tmp_path, capsys):
    cfg = write_task_yaml(tmp_path, "seg_hrnetv2_w18_small_256x128", DATASET={"ROOT": str(streets["root"])},
                          TRAIN={"IMAGE_SIZE": [64, 64]})       # 64x64 crops: seconds on a CPU
    out, best = tmp_path / "run", str(tmp_path / "run" / "model_best.pth")

    def run(command, *extra):
        return main([command, "--task", "seg", "--config", str(cfg), "--batch", "2", "--workers", "0", "--quiet",
                     *extra])
    assert run("train", "--epochs", "1", "--out", str(out)) == 0
    text = capsys.readouterr().out
    assert "| mIoU | pixel acc | mean acc |" in text and "| bicycle |" in text and "best mIoU" in text
    assert run("eval", "--out", str(tmp_path / "e"), "--checkpoint", best) == 0
    assert "| mIoU |" in capsys.readouterr().out
    image = read_list(streets["root"], streets["val"])[0][0]
    assert main(["predict", "--task", "seg", "--config", str(cfg), "--checkpoint", str(out / "model_best.pth"),
                 "--out", str(tmp_path / "p"), str(image)]) == 0
    assert (tmp_path / "p" / f"{image.stem}_segmentation.png").stat().st_size > 1000
    assert main(["train", "--task", "seg", "--out", str(tmp_path / "x")]) == 2
    assert "--synthetic must name the images" in capsys.readouterr().err


def test_sliding_windows_cover_the_image_and_equal_whole_image_inference_for_a_pointwise_net():
    for size, window in ((100, 64), (64, 64), (50, 64), (129, 32)):
        starts = _starts(size, window, window * 2 // 3)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s:s + window] = True
        assert covered.all() and starts[-1] + min(window, size) == size
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 19, 1).eval()          # no context: every window sees what the whole sees
    x = torch.randn(2, 3, 70, 150)
    with torch.no_grad():
        whole = net(x)
        slid = sliding_logits(net, x, (64, 48))
    torch.testing.assert_close(slid, whole, rtol=1e-5, atol=1e-6)
    assert torch.equal(segment(net, x, window=(64, 48)), whole.argmax(1))
    assert segment(net, x, flip=True, scales=(1.0, 0.5)).shape == (2, 70, 150)


def test_the_multi_scale_test_keys():
    s = seg_settings({"TRAIN": {"IMAGE_SIZE": [1024, 512]}, "TEST": {"MULTI_SCALE": True,
                                                                    "SCALE_LIST": [0.5, 1, 1.5]}})
    assert s.scales == (0.5, 1.0, 1.5) and s.window == (1024, 512)          # official: slides the crop
    assert seg_settings({"TEST": {"SCALE_LIST": [0.5, 1]}}).scales == (1.0,)   # only with MULTI_SCALE
    assert seg_settings({}).window == ()
