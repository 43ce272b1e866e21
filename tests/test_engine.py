"""Losses, evaluation (COCOeval AP on coco-mini), training, resume, DDP."""
import json
import os
import socket

import numpy as np
import pytest
import torch
from conftest import COCO_MINI

from hrfast.config import get_config, merge_config
from hrfast.data.coco import COCOKeypoints
from hrfast.data.synthetic import make_synthetic_coco
from hrfast.engine.checkpoint import atomic_save
from hrfast.engine.evaluate import coco_eval, coco_results, format_stats
from hrfast.engine.loss import JointsMSELoss, JointsOHKMMSELoss
from hrfast.engine.train import train
from hrfast.inference import flip_back
from hrfast.ops.decode import final_preds

ANN = COCO_MINI / "annotations" / "person_keypoints.json"
IMAGES = COCO_MINI / "images"


def test_joints_mse_matches_official_per_joint_loop():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(3, 5, 8, 6, generator=g), torch.rand(3, 5, 8, 6, generator=g)
    w = torch.rand(3, 5, generator=g)
    # official: for each joint, 0.5 * MSE(pred_j * w_j, target_j * w_j) over (B, HW); mean over joints
    ref = sum(0.5 * torch.nn.functional.mse_loss(pred[:, j].flatten(1) * w[:, j:j + 1],
                                                 target[:, j].flatten(1) * w[:, j:j + 1]) for j in range(5)) / 5
    torch.testing.assert_close(JointsMSELoss()(pred, target, w), ref)
    # OHKM: per sample, the mean of the top-k joint losses; then the batch mean
    per = 0.5 * ((pred * w[..., None, None] - target * w[..., None, None]) ** 2).flatten(2).mean(-1)
    ref_ohkm = torch.stack([row.topk(2).values.mean() for row in per]).mean()
    torch.testing.assert_close(JointsOHKMMSELoss(topk=2)(pred, target, w), ref_ohkm)
    with pytest.raises(ValueError, match="same shape"):
        JointsMSELoss()(pred, target[:, :4], w)


def _gt_records():
    doc = json.loads(ANN.read_text())
    recs = []
    for a in doc["annotations"]:
        kp = np.array(a["keypoints"], np.float64).reshape(17, 3)
        if kp[:, 2].max() == 0:
            continue
        kp[:, 2] = (kp[:, 2] > 0).astype(float)
        x, y, w, h = a["bbox"]
        recs.append({"image_id": a["image_id"], "keypoints": kp, "score": 1.0, "area": w * h * 1.25 ** 2})
    return recs


def test_ground_truth_as_predictions_scores_ap_1(tmp_path):
    results = coco_results(_gt_records())          # rescoring + OKS NMS keep every person
    stats = coco_eval(ANN, results, tmp_path / "res.json")
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "res.json").read_text())[0]["category_id"] == 1
    assert "AP .5" in format_stats(stats)


def test_heatmap_round_trip_through_the_eval_path_scores_ap_1():
    """Ground-truth joints -> crop -> UDP targets as 'heatmaps' -> final_preds (udp) -> the
    official post-processing -> COCOeval: the inverse transform undoes the crop."""
    ds = COCOKeypoints(ANN, IMAGES, (192, 256), (48, 64), encoding="udp")
    recs = []
    for i in range(len(ds)):
        it = ds[i]
        kp = final_preds(it["target"][None], it["center"][None], it["scale"][None], "udp")[0].double()
        kp[:, 2] = it["target_weight"].double()    # joints outside the heatmap have no peak
        s = it["scale"].double() * 200
        recs.append({"image_id": int(it["image_id"]), "keypoints": kp.numpy(), "score": 1.0,
                     "area": float(s[0] * s[1])})
    stats = coco_eval(ANN, coco_results(recs))
    assert stats["AP"] > 0.99


def test_flip_back_is_an_involution():
    hm = torch.rand(2, 17, 8, 6)
    perm = list(range(17))
    for a in range(1, 17, 2):
        perm[a], perm[a + 1] = a + 1, a
    assert torch.equal(flip_back(flip_back(hm, perm), perm), hm)
    assert torch.equal(flip_back(hm, perm)[:, 1], hm[:, 2].flip(-1))


