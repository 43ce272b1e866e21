"""Pose tracking across video frames, after SimpleBaseline's tracker (Xiao, Wu, Wei, ECCV 2018):
people of a new frame are matched greedily to the live tracks by pose similarity (OKS of their
keypoints), with box IoU as the fallback when a pose is too unsure to compare. A track that
finds no match is kept for ``max_missed`` frames, then ended; an unmatched person starts a new
track. Its boxes for the next frame come from its keypoints (:func:`boxes_from_keypoints`),
which is how frames between two detections get their people.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .data.keypoints import COCO17, KeypointSet
from .data.wholebody import tracking_joints
from .detect.base import box_iou


def boxes_from_keypoints(keypoints: np.ndarray, threshold: float = 0.2, enlarge: float = 1.2,
                         min_joints: int = 3) -> np.ndarray:
    """(N, K, 3) keypoints -> (M, 5) ``[x, y, w, h, score]``: the box around each person's
    joints above ``threshold``, enlarged by ``enlarge`` about its centre (SimpleBaseline: 20%).
    People with fewer than ``min_joints`` such joints give no box; the score is their mean
    joint score."""
    out = []
    for person in np.asarray(keypoints, np.float64):
        ok = person[:, 2] > threshold
        if ok.sum() < min_joints:
            continue
        lo, hi = person[ok, :2].min(0), person[ok, :2].max(0)
        c, size = (lo + hi) / 2, np.maximum(hi - lo, 1.0) * enlarge
        out.append([c[0] - size[0] / 2, c[1] - size[1] / 2, size[0], size[1], person[ok, 2].mean()])
    return np.asarray(out, np.float64).reshape(-1, 5)


def oks_matrix(a: np.ndarray, b: np.ndarray, sigmas: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """OKS of (N, K, 3) people ``a`` against (M, K, 3) people ``b`` (N, M), counting the joints
    confident in both; the scale is the area of ``b``'s keypoint box. NaN where no joint counts."""
    out = np.full((len(a), len(b)), np.nan)
    var = (2 * np.asarray(sigmas, np.float64)) ** 2
    for j, q in enumerate(b):
        ok_q = q[:, 2] > threshold
        if ok_q.sum() < 2:
            continue
        span = q[ok_q, :2].max(0) - q[ok_q, :2].min(0)
        area = max(span[0] * span[1], 1.0)
        for i, p in enumerate(a):
            both = ok_q & (p[:, 2] > threshold)
            if both.any():
                d2 = ((p[both, :2] - q[both, :2]) ** 2).sum(1)
                out[i, j] = np.exp(-d2 / var[both] / (area + np.spacing(1)) / 2).mean()
    return out


@dataclass
class Track:
    id: int
    keypoints: np.ndarray        # (K, 3) the last seen pose
    box: np.ndarray              # (4,) its box [x, y, w, h]
    missed: int = 0
    age: int = 1


@dataclass
class Tracker:
    """``tracker.update(keypoints, boxes)`` -> the track id of each person of a frame.

    Args:
        keypoint_set: whose OKS sigmas compare poses.
        oks_threshold: the least OKS for a match by pose; iou_threshold: by box.
        max_missed: frames a track survives without a match.
    """
    keypoint_set: KeypointSet = COCO17
    oks_threshold: float = 0.3
    iou_threshold: float = 0.3
    max_missed: int = 5
    tracks: List[Track] = field(default_factory=list)
    next_id: int = 0

    def update(self, keypoints: np.ndarray, boxes: Optional[np.ndarray] = None) -> List[int]:
        """Match the (N, K, 3) people of a frame (with their (N, 4+) boxes, else boxes from
        the keypoints) to the tracks; returns N ids."""
        keypoints = np.asarray(keypoints, np.float64).reshape(-1, self.keypoint_set.num_joints, 3)
        n = len(keypoints)
        if boxes is None:
            # every joint's extent, not enlarged (all joints count, so every person gets a box)
            boxes = boxes_from_keypoints(keypoints, threshold=-np.inf, enlarge=1.0, min_joints=0)
        boxes = np.asarray(boxes, np.float64).reshape(n, -1)[:, :4] if n else np.zeros((0, 4))
        ids: List[Optional[int]] = [None] * n
        if self.tracks and n:
            old = np.stack([t.keypoints for t in self.tracks])
            body = tracking_joints(self.keypoint_set)
            sim = oks_matrix(keypoints[:, body], old[:, body], np.asarray(self.keypoint_set.sigmas)[body])
            iou = box_iou(boxes, np.stack([t.box for t in self.tracks]))
            # by pose first, then by box for the people and tracks left
            for score, threshold in ((np.nan_to_num(sim, nan=-1.0), self.oks_threshold), (iou, self.iou_threshold)):
                self._greedy(score, threshold, ids, keypoints, boxes)
        seen = {i for i in ids if i is not None}
        for t in self.tracks:
            if t.id not in seen:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for i in range(n):
            if ids[i] is None:
                ids[i] = self.next_id
                self.tracks.append(Track(self.next_id, keypoints[i].copy(), boxes[i].copy()))
                self.next_id += 1
        return [int(i) for i in ids]

    def _greedy(self, score: np.ndarray, threshold: float, ids: List[Optional[int]], keypoints, boxes) -> None:
        """Match the highest-scoring free (person, track) pairs at or above ``threshold``."""
        taken = {t for t in ids if t is not None}
        for flat in np.argsort(-score, axis=None, kind="stable"):
            i, j = divmod(int(flat), score.shape[1])
            if score[i, j] < threshold:
                break
            track = self.tracks[j]
            if ids[i] is None and track.id not in taken:
                ids[i] = track.id
                taken.add(track.id)
                self._refresh(track, keypoints[i], boxes[i])

    @staticmethod
    def _refresh(track: Track, keypoints: np.ndarray, box: np.ndarray) -> None:
        track.keypoints, track.box = keypoints.copy(), box.copy()
        track.missed, track.age = 0, track.age + 1

