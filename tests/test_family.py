"""The HRNet family: classification, facial landmarks and segmentation nets built from the
official experiment YAMLs, with each repository's state_dict keys and forward function
(checked against ``official_forward``, which reads the keys as the official modules name them)."""
import copy

import pytest
import torch
import yaml
from official_forward import cls_forward, pose_forward, v2_forward

import hrfast
from hrfast.config import ConfigError
from hrfast.kernels.launch import HAS_TRITON, count_launches
from hrfast.models import HRNetClassifier, HRNetLandmarks, HRNetSegmentation


def stage(blocks, channels, modules, block="BASIC"):
    return {"NUM_MODULES": modules, "NUM_BRANCHES": len(channels), "BLOCK": block, "NUM_BLOCKS": blocks,
            "NUM_CHANNELS": channels, "FUSE_METHOD": "SUM"}


def extra(w, blocks=4, modules=(1, 4, 3), stage1_blocks=4):
    """MODEL.EXTRA of an official HRNet-W<w> (the published stage layout; smaller for tests)."""
    return {"STAGE1": stage([stage1_blocks], [64], 1, "BOTTLENECK"),
            "STAGE2": stage([blocks] * 2, [w, 2 * w], modules[0]),
            "STAGE3": stage([blocks] * 3, [w, 2 * w, 4 * w], modules[1]),
            "STAGE4": stage([blocks] * 4, [w, 2 * w, 4 * w, 8 * w], modules[2]), "FINAL_CONV_KERNEL": 1}


