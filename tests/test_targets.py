"""gaussian_targets: C++ (and CUDA) kernels vs the numpy transcription and the torch reference."""
import numpy as np
import pytest
import torch
from conftest import requires_cuda
from official_numpy import msra_target, udp_target

from hrfast._extension import HAS_EXTENSION
from hrfast.ops.targets import gaussian_targets, gaussian_targets_ref, msra_window

needs_ext = pytest.mark.skipif(not HAS_EXTENSION, reason="hrfast._C not built")

# (image_size, heatmap_size, sigma): real W32 256x192 (sigma 2), 384x288 (sigma 3), an odd one
# with a non-integer 3*sigma (windows truncate asymmetrically, as Python int() does).
CASES = [((192, 256), (48, 64), 2.0), ((288, 384), (72, 96), 3.0), ((100, 70), (25, 18), 2.5)]


def sample_inputs(B, K, image_size, seed):
    g = torch.Generator().manual_seed(seed)
    w, h = image_size
    # joints spread past the image on every side so out-of-window and border cases occur
    joints = torch.rand(B, K, 2, generator=g) * torch.tensor([w * 1.4, h * 1.4]) - torch.tensor([w * .2, h * .2])
    joints[0, 0] = torch.tensor([0.0, 0.0])                  # exact corner
    joints[0, 1] = torch.tensor([w - 1.0, h - 1.0])          # far corner
    joints[0, 2] = torch.tensor([-30.0, 10.0])               # window partly/fully outside
    visible = (torch.rand(B, K, generator=g) > 0.2).float()
    return joints.float(), visible


def numpy_reference(fn, joints, visible, image_size, heatmap_size, sigma):
    out = [fn(joints[b].double().numpy(), visible[b].numpy(), image_size, heatmap_size, sigma)
           for b in range(joints.shape[0])]
    return np.stack([t for t, _ in out]), np.stack([w for _, w in out])


@needs_ext
@pytest.mark.parametrize("image_size,heatmap_size,sigma", CASES)
def test_msra_bit_identical_to_official(image_size, heatmap_size, sigma):
    joints, visible = sample_inputs(8, 17, image_size, seed=1)
    t, w = gaussian_targets(joints, visible, image_size, heatmap_size, sigma)
    rt, rw = numpy_reference(msra_target, joints, visible, image_size, heatmap_size, sigma)
    assert t.dtype == torch.float32 and t.shape == (8, 17, heatmap_size[1], heatmap_size[0])
    np.testing.assert_array_equal(t.numpy(), rt)  # bit-identical
    np.testing.assert_array_equal(w.numpy(), rw)
    assert (w == 0).any() and (t.sum((2, 3)) > 0).any()   # both branches exercised


@needs_ext
@pytest.mark.parametrize("image_size,heatmap_size,sigma", CASES)
def test_udp_matches_numpy(image_size, heatmap_size, sigma):
    joints, visible = sample_inputs(4, 17, image_size, seed=2)
    t, w = gaussian_targets(joints, visible, image_size, heatmap_size, sigma, encoding="udp")
    rt, rw = numpy_reference(udp_target, joints, visible, image_size, heatmap_size, sigma)
    np.testing.assert_allclose(t.numpy(), rt, atol=1e-6, rtol=0)  # float64 math, one float32 rounding
    np.testing.assert_array_equal(w.numpy(), rw)


@pytest.mark.parametrize("encoding", ["msra", "udp"])
@pytest.mark.parametrize("image_size,heatmap_size,sigma", CASES[:2])
def test_reference_path_equals_numpy(encoding, image_size, heatmap_size, sigma):
    joints, visible = sample_inputs(3, 17, image_size, seed=3)
    t, w = gaussian_targets_ref(joints, visible, image_size, heatmap_size, sigma, encoding)
    fn = msra_target if encoding == "msra" else udp_target
    rt, rw = numpy_reference(fn, joints, visible, image_size, heatmap_size, sigma)
    if encoding == "msra":
        np.testing.assert_array_equal(t.numpy(), rt)
    else:
        np.testing.assert_allclose(t.numpy(), rt, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(w.numpy(), rw)


def test_bool_visibility_and_joint_weights():
    joints, visible = sample_inputs(2, 17, (192, 256), seed=4)
    jw = torch.linspace(0.5, 1.5, 17)
    t1, w1 = gaussian_targets(joints, visible.bool(), (192, 256), (48, 64), joint_weights=jw)
    t0, w0 = gaussian_targets(joints, visible, (192, 256), (48, 64))
    assert torch.equal(t1, t0)
    assert torch.allclose(w1, w0 * jw)


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(joints=torch.zeros(2, 17)), ValueError, r"joints must be \(B, K, 2\)"),
    (dict(visible=torch.ones(2, 16)), ValueError, r"visible must be \(B, K\) = \(2, 17\)"),
    (dict(encoding="gauss"), ValueError, "encoding must be one of"),
    (dict(sigma=0.0), ValueError, "sigma must be > 0"),
    (dict(heatmap_size=(48,)), ValueError, r"heatmap_size must be \(width, height\)"),
    (dict(joints=[[1, 2]]), TypeError, "joints must be a torch.Tensor"),
])
def test_bad_arguments(kwargs, err, match):
    args = dict(joints=torch.zeros(2, 17, 2), visible=torch.ones(2, 17), image_size=(192, 256),
                heatmap_size=(48, 64))
    args.update(kwargs)
    with pytest.raises(err, match=match):
        gaussian_targets(**args)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def op_samples(device):
    """Arguments of torch.ops.hrfast.gaussian_targets: the common case, three joints on an odd
    map with UDP, a batch of 17 joints at a small size, joints in no image."""
    cases = [(2, 5, (192, 256), (48, 64), 2.0, "msra"), (1, 3, (95, 127), (23, 31), 3.0, "udp"),
             (3, 17, (96, 128), (24, 32), 1.5, "msra"), (0, 17, (192, 256), (48, 64), 2.0, "udp")]
    for i, (B, K, image, heatmap, sigma, encoding) in enumerate(cases):
        joints, visible = sample_inputs(max(B, 1), K, image, seed=5 + i)
        window = msra_window(sigma) if encoding == "msra" else torch.empty(0)
        yield (joints[:B].to(device), visible[:B].to(device), list(image), list(heatmap), sigma, encoding,
               window.to(device))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for args in op_samples(device):
        torch.library.opcheck(torch.ops.hrfast.gaussian_targets.default, args)


