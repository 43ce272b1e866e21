"""COCO-WholeBody (Jin et al., ECCV 2020): 133 keypoints per person, in five parts.

An annotation of the official v1.0 files keeps COCO's 17 body keypoints in ``keypoints`` and
the other parts in fields of their own: ``foot_kpts`` (6), ``face_kpts`` (68, the iBUG-68
layout), ``lefthand_kpts`` and ``righthand_kpts`` (21 each: the wrist, then thumb, index,
middle, ring and little finger from the palm out), each with a ``*_valid`` flag, and
``face_box``, ``lefthand_box``, ``righthand_box``. The order of the 133 is mmpose's: body,
foot, face, left hand, right hand.

:func:`flatten_wholebody` turns such a file into a plain COCO keypoints file of 133 joints
(a part whose valid flag is false counts as unlabelled), so the COCO-format loader, the
targets and the decoding need nothing of their own; :func:`split_parts` turns 133 flat
keypoints back into the part fields, which is the results format of the official evaluation.
The OKS sigmas are COCO-WholeBody's (``evaluation/myeval_wholebody.py`` of its repository).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from .coco_meta import COCO_KEYPOINTS, COCO_SKELETON, FLIP_PAIRS
from .keypoints import KeypointSet

# part -> (annotation field, valid flag, first index, count)
PARTS: Dict[str, Tuple[str, str, int, int]] = {
    "body": ("keypoints", "", 0, 17),
    "foot": ("foot_kpts", "foot_valid", 17, 6),
    "face": ("face_kpts", "face_valid", 23, 68),
    "left hand": ("lefthand_kpts", "lefthand_valid", 91, 21),
    "right hand": ("righthand_kpts", "righthand_valid", 112, 21),
}
NUM_WHOLEBODY = 133

_BODY_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
                0.087, 0.087, 0.089, 0.089)
_FOOT_SIGMAS = (0.068, 0.066, 0.066, 0.092, 0.094, 0.094)
_FACE_SIGMAS = (0.042, 0.043, 0.044, 0.043, 0.040, 0.035, 0.031, 0.025, 0.020, 0.023, 0.029, 0.032, 0.037,
                0.038, 0.043, 0.041, 0.045, 0.013, 0.012, 0.011, 0.011, 0.012, 0.012, 0.011, 0.011, 0.013,
                0.015, 0.009, 0.007, 0.007, 0.007, 0.012, 0.009, 0.008, 0.016, 0.010, 0.017, 0.011, 0.009,
                0.011, 0.009, 0.007, 0.013, 0.008, 0.011, 0.012, 0.010, 0.034, 0.008, 0.008, 0.009, 0.008,
                0.008, 0.007, 0.010, 0.008, 0.009, 0.009, 0.009, 0.007, 0.007, 0.008, 0.011, 0.008, 0.008,
                0.008, 0.01, 0.008)
_HAND_SIGMAS = (0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026,
                0.017, 0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031)
WHOLEBODY_SIGMAS = _BODY_SIGMAS + _FOOT_SIGMAS + _FACE_SIGMAS + _HAND_SIGMAS + _HAND_SIGMAS

_FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")


def _hand_names(side: str) -> List[str]:
    return [f"{side}_hand_root"] + [f"{side}_{f}{i}" for f in _FINGERS for i in range(1, 5)]


WHOLEBODY_NAMES: Tuple[str, ...] = tuple(
    list(COCO_KEYPOINTS)
    + ["left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel"]
    + [f"face-{i}" for i in range(68)] + _hand_names("left") + _hand_names("right"))


def _face_pairs() -> List[Tuple[int, int]]:
    """iBUG-68 mirror pairs (0-based within the face): jaw, brows, nostrils, eyes, lips."""
    pairs = [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)]
    pairs += [(31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
    return pairs


def _face_lines() -> List[Tuple[int, int]]:
    """The face's contours as chains of the iBUG-68 points (0-based within the face)."""
    chains = [range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36)]
    closed = [range(36, 42), range(42, 48), range(48, 60), range(60, 68)]
    lines = [(a, a + 1) for c in chains for a in list(c)[:-1]]
    for c in closed:
        c = list(c)
        lines += [(a, b) for a, b in zip(c, c[1:] + c[:1])]
    return lines


def _hand_lines() -> List[Tuple[int, int]]:
    """Each finger from the wrist out (0-based within the hand)."""
    return [(0 if i == 0 else 1 + 4 * f + i - 1, 1 + 4 * f + i) for f in range(5) for i in range(4)]


