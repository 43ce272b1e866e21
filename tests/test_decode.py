"""decode_heatmaps / final_preds: C++ (and CUDA) kernels vs numpy transcriptions of the published
decoders and vs the pure-PyTorch reference twin."""
import math

import numpy as np
import pytest
import torch
from conftest import requires_cuda
from official_numpy import affine_transform, dark_decode, quarter_decode, udp_decode

from hrfast._extension import HAS_EXTENSION
from hrfast.data.transforms import affine_points, get_affine_transform
from hrfast.ops.decode import decode_heatmaps, decode_heatmaps_ref, final_preds

needs_ext = pytest.mark.skipif(not HAS_EXTENSION, reason="hrfast._C not built")
# without the extension the native front runs the twin: that case would compare it with itself
NATIVE_AND_REF = [pytest.param(decode_heatmaps, marks=needs_ext), decode_heatmaps_ref]
DECODERS = {"quarter": quarter_decode, "dark": dark_decode, "udp": udp_decode}

# (H, W): real W32 256x192 maps, real 384x288 maps, and a small odd one.
SHAPES = [(64, 48), (96, 72), (13, 11)]


def render(B, K, H, W, seed, sigma=2.0, noise=0.02):
    """Network-like heatmaps: a Gaussian at a random sub-pixel spot (some near or on the border),
    a weaker second mode and noise. Returns (heatmaps float32, true centres (B, K, 2))."""
    g = np.random.default_rng(seed)
    mu = g.uniform([-1, -1], [W, H], size=(B, K, 2))
    mu2 = g.uniform([0, 0], [W, H], size=(B, K, 2))
    ys, xs = np.mgrid[0:H, 0:W]
    d1 = (xs - mu[..., 0, None, None]) ** 2 + (ys - mu[..., 1, None, None]) ** 2
    d2 = (xs - mu2[..., 0, None, None]) ** 2 + (ys - mu2[..., 1, None, None]) ** 2
    hm = np.exp(-d1 / (2 * sigma ** 2)) + 0.4 * np.exp(-d2 / (2 * sigma ** 2))
    hm = hm + noise * g.standard_normal(hm.shape)
    return hm.astype(np.float32), mu


def check_against_numpy(fn, method, H, W, seed, atol):
    hm, _ = render(4, 17, H, W, seed)
    hm[0, 0] = -0.1                           # max not > 0: coords must be 0
    hm[0, 1, 0, 0] = 5.0                      # argmax on a corner
    coords, maxvals = fn(torch.from_numpy(hm), method)
    rc, rv = DECODERS[method](hm)
    np.testing.assert_array_equal(maxvals.numpy(), rv[..., 0])
    np.testing.assert_allclose(coords.numpy(), rc, atol=atol, rtol=0)


@needs_ext
@pytest.mark.parametrize("H,W", SHAPES)
def test_quarter_equals_official(H, W):
    check_against_numpy(decode_heatmaps, "quarter", H, W, seed=H, atol=0)  # exact: integers +- 0.25


@needs_ext
@pytest.mark.parametrize("method", ["dark", "udp"])
@pytest.mark.parametrize("H,W", SHAPES)
def test_dark_udp_match_numpy(method, H, W):
    # 1e-4 px: the numpy reference blurs in float32 (cv2), the kernel in float64; the Newton
    # step amplifies the difference of logs by the inverse curvature (~sigma^2 = 4).
    check_against_numpy(decode_heatmaps, method, H, W, seed=H + 1, atol=1e-4)


@pytest.mark.parametrize("method", ["quarter", "dark", "udp"])
@pytest.mark.parametrize("H,W", SHAPES[::2])
def test_reference_twin_matches_numpy(method, H, W):
    check_against_numpy(decode_heatmaps_ref, method, H, W, seed=H + 2, atol=0 if method == "quarter" else 1e-4)


@needs_ext
@pytest.mark.parametrize("method", ["quarter", "dark", "udp"])
def test_native_equals_reference_twin(method):
    hm, _ = render(8, 17, 64, 48, seed=9)
    c, v = decode_heatmaps(torch.from_numpy(hm), method)
    cr, vr = decode_heatmaps_ref(torch.from_numpy(hm), method)
    assert torch.equal(v, vr)
    torch.testing.assert_close(c, cr, atol=1e-5, rtol=0)  # both float64 inside; sum order differs


@pytest.mark.parametrize("fn", NATIVE_AND_REF, ids=["native", "ref"])
@pytest.mark.parametrize("method,tol", [("quarter", 0.3), ("dark", 0.05), ("udp", 0.05)])
def test_recovers_subpixel_centres(fn, method, tol):
    """Clean Gaussians at known sub-pixel centres, away from the border, come back within tol."""
    H, W, B, K = 64, 48, 4, 17
    g = np.random.default_rng(3)
    mu = g.uniform([6, 6], [W - 7, H - 7], size=(B, K, 2))
    ys, xs = np.mgrid[0:H, 0:W]
    hm = np.exp(-((xs - mu[..., 0, None, None]) ** 2 + (ys - mu[..., 1, None, None]) ** 2) / 8.0)
    coords, _ = fn(torch.from_numpy(hm.astype(np.float32)), method)
    # per-axis error: quarter's worst case is 0.25 px on each axis (true offset 0.5 px)
    err = np.abs(coords.numpy() - mu)
    assert err.max() < tol, f"{method}: max error {err.max():.4f} px"


