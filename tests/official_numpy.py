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


def get_max_preds(hm):
    """Official argmax decoding: hm (B, K, H, W) -> preds (B, K, 2) float32, maxvals (B, K, 1)."""
    B, K, _, W = hm.shape
    flat = hm.reshape(B, K, -1)
    idx = np.argmax(flat, 2).reshape(B, K, 1)
    maxvals = np.amax(flat, 2).reshape(B, K, 1)
    preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
    preds[:, :, 0] = preds[:, :, 0] % W
    preds[:, :, 1] = np.floor(preds[:, :, 1] / W)
    preds *= np.tile(np.greater(maxvals, 0.0), (1, 1, 2)).astype(np.float32)
    return preds, maxvals


def quarter_decode(hm):
    """get_max_preds + the official post-process (+-0.25 px toward the higher neighbour)."""
    coords, maxvals = get_max_preds(hm)
    H, W = hm.shape[2:]
    for n in range(coords.shape[0]):
        for p in range(coords.shape[1]):
            m = hm[n][p]
            px = int(math.floor(coords[n][p][0] + 0.5))
            py = int(math.floor(coords[n][p][1] + 0.5))
            if 1 < px < W - 1 and 1 < py < H - 1:
                diff = np.array([m[py][px + 1] - m[py][px - 1], m[py + 1][px] - m[py - 1][px]])
                coords[n][p] += np.sign(diff) * .25
    return coords, maxvals


def dark_blur(hm, kernel):
    """DARK's modulation: zero-padded cv2.GaussianBlur per map, rescaled to the original max."""
    import cv2
    border = (kernel - 1) // 2
    hm = hm.copy()
    B, K, H, W = hm.shape
    for i in range(B):
        for j in range(K):
            origin_max = np.max(hm[i, j])
            dr = np.zeros((H + 2 * border, W + 2 * border), dtype=np.float32)
            dr[border:H + border, border:W + border] = hm[i, j]
            dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)
            hm[i, j] = dr[border:H + border, border:W + border]
            hm[i, j] *= origin_max / np.max(hm[i, j])
    return hm


def dark_decode(hm, kernel=11):
    """DARK (Zhang et al. 2020): argmax, modulate, log, one Taylor (Newton) step."""
    coords, maxvals = get_max_preds(hm)
    H, W = hm.shape[2:]
    lhm = np.log(np.maximum(dark_blur(hm, kernel), 1e-10))
    for n in range(coords.shape[0]):
        for p in range(coords.shape[1]):
            m = lhm[n][p]
            px, py = int(coords[n][p][0]), int(coords[n][p][1])
            if 1 < px < W - 2 and 1 < py < H - 2:
                dx = 0.5 * (m[py][px + 1] - m[py][px - 1])
                dy = 0.5 * (m[py + 1][px] - m[py - 1][px])
                dxx = 0.25 * (m[py][px + 2] - 2 * m[py][px] + m[py][px - 2])
                dxy = 0.25 * (m[py + 1][px + 1] - m[py - 1][px + 1] - m[py + 1][px - 1] + m[py - 1][px - 1])
                dyy = 0.25 * (m[py + 2][px] - 2 * m[py][px] + m[py - 2][px])
                if dxx * dyy - dxy ** 2 != 0:
                    hess = np.array([[dxx, dxy], [dxy, dyy]])
                    coords[n][p] += -np.linalg.inv(hess) @ np.array([dx, dy])
    return coords, maxvals