def yaml_file(tmp_path, doc):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def randomized(model):
    """Every parameter and BN statistic random (eval-mode BN then does real work)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
    return model.eval()


TINY = extra(4, blocks=1, modules=(1, 2, 2), stage1_blocks=1)


@pytest.mark.parametrize("task", ["cls", "face", "seg", "seg_align", "face_k3"])
def test_each_family_member_computes_the_official_function_on_the_official_keys(tmp_path, task):
    ex = copy.deepcopy(TINY)
    model_sec = {"cls": {"NAME": "cls_hrnet"}, "face": {"NAME": "hrnet", "NUM_JOINTS": 7},
                 "face_k3": {"NAME": "hrnet", "NUM_JOINTS": 7}, "seg": {"NAME": "seg_hrnet"},
                 "seg_align": {"NAME": "seg_hrnet", "ALIGN_CORNERS": True}}[task]
    if task == "face_k3":
        ex["FINAL_CONV_KERNEL"] = 3
    doc = {"MODEL": {**model_sec, "EXTRA": ex}, "DATASET": {"NUM_CLASSES": 5}}
    model = randomized(hrfast.build_model(yaml_file(tmp_path, doc)))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        if task == "cls":
            ref, w = cls_forward(model.state_dict(), ex, x)
        elif task.startswith("face"):
            # the face net's layer1 is the fixed Bottleneck x4 whatever STAGE1 says
            ex4 = {**ex, "STAGE1": stage([4], [64], 1, "BOTTLENECK")}
            ref, w = v2_forward(model.state_dict(), ex4, x, "head", 1 if task == "face_k3" else 0, False)
        else:
            ref, w = v2_forward(model.state_dict(), ex, x, "last_layer", 0, task == "seg_align")
    assert w.unused() == set()          # nothing beyond the official keys
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    want = {"cls": (2, 1000), "face": (2, 7, 16, 24), "face_k3": (2, 7, 18, 26), "seg": (2, 5, 16, 24),
            "seg_align": (2, 5, 16, 24)}[task]
    assert tuple(out.shape) == want


def test_the_pose_net_through_build_model_is_the_official_pose_hrnet(tmp_path):
    doc = {"MODEL": {"NAME": "pose_hrnet", "NUM_JOINTS": 17, "IMAGE_SIZE": [96, 128], "EXTRA": TINY}}
    model = randomized(hrfast.build_model(yaml_file(tmp_path, doc)))
    assert isinstance(model, hrfast.HRNet)
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        ref, w = pose_forward(model.state_dict(), TINY, x)
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    assert w.unused() == set()
    assert isinstance(hrfast.build_model("w18_small_128x96"), hrfast.HRNet)


@pytest.mark.parametrize("kind,w,params", [
    ("cls_hrnet", 18, 21_299_004), ("cls_hrnet", 48, 77_469_864), ("seg_hrnet", 48, 65_859_379)])
def test_parameter_counts_are_the_published_ones(kind, w, params):
    """HRNet-W18-C 21.3M and HRNet-W48-C 77.5M (HRNet-Image-Classification's table),
    HRNetV2-W48 65.9M (HRNet-Semantic-Segmentation's, 19 Cityscapes classes)."""
    model = hrfast.build_model({"MODEL": {"NAME": kind, "EXTRA": extra(w)}, "DATASET": {"NUM_CLASSES": 19}})
    n = sum(p.numel() for p in model.parameters())
    assert n == params and round(n / 1e6, 1) == {18: 21.3, 48: 77.5 if kind == "cls_hrnet" else 65.9}[w]


def test_a_state_dict_in_the_official_layout_loads_strictly():
    """A checkpoint written by one build loads strictly into a fresh one (same keys, shapes)."""
    for cls, doc in [(HRNetClassifier, {"NAME": "cls_hrnet"}), (HRNetLandmarks, {"NAME": "hrnet", "NUM_JOINTS": 68}),
                     (HRNetSegmentation, {"NAME": "seg_hrnet"})]:
        a = randomized(hrfast.build_model({"MODEL": {**doc, "EXTRA": TINY}}))
        b = hrfast.build_model({"MODEL": {**doc, "EXTRA": TINY}})
        assert isinstance(a, cls)
        b.load_state_dict(a.state_dict(), strict=True)
        b.eval()
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("doc,match", [
    ({"MODEL": {"NAME": "resnet"}}, "MODEL.NAME must be one of"),
    ({"MODEL": {"NAME": "cls_hrnet", "EXTRA": {"STAGE3": TINY["STAGE3"], "STAGE4": TINY["STAGE4"]}}},
     "MODEL.EXTRA.STAGE2 must be a mapping"),
    ({"MODEL": {"NAME": "seg_hrnet", "EXTRA": {**TINY, "STAGE2": {**TINY["STAGE2"], "BLOCK": "DENSE"}}}},
     r"STAGE2.BLOCK must be one of"),
    ({"MODEL": {"NAME": "hrnet", "EXTRA": {**TINY, "STAGE3": {**TINY["STAGE3"], "NUM_BRANCHES": 2}}}},
     "STAGE3: NUM_BRANCHES, NUM_BLOCKS and NUM_CHANNELS must agree"),
])
def test_a_bad_model_section_is_one_clear_error(doc, match):
    with pytest.raises(ConfigError, match=match):
        hrfast.build_model(doc)


def test_every_family_net_has_units_the_kernels_fuse():
    """Nearest units (pose, classification) and HRNetV2's bilinear ones (face, segmentation)."""
    from hrfast.ops.exchange import unit_supported
    for name in ("seg_hrnet", "cls_hrnet", "hrnet"):
        net = hrfast.build_model({"MODEL": {"NAME": name, "EXTRA": TINY}})
        assert all(unit_supported(u) for u in net.exchange_units()), name


@pytest.mark.skipif(not HAS_TRITON, reason="the fused units need Triton (pip install 'hrfast[triton]')")
@pytest.mark.parametrize("doc", [{"NAME": "cls_hrnet"}, {"NAME": "seg_hrnet", "ALIGN_CORNERS": True},
                                 {"NAME": "hrnet", "NUM_JOINTS": 7}], ids=["cls", "seg", "face"])
def test_each_family_net_runs_on_the_fused_units(doc):
    """backend='triton' (the interpreter on the CPU): the same outputs as the reference, with
    the exchange units (nearest or bilinear) and transitions on the Triton kernels."""
    ref = randomized(hrfast.build_model({"MODEL": {**doc, "EXTRA": TINY}}))
    fused = copy.deepcopy(ref).set_backend("triton")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), count_launches() as launches:
        out = fused(x)
    assert launches.n > 0
    with torch.no_grad():
        torch.testing.assert_close(out, ref(x), atol=1e-4, rtol=1e-4)   # fp32, other summation order


def test_an_imagenet_checkpoint_initialises_every_family_backbone(tmp_path):
    """MODEL.PRETRAINED's loader takes a classification checkpoint (the official
    hrnet_w*-*.pth format) into the face and segmentation nets: the stem, layer1, transitions
    and stages are copied, the classification head is skipped, and the line says so."""
    from hrfast.weights import load_pretrained
    ex = extra(4, blocks=1, modules=(1, 2, 2))   # layer1 of 4 Bottlenecks, as the face net has
    imagenet = randomized(hrfast.build_model({"MODEL": {"NAME": "cls_hrnet", "EXTRA": ex}}))
    path = tmp_path / "hrnet_tiny_imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    for doc in ({"NAME": "hrnet", "NUM_JOINTS": 98}, {"NAME": "seg_hrnet"}):
        net = hrfast.build_model({"MODEL": {**doc, "EXTRA": ex}})
        line = load_pretrained(net, path)
        backbone = [k for k in net.state_dict() if k.split(".")[0] not in ("head", "last_layer")]
        assert all(torch.equal(net.state_dict()[k], imagenet.state_dict()[k]) for k in backbone)
        assert f"loaded {len(backbone)} of the network's {len(net.state_dict())} tensors" in line
        assert "not in this network (classifier, downsamp_modules, final_layer, incre_modules)" in line


@pytest.mark.parametrize("runtime", ["torch", "openvino"])
def test_optimize_serves_every_family_member(runtime):
    """hrfast.optimize (BN folded; OpenVINO: the ONNX export at the model's input size) gives
    each net's outputs; fp32, so only the summation order differs."""
    if runtime == "openvino":
        pytest.importorskip("openvino", reason="the openvino runtime needs the cpu-runtimes extra")
    docs = [{"MODEL": {"NAME": "cls_hrnet", "IMAGE_SIZE": [64, 64], "EXTRA": TINY}},
            {"MODEL": {"NAME": "hrnet", "NUM_JOINTS": 9, "IMAGE_SIZE": [64, 64], "EXTRA": TINY}},
            {"MODEL": {"NAME": "seg_hrnet", "EXTRA": TINY}, "TRAIN": {"IMAGE_SIZE": [96, 64]}}]
    for doc in docs:
        model = randomized(hrfast.build_model(doc))
        x = torch.randn(1, 3, model.input_size[1], model.input_size[0])
        fast = hrfast.optimize(model, runtime=runtime, dtype="fp32", compile=False)
        with torch.no_grad():
            ref = model(x)
            err = ((fast(x) - ref).abs().max() / ref.abs().max()).item()
        assert err < 1e-5, (doc["MODEL"]["NAME"], err)


def test_int8_on_openvino_serves_every_family_member():
    """optimize(dtype="int8") on OpenVINO (NNCF, first and last convs in float) on the nets,
    calibrated on the input itself: int8's rounding, a few percent of the output's range at
    most on these random nets (measured 1-3%), not a wrong function (which errs by ~100%).
    The torch runtime's int8 needs Inductor, minutes a net here: RESULTS.md has it."""
    pytest.importorskip("openvino", reason="int8 on OpenVINO needs the int8-openvino extra")
    pytest.importorskip("nncf", reason="int8 on OpenVINO needs the int8-openvino extra")
    docs = [{"MODEL": {"NAME": "hrnet", "NUM_JOINTS": 9, "IMAGE_SIZE": [64, 64], "EXTRA": TINY}},
            {"MODEL": {"NAME": "seg_hrnet", "EXTRA": TINY}, "TRAIN": {"IMAGE_SIZE": [96, 64]}}]
    for doc in docs:     # HRNetV2's two (the classifier's nearest units are the pose net's, tested there)
        model = randomized(hrfast.build_model(doc))
        x = torch.randn(2, 3, model.input_size[1], model.input_size[0])
        fast = hrfast.optimize(model, runtime="openvino", dtype="int8", calibration=[x], compile=False)
        with torch.no_grad():
            ref, out = model(x), fast(x)
        assert out.shape == ref.shape
        assert ((out - ref).abs().max() / ref.abs().max()).item() < 0.08, doc["MODEL"]["NAME"]


def test_a_segmentation_checkpoint_of_the_training_wrapper_loads(tmp_path):
    """The segmentation repository saves its training wrapper: the net under ``model.`` and
    the loss's class weights under ``loss.``. load_weights takes the net's part, strictly."""
    from hrfast.weights import load_weights
    a = randomized(hrfast.build_model({"MODEL": {"NAME": "seg_hrnet", "EXTRA": TINY}}))
    wrapped = {f"model.{k}": v for k, v in a.state_dict().items()}
    wrapped["loss.criterion.weight"] = torch.ones(19)
    torch.save(wrapped, tmp_path / "final_state.pth")
    b = hrfast.build_model({"MODEL": {"NAME": "seg_hrnet", "EXTRA": TINY}})
    load_weights(b, tmp_path / "final_state.pth")
    assert all(torch.equal(b.state_dict()[k], v) for k, v in a.state_dict().items())


def test_bench_and_info_take_the_family_configs(capsys):
    from hrfast.cli import main
    assert main(["bench", "--config", "cls_hrnet_w18_224", "--batch", "1", "--warmup", "0", "--iters", "1"]) == 0
    assert "cls_hrnet_w18_224 batch 1 fp32 on cpu:" in capsys.readouterr().out
    assert main(["info"]) == 0
    rows = {line.split()[0]: line.split()[2] for line in capsys.readouterr().out.splitlines()
            if line.startswith(("cls_", "face_", "seg_"))}
    # the published parameter counts (the face net's table gives none to the unit)
    assert rows["cls_hrnet_w18_224"] == "21,299,004" and rows["seg_hrnetv2_w48_cityscapes_1024x512"] == "65,859,379"
    assert set(rows) == set(hrfast.models.family_configs())


@pytest.mark.parametrize("name", ["hrnet", "seg_hrnet"])
def test_the_low_resolution_head_is_the_concatenated_head(name):
    """The head's 1x1 conv run per branch at the branch's resolution, then resized and summed,
    equals the official concatenate-then-convolve (float32: another summation order)."""
    model = randomized(hrfast.build_model({"MODEL": {"NAME": name, "NUM_JOINTS": 5, "EXTRA": TINY}}))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        model.low_res_head = True
        fast = model(x)
        model.low_res_head = False
        torch.testing.assert_close(fast, model(x), atol=1e-5, rtol=1e-5)