@pytest.mark.parametrize("fn", NATIVE_AND_REF, ids=["native", "ref"])
@pytest.mark.parametrize("method", ["quarter", "dark", "udp"])
def test_degenerate_maps_are_defined(fn, method):
    hm = torch.zeros(1, 5, 9, 7)
    hm[0, 1] = 0.5                          # all equal and positive: first pixel
    hm[0, 2, 3, 4] = float("nan")           # a NaN wins the argmax, score NaN, coords 0
    hm[0, 3, 8, 6] = 1.0                    # on the far corner
    hm[0, 4] = float("inf")                 # all +inf
    coords, maxvals = fn(hm, method)
    assert coords[0, 0].tolist() == [0.0, 0.0] and maxvals[0, 0] == 0  # zero map
    assert maxvals[0, 1] == 0.5
    if method == "udp":   # refines at the border too: the zero-padded blur slopes off the edge
        assert coords[0, 1].abs().max() <= 1.0
    else:
        assert coords[0, 1].tolist() == [0.0, 0.0]
    assert math.isnan(maxvals[0, 2]) and coords[0, 2].tolist() == [0.0, 0.0]
    # udp may move up to a pixel off an isolated spike (edge padding flattens one side)
    near = 1.0 if method == "udp" else 0.5
    assert (coords[0, 3] - torch.tensor([6.0, 8.0])).abs().max() <= near
    assert torch.isfinite(coords[0, 4]).all()
    for H, W in [(1, 1), (1, 7), (7, 1), (2, 2)]:
        m = torch.rand(2, 3, H, W) + 0.1
        c, v = fn(m, method)
        flat = m.reshape(2, 3, -1).argmax(-1)
        assert torch.isfinite(c).all()
        if method != "udp":   # udp's Newton step on noise is unbounded by design: finite only
            assert torch.equal(c.round(), torch.stack([flat % W, flat // W], -1).float())


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_any_float_dtype(dtype):
    """Any float dtype decodes (to float32 outputs) what the twin decodes in float64 from the same
    values: the native op against an independent path, not against itself."""
    hm, _ = render(2, 17, 64, 48, seed=4)
    t = torch.from_numpy(hm).to(dtype)
    c, v = decode_heatmaps(t, "dark")
    c64, v64 = decode_heatmaps_ref(t.double(), "dark")
    assert c.dtype == torch.float32 and v.dtype == torch.float32
    # 1e-3 px: the op works in float32, the twin in float64, on identical input values
    torch.testing.assert_close(c, c64.float(), atol=1e-3, rtol=0)
    torch.testing.assert_close(v, v64.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("args,err,match", [
    ((torch.zeros(2, 17, 64),), ValueError, r"heatmaps must be \(B, K, H, W\)"),
    ((torch.zeros(1, 1, 4, 4, dtype=torch.int32),), TypeError, "floating-point"),
    ((torch.zeros(1, 1, 4, 4), "soft"), ValueError, "method must be one of"),
    ((torch.zeros(1, 1, 4, 4), "dark", 4), ValueError, "blur_kernel must be odd"),
    (([[0.0]],), TypeError, "heatmaps must be a torch.Tensor"),
])
def test_bad_arguments(args, err, match):
    with pytest.raises(err, match=match):
        decode_heatmaps(*args)


def sample_people(B, W, H, seed):
    g = np.random.default_rng(seed)
    center = g.uniform(100, 500, size=(B, 2)).astype(np.float32)
    sw = g.uniform(0.5, 2.0, size=B).astype(np.float32)
    scale = np.stack([sw, sw * H / W], 1).astype(np.float32)   # the official aspect-ratio padding
    return center, scale


@pytest.mark.parametrize("method", ["quarter", "dark"])
def test_final_preds_equals_official_transform(method):
    """final_preds = decode + the official transform_preds (inverse get_affine_transform)."""
    H, W = 64, 48
    hm, _ = render(6, 17, H, W, seed=5)
    center, scale = sample_people(6, W, H, seed=6)
    out = final_preds(torch.from_numpy(hm), torch.from_numpy(center), torch.from_numpy(scale), method)
    rc, rv = DECODERS[method](hm)
    for b in range(6):
        inv = affine_transform(center[b], scale[b], 0, (W, H), inv=True)   # the official code's
        ref = np.c_[rc[b].astype(np.float64), np.ones(len(rc[b]))] @ inv.T
        # 1e-3 image px: float32 matrix from cv2 vs our float64 closed form, at ~500 px
        np.testing.assert_allclose(out[b, :, :2].numpy(), ref, atol=1e-3, rtol=0)
        np.testing.assert_array_equal(out[b, :, 2].numpy(), rv[b, :, 0])


@pytest.mark.parametrize("method,tol", [("quarter", 0.3), ("dark", 0.05), ("udp", 0.05)])
def test_final_preds_round_trip_through_crop(method, tol):
    """Image joints -> the data pipeline's crop transform -> heatmap Gaussians -> final_preds
    gives the image joints back (tolerance in heatmap px, scaled to image px)."""
    H, W, B = 64, 48, 3
    center, scale = sample_people(B, W, H, seed=7)
    g = np.random.default_rng(8)
    udp = method == "udp"
    hm = np.zeros((B, 17, H, W), np.float32)
    img_pts = np.zeros((B, 17, 2))
    ys, xs = np.mgrid[0:H, 0:W]
    for b in range(B):
        mu = g.uniform([6, 6], [W - 7, H - 7], size=(17, 2))          # heatmap px
        if udp:   # UDP maps [0, W-1] onto the box edges, so invert that convention
            s = scale[b] * 200.0
            img_pts[b] = mu * s / np.array([W - 1.0, H - 1.0]) + center[b] - s * 0.5
        else:
            img_pts[b] = affine_points(mu, get_affine_transform(center[b], scale[b], 0, (W, H), inv=True))
            # forward transform of the image point must land on the same heatmap point
            back = affine_points(img_pts[b], get_affine_transform(center[b], scale[b], 0, (W, H)))
            np.testing.assert_allclose(back, mu, atol=1e-3)
        hm[b] = np.exp(-((xs - mu[:, 0, None, None]) ** 2 + (ys - mu[:, 1, None, None]) ** 2) / 8.0)
    out = final_preds(torch.from_numpy(hm), center, scale, method)
    px_per_hm = scale[:, 0] * 200.0 / W
    err = np.abs(out[..., :2].numpy() - img_pts) / px_per_hm[:, None, None]   # per axis
    assert err.max() < tol


def test_final_preds_bad_center():
    with pytest.raises(ValueError, match=r"center and scale must be \(B, 2\)"):
        final_preds(torch.zeros(2, 17, 8, 6), torch.zeros(3, 2), torch.ones(2, 2))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def op_samples(device):
    """Arguments of torch.ops.hrfast.decode_heatmaps: each method on a small batch, on odd
    1-joint maps, on a 1-pixel map and on an empty batch, with two blur sizes."""
    shapes = [(2, 3, 16, 12), (1, 1, 7, 5), (1, 2, 1, 1), (0, 17, 8, 6)]
    for i, (B, K, H, W) in enumerate(shapes):
        hm = torch.from_numpy(render(max(B, 1), K, H, W, seed=10 + i)[0])[:B].to(device)
        for method in ("quarter", "dark", "udp"):
            yield hm, method, 5 if i % 2 else 11


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for args in op_samples(device):
        torch.library.opcheck(torch.ops.hrfast.decode_heatmaps.default, args)


@needs_ext
def test_compiles_fullgraph():
    hm = torch.from_numpy(render(2, 17, 64, 48, seed=11)[0])
    fn = torch.compile(lambda h: decode_heatmaps(h, "dark"), fullgraph=True, backend="eager")
    c, v = fn(hm)
    c0, v0 = decode_heatmaps(hm, "dark")
    assert torch.equal(c, c0) and torch.equal(v, v0)


@requires_cuda
@pytest.mark.parametrize("method", ["quarter", "dark", "udp"])
def test_cuda_equals_cpu(method):
    hm = torch.from_numpy(render(32, 17, 64, 48, seed=12)[0])
    c, v = decode_heatmaps(hm, method)
    cc, vc = decode_heatmaps(hm.cuda(), method)
    assert torch.equal(vc.cpu(), v)
    torch.testing.assert_close(cc.cpu(), c, atol=1e-5, rtol=0)  # same float64 math, other sum order


@needs_ext
@pytest.mark.parametrize("args,match", [((torch.empty(2, 17, 64), "dark", 11), "heatmaps must be"),
                                        ((torch.empty(1, 1, 4, 4, dtype=torch.int32), "dark", 11), "floating"),
                                        ((torch.empty(1, 1, 4, 4), "soft", 11), "method must be"),
                                        ((torch.empty(1, 1, 4, 4), "dark", 4), "odd")])
def test_fake_impl_checks_what_the_kernel_checks(args, match):
    """Under torch.compile the fake runs instead of the kernel: a bad call fails there too."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake = (mode.from_tensor(args[0]),) + args[1:]
        with pytest.raises(Exception, match=match):
            torch.ops.hrfast.decode_heatmaps(*fake)