def _skeleton() -> Tuple[Tuple[int, int], ...]:
    body = [(a - 1, b - 1) for a, b in COCO_SKELETON]
    feet = [(15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22)]      # ankle to toes and heel
    face = [(23 + a, 23 + b) for a, b in _face_lines()]
    hands = [(o + a, o + b) for o in (91, 112) for a, b in _hand_lines()]
    wrists = [(9, 91), (10, 112)]
    return tuple(body + feet + face + wrists + hands)


def _flip_pairs() -> Tuple[Tuple[int, int], ...]:
    feet = [(17, 20), (18, 21), (19, 22)]
    face = [(23 + a, 23 + b) for a, b in _face_pairs()]
    hands = [(91 + i, 112 + i) for i in range(21)]
    return tuple(list(FLIP_PAIRS) + feet + face + hands)


# the upper half of the half-body crop: the head, the arms and the hands (legs and feet below)
_UPPER = tuple(range(11)) + tuple(range(23, 133))
WHOLEBODY133 = KeypointSet(WHOLEBODY_NAMES, _skeleton(), _flip_pairs(), WHOLEBODY_SIGMAS,
                           (1.0,) * NUM_WHOLEBODY, _UPPER)


def part_of(joint: int) -> str:
    """The part ("body", "foot", "face", "left hand", "right hand") of one of the 133."""
    for name, (_, _, start, count) in PARTS.items():
        if start <= joint < start + count:
            return name
    raise ValueError(f"joint {joint} is not one of the {NUM_WHOLEBODY} whole-body keypoints")


def is_wholebody(dataset: Dict) -> bool:
    """True for a COCO-WholeBody annotation file (its annotations have the part fields)."""
    anns = dataset.get("annotations") or []
    return bool(anns) and all(isinstance(a, dict) and "face_kpts" in a and "lefthand_kpts" in a for a in anns[:10])


def flat_keypoints(ann: Dict) -> List[float]:
    """The 133 keypoints of a whole-body annotation, flat (x, y, v) x 133; a part whose
    ``*_valid`` flag is false, or whose field is missing, is unlabelled (zeros)."""
    out: List[float] = []
    for field, valid, _, count in PARTS.values():
        values = ann.get(field) or []
        if (valid and not ann.get(valid, True)) or len(values) != 3 * count:
            values = [0.0] * (3 * count)
        out += [float(v) for v in values]
    return out


def flatten_wholebody(dataset: Dict) -> Dict:
    """A COCO-WholeBody dataset as a COCO keypoints dataset of the 133 (in place, returned):
    each annotation's ``keypoints`` becomes the 133 and ``num_keypoints`` counts the labelled
    ones (the part fields stay); the person category names the 133 and their skeleton."""
    for ann in dataset.get("annotations", []):
        if "foot_kpts" in ann or "face_kpts" in ann:
            flat = flat_keypoints(ann)
            ann["keypoints"] = flat
            ann["num_keypoints"] = sum(1 for v in flat[2::3] if v > 0)
    for cat in dataset.get("categories", []):
        if cat.get("id", 1) == 1:
            cat["keypoints"] = list(WHOLEBODY_NAMES)
            cat["skeleton"] = [[a + 1, b + 1] for a, b in WHOLEBODY133.skeleton]
    return dataset


def split_parts(flat: Sequence[float]) -> Dict[str, List[float]]:
    """133 flat keypoints (x, y, score) as the official results' fields: ``keypoints`` (the
    body's 17), ``foot_kpts``, ``face_kpts``, ``lefthand_kpts``, ``righthand_kpts``."""
    if len(flat) != 3 * NUM_WHOLEBODY:
        raise ValueError(f"whole-body keypoints must hold {3 * NUM_WHOLEBODY} values, got {len(flat)}")
    return {field: list(flat[3 * start:3 * (start + count)]) for field, _, start, count in PARTS.values()}


def tracking_joints(keypoint_set: KeypointSet) -> slice:
    """The joints whose OKS matches people across frames: the body's 17 of a whole-body set
    (faces and hands are small, and their sigmas would make OKS jump with every finger), every
    joint of other sets."""
    if keypoint_set.names == WHOLEBODY_NAMES:
        return slice(0, 17)
    return slice(0, keypoint_set.num_joints)
