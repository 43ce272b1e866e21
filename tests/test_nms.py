"""oks_nms (C++) and its PyTorch twin vs the numpy transcription of the official OKS NMS; rescore."""
import numpy as np
import pytest
import torch
from official_numpy import oks_nms as numpy_oks_nms

from hrfast._extension import HAS_EXTENSION
from hrfast.ops.nms import COCO_SIGMAS, oks_nms, oks_nms_ref, rescore

needs_ext = pytest.mark.skipif(not HAS_EXTENSION, reason="hrfast._C not built")


def random_people(N, seed, K=17):
    """Clusters of near-duplicate poses (what NMS exists for) plus scattered ones."""
    g = np.random.default_rng(seed)
    base = g.uniform(0, 400, size=(max(N // 3, 1), K, 2))
    kp = np.zeros((N, K, 3))
    pick = g.integers(0, base.shape[0], N)
    kp[..., :2] = base[pick] + g.normal(0, g.choice([2.0, 8.0, 30.0], size=(N, 1, 1)), size=(N, K, 2))
    kp[..., 2] = g.uniform(0, 1, size=(N, K))
    scores = g.uniform(0, 1, N).round(2)             # rounding makes ties occur
    areas = g.uniform(2000, 40000, N)
    return kp, scores, areas


@pytest.mark.parametrize("fn", [pytest.param(oks_nms, marks=needs_ext), oks_nms_ref], ids=["native", "ref"])
@pytest.mark.parametrize("N", [0, 1, 7, 40])      # empty, single, small, crowded image
@pytest.mark.parametrize("thr,vis", [(0.9, None), (0.5, 0.2), (0.3, 0.9)])
def test_matches_official(fn, N, thr, vis):
    for seed in range(4):
        kp, scores, areas = random_people(N, seed)
        keep = fn(torch.from_numpy(kp).float(), torch.from_numpy(scores), torch.from_numpy(areas),
                  thr, vis_threshold=vis)
        # the kernel reads float32 keypoints as given; the reference sees the same values
        ref = numpy_oks_nms(kp.astype(np.float32).astype(np.float64), scores, areas, thr,
                            COCO_SIGMAS.numpy(), vis)
        assert keep.dtype == torch.long and keep.tolist() == ref
        if N >= 7 and thr == 0.5:
            assert 0 < len(ref) < N          # suppression really happened


def test_custom_sigmas_and_errors():
    kp, scores, areas = random_people(6, 0, K=5)
    sig = torch.full((5,), 0.05)
    keep = oks_nms(torch.from_numpy(kp), scores, areas, 0.5, sigmas=sig)
    assert keep.tolist() == numpy_oks_nms(kp, scores, areas, 0.5, sig.double().numpy())
    with pytest.raises(ValueError, match="sigmas must be given for K=5"):
        oks_nms(torch.from_numpy(kp), scores, areas, 0.5)
    with pytest.raises(ValueError, match=r"scores must be \(N,\) = \(6,\)"):
        oks_nms(torch.from_numpy(kp), scores[:3], areas, 0.5, sigmas=sig)
    with pytest.raises(ValueError, match=r"keypoints must be a \(N, K, 3\)"):
        oks_nms(torch.zeros(6, 5, 2), scores, areas, 0.5, sigmas=sig)


def test_rescore_official_rule():
    kp = torch.zeros(3, 4, 3)
    kp[0, :, 2] = torch.tensor([0.9, 0.1, 0.5, 0.3])   # mean of > 0.2: (0.9 + 0.5 + 0.3) / 3
    kp[1, :, 2] = 0.1                                   # none visible: 0
    kp[2, :, 2] = 1.0
    s = rescore(kp, torch.tensor([0.5, 1.0, 0.8]), vis_threshold=0.2)
    torch.testing.assert_close(s, torch.tensor([0.5 * 1.7 / 3, 0.0, 0.8]))


def op_samples():
    """Arguments of torch.ops.hrfast.oks_nms: a crowd, one person, nobody, 5 joints; with and
    without a visibility threshold."""
    for i, (N, K, thr, vis) in enumerate([(9, 17, 0.5, 0.2), (1, 17, 0.9, 0.2), (0, 17, 0.9, 0.2), (6, 5, 0.3, 0.0)]):
        kp, scores, areas = random_people(max(N, 1), i, K=K)
        sigmas = COCO_SIGMAS[:K].clone()
        yield (torch.from_numpy(kp[:N]).float(), torch.from_numpy(scores[:N]), torch.from_numpy(areas[:N]),
               thr, sigmas, vis)


@needs_ext
def test_opcheck():
    for args in op_samples():   # a CPU op (the host decides what to keep): no autograd to check
        torch.library.opcheck(torch.ops.hrfast.oks_nms.default, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("fn", [pytest.param(oks_nms, marks=needs_ext), oks_nms_ref], ids=["native", "ref"])
def test_nan_scores_come_last(fn):
    """A NaN score sorts below every number (as -inf), in the native op and its twin; the
    native comparison stays a strict weak order."""
    torch.manual_seed(0)
    kp = torch.rand(5, 17, 3) * 100
    kp[..., 2] = 1.0
    scores = torch.tensor([0.5, float("nan"), 0.9, float("nan"), 0.7])
    areas = torch.full((5,), 5000.0)
    keep = fn(kp, scores, areas, 0.9).tolist()
    # hand-ordered: 0.9, 0.7, 0.5, then the two NaNs in either order
    assert keep[:3] == [2, 4, 0] and sorted(keep[3:]) == [1, 3]


def test_flip_permutation_refuses_pairs_beyond_the_model():
    from hrfast.data.coco_meta import flip_permutation
    assert flip_permutation(17)[1:3] == [2, 1]
    with pytest.raises(ValueError, match="beyond the model's 5"):
        flip_permutation(5)
