"""The demo (the README's main job) end to end, at a tiny size."""
import json
import re

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hrfast.demo import run_demo


def test_demo_runs_end_to_end(tmp_path, capsys):
    s = run_demo(tmp_path / "demo", epochs=1, num_train=6, num_val=3, batch=4, workers=0, progress=False)
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert saved["ap_gt_boxes"] == s["ap_gt_boxes"] and saved["ap_detections"] == s["ap_detections"]
    # the printed tables carry the summary's numbers: first the ground-truth boxes, then the detector's
    aps = [float(m) for m in re.findall(r"^\| (\d\.\d{3}) \|", out, re.M)]
    assert aps == [round(s["ap_gt_boxes"], 3), round(s["ap_detections"], 3)], out
    # the detector-box AP is what pycocotools itself makes of the results file that was written
    coco = COCO(str(tmp_path / "demo" / "data" / "annotations" / "person_keypoints_val.json"))
    dets = json.loads((tmp_path / "demo" / "results_val_detections.json").read_text())
    assert dets and {d["category_id"] for d in dets} == {1}
    e = COCOeval(coco, coco.loadRes(dets), "keypoints")
    e.evaluate()
    e.accumulate()
    e.summarize()
    assert np.isclose(e.stats[0], s["ap_detections"], atol=1e-12)
    # every phase timed, and they add up to the total
    assert list(s["phases_s"]) == ["data", "training", "evaluation", "drawing"]
    assert abs(sum(s["phases_s"].values()) / 60 - s["minutes"]) < 0.01
    assert re.search(r"time by phase: data \d+ s, training \d+ s, evaluation \d+ s, drawing \d+ s; total", out)
    assert (tmp_path / "demo" / "predictions.png").stat().st_size > 1000