@needs_ext
def test_compiles_fullgraph():
    joints, visible = sample_inputs(2, 5, (192, 256), seed=6)
    fn = torch.compile(lambda j, v: gaussian_targets(j, v, (192, 256), (48, 64)), fullgraph=True,
                       backend="eager")
    t, w = fn(joints, visible)
    t0, w0 = gaussian_targets(joints, visible, (192, 256), (48, 64))
    assert torch.equal(t, t0) and torch.equal(w, w0)


@requires_cuda
@pytest.mark.parametrize("encoding", ["msra", "udp"])
def test_cuda_equals_cpu(encoding):
    joints, visible = sample_inputs(32, 17, (192, 256), seed=7)
    t, w = gaussian_targets(joints, visible, (192, 256), (48, 64), encoding=encoding)
    tc, wc = gaussian_targets(joints.cuda(), visible.cuda(), (192, 256), (48, 64), encoding=encoding)
    torch.testing.assert_close(tc.cpu(), t, atol=1e-6, rtol=0)  # device exp may differ by 1 ulp
    assert torch.equal(wc.cpu(), w)


@pytest.mark.parametrize("fn", [pytest.param(gaussian_targets, marks=needs_ext), gaussian_targets_ref],
                         ids=["native", "ref"])
@pytest.mark.parametrize("encoding", ["msra", "udp"])
def test_non_finite_joints_get_weight_zero(fn, encoding):
    """A NaN or inf joint is no place: weight 0 and an empty heatmap, native and twin alike
    (the native op used to cast NaN to an integer, which C++ leaves undefined)."""
    joints = torch.tensor([[[30.0, 40.0], [float("nan"), 10.0], [5.0, float("inf")], [float("-inf"), 0.0]]])
    visible = torch.ones(1, 4)
    t, w = fn(joints, visible, (96, 128), (24, 32), 2.0, encoding)
    assert w.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert t[0, 1:].abs().sum() == 0 and t[0, 0].max() > 0.9


def test_window_cache_is_bounded():
    from hrfast.ops import targets
    for s in range(1, 3 * targets._MAX_WINDOWS):
        msra_window(float(s))
    assert len(targets._WINDOWS) <= targets._MAX_WINDOWS


@needs_ext
@pytest.mark.parametrize("shapes,match", [(((2, 17, 3), (2, 17)), "joints must be"),
                                          (((2, 17, 2), (2, 16)), "visible must be")])
def test_fake_impl_checks_what_the_kernel_checks(shapes, match):
    """Under torch.compile the fake runs instead of the kernel: a bad call fails there too."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        joints, visible = (mode.from_tensor(torch.zeros(s)) for s in shapes)
        with pytest.raises(Exception, match=match):
            torch.ops.hrfast.gaussian_targets(joints, visible, [192, 256], [48, 64], 2.0, "msra", torch.empty(0))


def test_constant_under_compile_sets_what_the_public_decorator_sets():
    """hrfast marks the msra window constant for Dynamo without importing Dynamo at import time;
    the mark must stay the one torch.compiler.assume_constant_result makes."""
    from hrfast.ops.targets import constant_under_compile

    def public():
        pass

    def ours():
        pass

    torch.compiler.assume_constant_result(public)
    constant_under_compile(ours)
    assert vars(public) == vars(ours) == {"_dynamo_marked_constant": True}


def test_the_msra_window_is_a_constant_under_compile():
    """Traced, numpy's exp would become torch's and the window could lose bit-identity; marked
    constant, the compiled graph holds the window itself and computes no exp."""
    from hrfast.ops.targets import _numpy_msra_window
    targets = []

    def backend(gm, example_inputs):
        targets.extend(str(node.target) for node in gm.graph.nodes)
        return gm

    out = torch.compile(lambda s: msra_window(1.5) * s, backend=backend, fullgraph=True)(torch.tensor(2.0))
    assert torch.equal(out, _numpy_msra_window(1.5) * 2)
    assert targets and not [t for t in targets if "exp" in t], targets
