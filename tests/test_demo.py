"""The demo (the README's main job) end to end, at a tiny size."""
import json

from hrfast.demo import run_demo


def test_demo_runs_end_to_end(tmp_path, capsys):
    s = run_demo(tmp_path / "demo", epochs=1, num_train=6, num_val=3, batch=4, workers=0, progress=False)
    out = capsys.readouterr().out
    assert "val, ground-truth boxes" in out and "| AP |" in out and "training images/s" in out
    assert (tmp_path / "demo" / "predictions.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert saved["ap_gt_boxes"] == s["ap_gt_boxes"] and 0.0 <= s["ap_gt_boxes"] <= 1.0
