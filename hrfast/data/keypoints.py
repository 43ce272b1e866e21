"""What a keypoint set is: names, skeleton, flip pairs, OKS sigmas, loss weights and the
upper/lower-body split. One object describes a dataset's keypoints to every stage (training
augmentation, loss weights, flip test, OKS NMS, COCOeval, drawing), so nothing downstream
assumes COCO's 17 joints.

A COCO-format annotation file names its keypoints and skeleton in its category
(:meth:`KeypointSet.from_category`); what a file cannot say comes from the config
(``DATASET.FLIP_PAIRS``, ``SIGMAS``, ``JOINT_WEIGHTS``, ``UPPER_BODY``) or is derived:
flip pairs from ``left``/``right`` names, the body split from leg names, sigmas
:data:`UNIFORM_SIGMA` and weights 1.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from ..ops.nms import COCO_SIGMAS
from ..outputs import write_json
from .coco_meta import COCO_KEYPOINTS, COCO_SKELETON, FLIP_PAIRS, JOINTS_WEIGHT, UPPER_BODY

# OKS sigma for a keypoint set that does not give its own: the mean of COCO's 17 (0.0892,
# in COCOeval's units, where the nose has 0.026 and the hips 0.107). OKS with it treats every
# joint like an average COCO joint.
UNIFORM_SIGMA = 0.089
# names that put a joint in the lower half of the half-body augmentation
_LOWER = re.compile(r"hip|knee|ankle|foot|feet|heel|toe|leg|thigh|shin|paw_b|hind", re.IGNORECASE)
_SIDE = re.compile(r"(?<![a-z])(left|right)(?![a-z])|^(l|r)_", re.IGNORECASE)

Pairs = Tuple[Tuple[int, int], ...]


@dataclass(frozen=True)
class KeypointSet:
    """A dataset's keypoints. ``skeleton`` and ``flip_pairs`` hold 0-based joint indices;
    ``sigmas`` are OKS sigmas in COCOeval's units; ``upper_body`` lists the joints of the
    half-body augmentation's upper half (the others are the lower half)."""
    names: Tuple[str, ...]
    skeleton: Pairs = ()
    flip_pairs: Pairs = ()
    sigmas: Tuple[float, ...] = ()
    joint_weights: Tuple[float, ...] = ()
    upper_body: Tuple[int, ...] = ()

    def __post_init__(self):
        k = len(self.names)
        for what, pairs in (("skeleton", self.skeleton), ("flip_pairs", self.flip_pairs)):
            bad = [p for p in pairs if len(p) != 2 or not all(0 <= int(j) < k for j in p)]
            if bad:
                raise ValueError(f"{what} {list(bad[0])} names a joint outside 0..{k - 1} ({k} keypoints)")
        for what, values in (("sigmas", self.sigmas), ("joint_weights", self.joint_weights)):
            if len(values) != k:
                raise ValueError(f"{what} must hold one value per keypoint ({k}), got {len(values)}")
            if not all(float(v) > 0 for v in values):
                raise ValueError(f"{what} must be positive, got {list(values)}")
        if any(not 0 <= j < k for j in self.upper_body):
            raise ValueError(f"upper_body names a joint outside 0..{k - 1}: {list(self.upper_body)}")

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def lower_body(self) -> Tuple[int, ...]:
        return tuple(j for j in range(self.num_joints) if j not in self.upper_body)

    def side(self, joint: int) -> str:
        """"left", "right" or "mid", from the flip pairs (the first of a pair is left unless
        its name says otherwise), for drawing."""
        name = self.names[joint].lower()
        if "left" in name or name.startswith("l_"):
            return "left"
        if "right" in name or name.startswith("r_"):
            return "right"
        for a, b in self.flip_pairs:
            if joint in (a, b):
                return "left" if joint == a else "right"
        return "mid"

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, names: Sequence[str], skeleton: Sequence = (), flip_pairs: Optional[Sequence] = None,
              sigmas: Optional[Sequence[float]] = None, joint_weights: Optional[Sequence[float]] = None,
              upper_body: Optional[Sequence[int]] = None) -> "KeypointSet":
        """A set from ``names`` and whatever is known; the rest derived (see the module)."""
        names = tuple(str(n) for n in names)
        coco = names == COCO_KEYPOINTS
        return cls(names, _pairs(skeleton),
                   _pairs(flip_pairs) if flip_pairs else (FLIP_PAIRS if coco else derive_flip_pairs(names)),
                   tuple(float(s) for s in sigmas) if sigmas else
                   (tuple(COCO_SIGMAS.tolist()) if coco else (UNIFORM_SIGMA,) * len(names)),
                   tuple(float(w) for w in joint_weights) if joint_weights else
                   (JOINTS_WEIGHT if coco else (1.0,) * len(names)),
                   tuple(int(j) for j in upper_body) if upper_body else
                   (UPPER_BODY if coco else tuple(j for j, n in enumerate(names) if not _LOWER.search(n))))

    @classmethod
    def from_category(cls, category: Dict, **known) -> "KeypointSet":
        """A set from a COCO category (``keypoints``: names; ``skeleton``: 1-based limbs)."""
        names = category.get("keypoints") or []
        skeleton = [(int(a) - 1, int(b) - 1) for a, b in category.get("skeleton") or []]
        return cls.build(names, skeleton, **known)

    @classmethod
    def unnamed(cls, num_joints: int, **known) -> "KeypointSet":
        """A set of ``num_joints`` joints named ``joint_<i>``, for files that name none."""
        return cls.build([f"joint_{i}" for i in range(num_joints)], **known)

    # -- files ------------------------------------------------------------------------------
    def to_dict(self) -> Dict:
        return {k: [list(v) if isinstance(v, tuple) else v for v in vals] for k, vals in asdict(self).items()}

    def save(self, path) -> Path:
        path = Path(path)
        write_json(path, self.to_dict(), indent=1)
        return path

    @classmethod
    def load(cls, path) -> "KeypointSet":
        """A set from a json file: one that :meth:`save` wrote (``hrfast train`` writes
        ``keypoint_set.json``), or a COCO annotation file (its first category with keypoints)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"keypoints file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"keypoints file {path} is not valid json: {exc}") from None
        try:
            return cls._from_json(data, path)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"lacks {exc.args[0]!r}" if isinstance(exc, KeyError) else f"is malformed ({exc})"
            raise ValueError(f"keypoints file {path} {what}") from None

    @classmethod
    def _from_json(cls, data, path) -> "KeypointSet":
        if isinstance(data, dict) and "names" in data:
            return cls(tuple(data["names"]), _pairs(data.get("skeleton", ())), _pairs(data.get("flip_pairs", ())),
                       tuple(data["sigmas"]), tuple(data["joint_weights"]), tuple(data.get("upper_body", ())))
        categories = [c for c in (data.get("categories") or []) if isinstance(c, dict) and c.get("keypoints")] \
            if isinstance(data, dict) else []
        if not categories:
            raise ValueError("neither a keypoint-set json (names, skeleton, ...) nor a COCO annotation file with "
                             "a keypoint category")
        return cls.from_category(categories[0])


def _pairs(pairs) -> Pairs:
    try:
        return tuple((int(a), int(b)) for a, b in pairs or ())
    except (TypeError, ValueError):
        raise ValueError(f"pairs must be a list of [a, b] joint indices, got {pairs!r}") from None


def derive_flip_pairs(names: Sequence[str]) -> Pairs:
    """Left/right pairs by name: ``left_eye`` with ``right_eye``, ``l_paw`` with ``r_paw``,
    ``eye_left`` with ``eye_right``. Joints without a partner are their own mirror image."""
    index = {n.lower(): i for i, n in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        low = name.lower()
        m = _SIDE.search(low)
        if not m or (m.group(1) or m.group(2)) not in ("left", "l"):
            continue
        other = low[:m.start()] + ("right" if m.group(1) else "r_") + low[m.end():]
        if other in index:
            pairs.append((i, index[other]))
    return tuple(pairs)


COCO17 = KeypointSet.build(COCO_KEYPOINTS, [(a - 1, b - 1) for a, b in COCO_SKELETON])
