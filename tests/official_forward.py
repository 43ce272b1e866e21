"""The forward passes of the four official HRNet repositories, written as plain functions of a
state_dict in each repository's key layout and of the experiment YAML's MODEL section.

Nothing here imports hrfast: every key is spelled as the official modules name it, the
structure follows the official construction rules (transitions, modules, the fuse layers, the
heads), and every key read is recorded, so a test can check that a model's state_dict holds
exactly the official keys and computes the official function (eval-mode BatchNorm).
"""
import torch
import torch.nn.functional as F

EXPANSION = {"BASIC": 1, "BOTTLENECK": 4}


class Weights:
    """A state_dict that remembers which keys were read."""

    def __init__(self, sd):
        self.sd, self.used = sd, set()

    def __getitem__(self, key):
        self.used.add(key)
        return self.sd[key]

    def has(self, key):
        return key in self.sd

    def unused(self):
        return {k for k in self.sd if k not in self.used and not k.endswith("num_batches_tracked")}


def conv(w, p, x, stride=1, padding=None):
    weight = w[p + "weight"]
    bias = w[p + "bias"] if w.has(p + "bias") else None
    k = weight.shape[-1]
    return F.conv2d(x, weight, bias, stride, (k - 1) // 2 if padding is None else padding)


def bn(w, p, x):
    return F.batch_norm(x, w[p + "running_mean"], w[p + "running_var"], w[p + "weight"], w[p + "bias"],
                        False, 0.0, 1e-5)


def block(w, p, x, kind):
    if kind == "BASIC":
        out = F.relu(bn(w, p + "bn1.", conv(w, p + "conv1.", x)))
        out = bn(w, p + "bn2.", conv(w, p + "conv2.", out))
    else:
        out = F.relu(bn(w, p + "bn1.", conv(w, p + "conv1.", x)))
        out = F.relu(bn(w, p + "bn2.", conv(w, p + "conv2.", out)))
        out = bn(w, p + "bn3.", conv(w, p + "conv3.", out))
    res = bn(w, p + "downsample.1.", conv(w, p + "downsample.0.", x)) if w.has(p + "downsample.0.weight") else x
    return F.relu(out + res)


def blocks(w, p, x, kind, n):
    for k in range(n):
        x = block(w, f"{p}{k}.", x, kind)
    return x


def down_chain(w, p, x, steps):
    for t in range(steps):
        x = bn(w, f"{p}{t}.1.", conv(w, f"{p}{t}.0.", x, stride=2))
        if t < steps - 1:
            x = F.relu(x)
    return x


def fuse(w, p, xs, outputs, mode, align_corners):
    n, out = len(xs), []
    for i in range(outputs):
        y = xs[0] if i == 0 else down_chain(w, f"{p}{i}.0.", xs[0], i)
        for j in range(1, n):
            if j == i:
                y = y + xs[j]
            elif j > i:
                z = bn(w, f"{p}{i}.{j}.1.", conv(w, f"{p}{i}.{j}.0.", xs[j]))
                if mode == "nearest":
                    z = F.interpolate(z, scale_factor=2 ** (j - i), mode="nearest")
                else:
                    z = F.interpolate(z, size=xs[i].shape[2:], mode="bilinear", align_corners=align_corners)
                y = y + z
            else:
                y = y + down_chain(w, f"{p}{i}.{j}.", xs[j], i - j)
        out.append(F.relu(y))
    return out


def transition(w, p, xs, pre, cur):
    out = []
    for i, c in enumerate(cur):
        if i < len(pre):
            x = xs[i]
            out.append(x if pre[i] == c else F.relu(bn(w, f"{p}{i}.1.", conv(w, f"{p}{i}.0.", x))))
        else:
            x = xs[-1]
            for t in range(i + 1 - len(pre)):
                x = F.relu(bn(w, f"{p}{i}.{t}.1.", conv(w, f"{p}{i}.{t}.0.", x, stride=2)))
            out.append(x)
    return out


def backbone(w, extra, x, multi_scale_last, mode, align_corners=False, stage1=None):
    """Stem, layer1 and stages 2-4 as the official nets build them; the last stage's outputs."""
    x = F.relu(bn(w, "bn1.", conv(w, "conv1.", x, stride=2)))
    x = F.relu(bn(w, "bn2.", conv(w, "conv2.", x, stride=2)))
    s1 = stage1 or extra["STAGE1"]
    x = blocks(w, "layer1.", x, s1["BLOCK"], s1["NUM_BLOCKS"][0])
    xs, pre = [x], [s1["NUM_CHANNELS"][0] * EXPANSION[s1["BLOCK"]]]
    for s in (2, 3, 4):
        st = extra[f"STAGE{s}"]
        cur = [c * EXPANSION[st["BLOCK"]] for c in st["NUM_CHANNELS"]]
        xs = transition(w, f"transition{s - 1}.", xs, pre, cur)
        for m in range(st["NUM_MODULES"]):
            p = f"stage{s}.{m}."
            xs = [blocks(w, f"{p}branches.{b}.", x, st["BLOCK"], st["NUM_BLOCKS"][b]) for b, x in enumerate(xs)]
            keep_all = not (s == 4 and m == st["NUM_MODULES"] - 1 and not multi_scale_last)
            xs = fuse(w, f"{p}fuse_layers.", xs, len(xs) if keep_all else 1, mode, align_corners)
        pre = cur
    return xs


def pose_forward(sd, extra, x):
    w = Weights(sd)
    k = extra.get("FINAL_CONV_KERNEL", 1)
    out = conv(w, "final_layer.", backbone(w, extra, x, False, "nearest")[0], padding=1 if k == 3 else 0)
    return out, w


def cls_forward(sd, extra, x):
    w = Weights(sd)
    ys = backbone(w, extra, x, True, "nearest")
    y = blocks(w, "incre_modules.0.", ys[0], "BOTTLENECK", 1)
    for i in range(len(ys) - 1):
        d = F.relu(bn(w, f"downsamp_modules.{i}.1.", conv(w, f"downsamp_modules.{i}.0.", y, stride=2, padding=1)))
        y = blocks(w, f"incre_modules.{i + 1}.", ys[i + 1], "BOTTLENECK", 1) + d
    y = F.relu(bn(w, "final_layer.1.", conv(w, "final_layer.0.", y)))
    y = F.avg_pool2d(y, kernel_size=y.shape[2:]).flatten(1)
    return F.linear(y, w["classifier.weight"], w["classifier.bias"]), w


V2_STAGE1 = {"BLOCK": "BOTTLENECK", "NUM_BLOCKS": [4], "NUM_CHANNELS": [64]}


def v2_forward(sd, extra, x, head, first_padding, align_corners):
    """HRNetV2 (faces: head='head'; segmentation: head='last_layer')."""
    w = Weights(sd)
    ys = backbone(w, extra, x, True, "bilinear", align_corners, extra.get("STAGE1", V2_STAGE1))
    size = ys[0].shape[2:]
    y = torch.cat([ys[0]] + [F.interpolate(t, size=size, mode="bilinear", align_corners=align_corners)
                             for t in ys[1:]], 1)
    y = F.relu(bn(w, f"{head}.1.", conv(w, f"{head}.0.", y, padding=first_padding)))
    k = extra.get("FINAL_CONV_KERNEL", 1)
    return conv(w, f"{head}.3.", y, padding=1 if k == 3 else 0), w
