"""COCO person-keypoint metadata: joint names, flip pairs, skeleton, upper/lower body."""

COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                  "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
# left/right joint pairs swapped by a horizontal flip (0-based)
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
# 1-based limb list, as in COCO's person category
COCO_SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7),
                 (6, 8), (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))
UPPER_BODY = tuple(range(11))      # nose .. wrists: the half-body augmentation's two halves
LOWER_BODY = tuple(range(11, 17))
# official per-joint loss weights (JointsDataset joints_weight, COCO)
JOINTS_WEIGHT = (1., 1., 1., 1., 1., 1., 1., 1.2, 1.2, 1.5, 1.5, 1., 1., 1.2, 1.2, 1.5, 1.5)


def flip_permutation(num_joints: int = 17, pairs=FLIP_PAIRS):
    """Index list p such that flipped[k] = original[p[k]]. A pair naming a joint the model does
    not have is a ValueError: COCO's pairs cannot serve another keypoint set."""
    perm = list(range(num_joints))
    beyond = [pair for pair in pairs if max(pair) >= num_joints or min(pair) < 0]
    if beyond:
        raise ValueError(f"flip pairs {beyond[:3]} name joints beyond the model's {num_joints}: give the "
                         f"dataset's flip pairs (or run without the flip test)")
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm
