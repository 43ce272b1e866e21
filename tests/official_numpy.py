"""Plain numpy transcriptions of the published algorithms, used as test references.

Written from the descriptions of SimpleBaseline/HRNet (JointsDataset.generate_target,
get_max_preds, get_final_preds), DARK (Zhang et al. 2020), UDP (Huang et al. 2020) and the COCO
OKS NMS; loops per sample exactly as the official code runs them.
"""
import math

import numpy as np


def msra_target(joints, vis, image_size, heatmap_size, sigma):
    """joints (K, 2) float, vis (K,) 0/1 -> target (K, H, W) float32, weight (K,) float32."""
    K = joints.shape[0]
    W, H = heatmap_size
    weight = vis.astype(np.float32).copy()
    target = np.zeros((K, H, W), dtype=np.float32)
    tmp_size = sigma * 3
    stride = np.array(image_size) / np.array(heatmap_size)
    for k in range(K):
        mu_x = int(joints[k][0] / stride[0] + 0.5)
        mu_y = int(joints[k][1] / stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= W or ul[1] >= H or br[0] < 0 or br[1] < 0:
            weight[k] = 0
            continue
        size = 2 * tmp_size + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, np.newaxis]
        x0 = y0 = size // 2
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2))
        g_x = max(0, -ul[0]), min(br[0], W) - ul[0]
        g_y = max(0, -ul[1]), min(br[1], H) - ul[1]
        img_x = max(0, ul[0]), min(br[0], W)
        img_y = max(0, ul[1]), min(br[1], H)
        if weight[k] > 0.5:
            target[k][img_y[0]:img_y[1], img_x[0]:img_x[1]] = g[g_y[0]:g_y[1], g_x[0]:g_x[1]]
    return target, weight


def udp_target(joints, vis, image_size, heatmap_size, sigma):
    K = joints.shape[0]
    W, H = heatmap_size
    weight = vis.astype(np.float32).copy()
    target = np.zeros((K, H, W), dtype=np.float32)
    stride = (np.array(image_size) - 1.0) / (np.array(heatmap_size) - 1.0)
    xs, ys = np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64)[:, None]
    for k in range(K):
        mu_x = int(joints[k][0] / stride[0] + 0.5)
        mu_y = int(joints[k][1] / stride[1] + 0.5)
        ul = [int(mu_x - 3 * sigma), int(mu_y - 3 * sigma)]
        br = [int(mu_x + 3 * sigma + 1), int(mu_y + 3 * sigma + 1)]
        if ul[0] >= W or ul[1] >= H or br[0] < 0 or br[1] < 0:
            weight[k] = 0
            continue
        cx, cy = joints[k][0] / stride[0], joints[k][1] / stride[1]
        if weight[k] > 0.5:
            target[k] = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))
    return target, weight