def udp_decode(hm, kernel=11):
    """UDP decoding (Huang et al. 2020, as mmpose's refine_keypoints_dark_udp): blur, clip
    [1e-3, 50], log, edge pad, Newton step with (H + eps I)^-1, at every argmax with max > 0."""
    coords, maxvals = get_max_preds(hm)
    B, K, H, W = hm.shape
    lhm = np.log(np.clip(dark_blur(hm, kernel), 1e-3, 50.0))
    pad = np.pad(lhm, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    eps = np.finfo(np.float32).eps
    for n in range(B):
        for p in range(K):
            if not maxvals[n, p, 0] > 0:
                continue
            m = pad[n, p]
            x, y = int(coords[n, p, 0]) + 1, int(coords[n, p, 1]) + 1
            i_ = m[y, x]
            dx = 0.5 * (m[y, x + 1] - m[y, x - 1])
            dy = 0.5 * (m[y + 1, x] - m[y - 1, x])
            dxx = m[y, x + 1] - 2 * i_ + m[y, x - 1]
            dyy = m[y + 1, x] - 2 * i_ + m[y - 1, x]
            dxy = 0.5 * (m[y + 1, x + 1] - m[y, x + 1] - m[y + 1, x] + i_ + i_ - m[y, x - 1]
                         - m[y - 1, x] + m[y - 1, x - 1])
            hess = np.array([[dxx, dxy], [dxy, dyy]]) + eps * np.eye(2)
            coords[n, p] -= np.linalg.inv(hess) @ np.array([dx, dy])
    return coords, maxvals


def oks_nms(kpts, scores, areas, thresh, sigmas, in_vis_thre=None):
    """Official greedy OKS NMS over one image. kpts (N, K, 3) -> kept indices."""
    order = np.argsort(scores, kind="stable")[::-1]
    var = (sigmas * 2) ** 2
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        ious = []
        for j in order[1:]:
            dx, dy = kpts[j, :, 0] - kpts[i, :, 0], kpts[j, :, 1] - kpts[i, :, 1]
            e = (dx ** 2 + dy ** 2) / var / ((areas[i] + areas[j]) / 2 + np.spacing(1)) / 2
            if in_vis_thre is not None:
                e = e[kpts[j, :, 2] > in_vis_thre]
            ious.append(np.sum(np.exp(-e)) / e.shape[0] if e.shape[0] != 0 else 0.0)
        order = order[np.where(np.array(ious) <= thresh)[0] + 1]
    return keep


def person_detections(all_boxes, image_thre, aspect_ratio, pixel_std=200):
    """The official COCODataset._load_coco_person_detection_results + _box2cs/_xywh2cs
    (lib/dataset/coco.py), transcribed: (image_id, center, scale, score) per kept detection."""
    out = []
    for det_res in all_boxes:
        if det_res['category_id'] != 1:
            continue
        box = det_res['bbox']
        score = det_res['score']
        if score < image_thre:
            continue
        x, y, w, h = box[:4]
        center = np.zeros((2), dtype=np.float32)
        center[0] = x + w * 0.5
        center[1] = y + h * 0.5
        if w > aspect_ratio * h:
            h = w * 1.0 / aspect_ratio
        elif w < aspect_ratio * h:
            w = h * aspect_ratio
        scale = np.array([w * 1.0 / pixel_std, h * 1.0 / pixel_std], dtype=np.float32)
        if center[0] != -1:
            scale = scale * 1.25
        out.append((det_res['image_id'], center, scale, score))
    return out


def mpii_pckh(preds, dataset_joints, jnt_missing, pos_gt_src, headboxes_src):
    """The official MPIIDataset.evaluate (HRNet / SimpleBaseline), step by step in numpy:
    preds (N, 16, 2) 0-based pixels; the gt arrays as loadmat gives them. Returns the table."""
    preds = preds[:, :, 0:2] + 1.0
    names = [str(np.squeeze(n)) for n in np.asarray(dataset_joints).ravel()]
    idx = {n: names.index(n) for n in names}
    visible = 1 - jnt_missing
    err = np.linalg.norm(np.transpose(preds, [1, 2, 0]) - pos_gt_src, axis=1)
    head = np.linalg.norm(headboxes_src[1, :, :] - headboxes_src[0, :, :], axis=0) * 0.6
    scaled = np.multiply(np.divide(err, np.multiply(head, np.ones((len(err), 1)))), visible)
    count = np.sum(visible, axis=1)
    pck = np.divide(100. * np.sum(np.multiply(scaled <= 0.5, visible), axis=1), count)
    pck_all = np.zeros((51, 16))
    for r, thr in enumerate(np.arange(0, 0.5 + 0.01, 0.01)):
        pck_all[r, :] = np.divide(100. * np.sum(np.multiply(scaled <= thr, visible), axis=1), count)
    pck = np.ma.array(pck, mask=False)
    pck.mask[6:8] = True
    count = np.ma.array(count, mask=False)
    count.mask[6:8] = True
    ratio = count / np.sum(count).astype(np.float64)
    pair = lambda a, b: 0.5 * (pck[idx[a]] + pck[idx[b]])   # noqa: E731
    return {"Head": pck[idx["head"]], "Shoulder": pair("lsho", "rsho"), "Elbow": pair("lelb", "relb"),
            "Wrist": pair("lwri", "rwri"), "Hip": pair("lhip", "rhip"), "Knee": pair("lkne", "rkne"),
            "Ankle": pair("lank", "rank"), "Mean": np.sum(pck * ratio), "Mean@0.1": np.sum(pck_all[11, :] * ratio)}


def affine_transform(center, scale, rot, output_size, inv=False):
    """The official crop transform: three point pairs (the centre, a point half a box width
    above it turned by ``rot`` degrees, and a third at a right angle) and OpenCV's solve.
    ``scale`` in units of 200 px, ``output_size`` (W, H). A 2x3 matrix."""
    import cv2

    def turn(p, rad):
        s, c = np.sin(rad), np.cos(rad)
        return np.array([p[0] * c - p[1] * s, p[0] * s + p[1] * c])

    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]])

    box_w = np.asarray(scale, np.float64)[0] * 200.0
    out_w, out_h = output_size
    src, dst = np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = np.asarray(center, np.float64) + turn([0.0, -0.5 * box_w], np.pi * rot / 180)
    dst[0] = [0.5 * out_w, 0.5 * out_h]
    dst[1] = dst[0] + np.array([0.0, -0.5 * out_w])
    src[2], dst[2] = third(src[0], src[1]), third(dst[0], dst[1])
    return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)