def _tiny_cfg(tmp_path, epochs, **hrfast):
    paths = make_synthetic_coco(tmp_path / "syn", num_train=12, num_val=4, image_size=(128, 128), progress=False)
    return merge_config(get_config("w18_small_128x96"), {
        "MODEL": {"IMAGE_SIZE": [64, 64], "HEATMAP_SIZE": [16, 16]},
        "DATASET": {"TRAIN_ANN": str(paths["train_ann"]), "TRAIN_IMAGES": str(paths["train_images"]),
                    "TEST_ANN": str(paths["val_ann"]), "TEST_IMAGES": str(paths["val_images"])},
        "TRAIN": {"END_EPOCH": epochs, "BATCH_SIZE_PER_GPU": 8, "LR_STEP": [2, 3], "LR": 3e-3},
        "TEST": {"BATCH_SIZE_PER_GPU": 16}, "WORKERS": 0,
        "HRFAST": dict({"VAL_EVERY": 100, "SEED": 7}, **hrfast)})


def test_training_lowers_loss_and_writes_outputs(tmp_path):
    cfg = _tiny_cfg(tmp_path, epochs=4)
    r = train(cfg, tmp_path / "run", progress=False, max_steps_per_epoch=3)
    losses = [h["loss"] for h in r["history"]]
    assert losses[-1] < losses[0]
    for name in ("checkpoint.pth", "model_best.pth", "final_state.pth", "metrics.jsonl", "results_val.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 4
    assert 0.0 <= r["stats"]["AP"] <= 1.0
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    cfg = _tiny_cfg(tmp_path, epochs=3, EMA=0.9)
    full = train(cfg, tmp_path / "full", progress=False, max_steps_per_epoch=2)
    # "killed" after epoch 2: a run that ends there, then --resume to the end
    train(merge_config(cfg, {"TRAIN": {"END_EPOCH": 2}}), tmp_path / "cut", progress=False, max_steps_per_epoch=2)
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False, max_steps_per_epoch=2)
    a, b = full["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ea = torch.load(tmp_path / "full" / "final_state.pth")
    eb = torch.load(tmp_path / "cut" / "final_state.pth")
    assert all(torch.equal(ea[k], eb[k]) for k in ea)        # EMA weights too
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(_tiny_cfg(tmp_path, epochs=1), tmp_path / "none", resume=True, progress=False)


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "ck.pth"
    atomic_save({"a": torch.ones(2)}, path)
    with pytest.raises(Exception):
        atomic_save({"bad": lambda: 0}, path)           # cannot be pickled: the write fails
    assert torch.equal(torch.load(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pth"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg, out, result_dir):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    r = train(cfg, out, device="cpu", progress=False, max_steps_per_epoch=2)
    # parameters and BN running statistics: the last epoch's evaluation broadcast rank 0's, so
    # every rank evaluated (and keeps) the weights that were saved
    torch.save({k: v.detach().clone() for k, v in r["model"].state_dict().items()}, f"{result_dir}/rank{rank}.pth")
    if rank == 0:
        torch.save(r["stats"], f"{result_dir}/stats.pth")
    torch.distributed.destroy_process_group()


def test_ddp_gloo_two_processes_keep_identical_parameters_and_evaluate_rank0s(tmp_path):
    import torch.multiprocessing as mp
    cfg = _tiny_cfg(tmp_path, epochs=1)
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, str(tmp_path / "ddp"), str(tmp_path)), nprocs=2)
    s0, s1 = torch.load(tmp_path / "rank0.pth"), torch.load(tmp_path / "rank1.pth")
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    init = train.__globals__["HRNet"].from_config(cfg).state_dict()
    assert any(not torch.equal(init[k], s0[k]) for k in s0 if k.endswith("weight"))  # it did train
    stats = torch.load(tmp_path / "stats.pth")
    assert "AP" in stats                                    # gathered evaluation on rank 0


def test_targets_on_device_equal_worker_targets(tmp_path):
    """Targets made batched in the training step give the same run as targets made per sample
    in the loader (same op, same joints; both through the loss on target maps)."""
    a = train(_tiny_cfg(tmp_path, epochs=1, FUSED_LOSS=False), tmp_path / "a", progress=False, max_steps_per_epoch=2)
    b = train(_tiny_cfg(tmp_path, epochs=1, FUSED_LOSS=False, TARGETS_ON_DEVICE=True, GRAD_CLIP=1e9), tmp_path / "b",
              progress=False, max_steps_per_epoch=2)
    assert a["history"][0]["loss"] == b["history"][0]["loss"]


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_other_optimizers_train_on_the_fused_step(tmp_path, name):
    """TRAIN.OPTIMIZER adamw/sgd reach build_optimizer with the official keys (WD, MOMENTUM,
    NESTEROV) and step on the fused kernel (resume keeping it: tests/test_optim.py)."""
    cfg = merge_config(_tiny_cfg(tmp_path, epochs=1), {"TRAIN": {"OPTIMIZER": name, "NESTEROV": True}})
    r = train(cfg, tmp_path / name, progress=False, max_steps_per_epoch=1)
    assert np.isfinite(r["history"][0]["loss"])
    ck = torch.load(tmp_path / name / "checkpoint.pth", map_location="cpu", weights_only=False)
    group = ck["optimizer"]["param_groups"][0]
    assert group["fused"] is True and group["weight_decay"] == cfg.TRAIN.WD
    if name == "sgd":
        assert group["momentum"] == cfg.TRAIN.MOMENTUM and group["nesterov"] is True


def test_ohkm_and_bad_config_values(tmp_path):
    cfg = merge_config(_tiny_cfg(tmp_path, epochs=1), {"LOSS": {"USE_OHKM": True, "TOPK": 4}})
    r = train(cfg, tmp_path / "ohkm", progress=False, max_steps_per_epoch=1)
    assert r["history"][0]["loss"] > 0
    with pytest.raises(ValueError, match="HRFAST.AMP must be one of"):
        train(merge_config(cfg, {"HRFAST": {"AMP": "fp8"}}), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match=r"TRAIN.OPTIMIZER must be one of \['adam', 'adamw', 'sgd'\]"):
        train(merge_config(cfg, {"TRAIN": {"OPTIMIZER": "lamb"}}), tmp_path / "y", progress=False)


def test_torchrun_cli_two_processes(tmp_path):
    """`torchrun --nproc_per_node 2 -m hrfast train ...` (gloo on CPU): rank 0 writes the outputs."""
    import subprocess
    import sys
    cfg_out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "hrfast", "train", "--config", "w18_small_128x96", "--synthetic",
           "--out", str(cfg_out), "--epochs", "1", "--batch", "4", "--workers", "0", "--quiet", "--device", "cpu",
           "--set", "MODEL.IMAGE_SIZE=[64,64]", "--set", "MODEL.HEATMAP_SIZE=[16,16]",
           "--set", "HRFAST.MAX_TRAIN_IMAGES=16"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("best AP") == 1                      # printed by rank 0 only
    assert (cfg_out / "checkpoint.pth").is_file() and (cfg_out / "model_best.pth").is_file()
    assert len((cfg_out / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_from_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    run = tmp_path / "bad"
    run.mkdir()
    (run / "checkpoint.pth").write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(ValueError, match="is not a readable PyTorch file"):
        train(_tiny_cfg(tmp_path, epochs=1), run, resume=True, progress=False)
    torch.save({"conv1.weight": torch.zeros(1)}, run / "checkpoint.pth")
    with pytest.raises(ValueError, match="not an hrfast training checkpoint"):
        train(_tiny_cfg(tmp_path, epochs=1), run, resume=True, progress=False)


def test_resume_applies_a_new_schedule_refuses_another_model_and_tidies(tmp_path):
    """--resume compares the stored config: a new LR / schedule applies (with a warning), another
    model or optimizer is an error; stale temporaries go, and metrics.jsonl keeps one line per
    epoch even when the run was killed after logging an epoch it did not checkpoint."""
    cfg = _tiny_cfg(tmp_path, epochs=2)
    run = tmp_path / "run"
    train(merge_config(cfg, {"TRAIN": {"END_EPOCH": 1}}), run, progress=False, max_steps_per_epoch=1)
    stale = run / ".checkpoint.pth.99999.tmp"
    stale.write_bytes(b"half a checkpoint")
    with open(run / "metrics.jsonl", "a") as f:   # an epoch logged, then killed before its checkpoint
        f.write('{"epoch": 2, "loss": 1.0}\n')
    with pytest.warns(UserWarning, match=r"changed schedule: TRAIN.LR 0.003 -> 0.5"):
        r = train(merge_config(cfg, {"TRAIN": {"LR": 0.5}}), run, resume=True, progress=False, max_steps_per_epoch=1)
    # the row logs the LR after the epoch's scheduler step: the new 0.5, decayed at LR_STEP 2
    assert r["history"][-1]["lr"] == pytest.approx(0.05)
    assert not stale.exists()
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    with pytest.raises(ValueError, match=r"cannot resume .* another model \(MODEL.EXTRA.STAGE2.NUM_CHANNELS"):
        train(merge_config(cfg, {"TRAIN": {"END_EPOCH": 3},
                                 "MODEL": {"EXTRA": {"STAGE2": {"NUM_CHANNELS": [16, 32]}}}}),
              run, resume=True, progress=False, max_steps_per_epoch=1)
    with pytest.raises(ValueError, match="TRAIN.OPTIMIZER=adam, the config asks for sgd"):
        train(merge_config(cfg, {"TRAIN": {"END_EPOCH": 3, "OPTIMIZER": "sgd"}}), run, resume=True, progress=False)


def test_native_wgrad_key_installs_conv3x3_where_it_pays(tmp_path):
    """HRFAST.NATIVE_WGRAD (default true) puts the 3x3 stride-1 convs on hrfast.ops.conv3x3 for
    bf16 CPU training where its kernel runs natively and the CPU has no AMX; not in fp32, not
    with the key false; a bf16 run on it trains to a finite loss."""
    from hrfast.engine.train import build_run
    from hrfast.ops.conv3x3 import Conv3x3, wgrad_pays
    for amp, key, expected in (("bf16", True, wgrad_pays()), ("bf16", False, False), ("none", True, False)):
        run = build_run(_tiny_cfg(tmp_path, epochs=1, AMP=amp, NATIVE_WGRAD=key), tmp_path / f"run{amp}{key}", "cpu")
        assert any(type(m) is Conv3x3 for m in run.model.modules()) == expected, (amp, key)
    r = train(_tiny_cfg(tmp_path, epochs=1, AMP="bf16"), tmp_path / "bf16", progress=False, max_steps_per_epoch=2)
    assert np.isfinite(r["history"][-1]["loss"])


def test_fused_bn_key_installs_or_leaves_the_hook(tmp_path):
    """HRFAST.FUSED_BN (default true) puts every block and the stem on hrfast.ops.bn_act for
    CPU training; false keeps eager BN + add + ReLU; both train to a finite loss."""
    from hrfast.engine.train import build_run
    from hrfast.ops.bn_act import HAS_OP
    for fused in (True, False):
        run = build_run(_tiny_cfg(tmp_path, epochs=1, FUSED_BN=fused), tmp_path / f"run{fused}", "cpu")
        hooks = [m.norm_act_impl for m in run.model.modules() if hasattr(m, "norm_act_impl")]
        assert hooks and all((h is not None) == (fused and HAS_OP) for h in hooks)
    r = train(_tiny_cfg(tmp_path, epochs=1, FUSED_BN=False), tmp_path / "plain", progress=False, max_steps_per_epoch=2)
    assert np.isfinite(r["history"][-1]["loss"])
