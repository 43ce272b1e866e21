"""Would Winograd convolutions lift the CPU ceiling? A probe, not a feature of hrfast.

On the W32 branch shapes at batch 8, in bf16, channels_last, with ReLU, it times three things:
- oneDNN's direct 3x3 conv (compiled);
- the 16 batched GEMMs of Winograd F(2x2, 3x3) alone, which is a lower bound on any Winograd
  implementation;
- a whole F(2x2, 3x3) written in torch ops and compiled by Inductor (transforms included).

It also prints the max error of each against an fp32 conv. Results are in
benchmarks/RESULTS.md. Run it with: python benchmarks/winograd_probe.py
"""
import torch
import torch.nn.functional as F

from hrfast.benchmarking import measure

# F(2x2, 3x3) (Lavin & Gray, 2016): Y = A^T [(G g G^T) * (B^T d B)] A
G = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def transformed_filter(w: torch.Tensor) -> torch.Tensor:
    """(Co, C, 3, 3) weights -> (16, C, Co): one GEMM operand per point of the 4x4 tile."""
    v = G @ w.float() @ G.T
    return v.permute(2, 3, 1, 0).reshape(16, w.shape[1], w.shape[0])


def winograd_relu(x: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """relu(conv3x3(x) + bias), stride 1, padding 1, with even H and W. x is (B, C, H, W) and
    v comes from transformed_filter."""
    b, c, h, w = x.shape
    th, tw = h // 2, w // 2
    d = F.pad(x, (1, 1, 1, 1)).unfold(2, 4, 2).unfold(3, 4, 2)       # (B, C, th, tw, 4, 4)
    d0, d1, d2, d3 = d.unbind(-2)                                      # B^T d: rows
    t = torch.stack([d0 - d2, d1 + d2, d2 - d1, d1 - d3], -2)
    c0, c1, c2, c3 = t.unbind(-1)                                      # (B^T d) B: columns
    u = torch.stack([c0 - c2, c1 + c2, c2 - c1, c1 - c3], -1)
    u = u.permute(4, 5, 0, 2, 3, 1).reshape(16, b * th * tw, c)
    m = torch.bmm(u, v).reshape(4, 4, b, th, tw, -1)
    r0, r1 = m[0] + m[1] + m[2], m[1] - m[2] - m[3]                    # A^T m: rows
    y = torch.stack([torch.stack([r0[0] + r0[1] + r0[2], r0[1] - r0[2] - r0[3]], 3),
                     torch.stack([r1[0] + r1[1] + r1[2], r1[1] - r1[2] - r1[3]], 3)], 2)
    return torch.relu(y.reshape(b, h, w, -1) + bias).permute(0, 3, 1, 2)


def main(batch: int = 8) -> None:
    cpu = torch.device("cpu")
    print("| channels | map | direct (ms) | GEMMs only (ms) | Inductor Winograd (ms) | max err direct / Winograd |")
    print("|---:|---|---:|---:|---:|---|")
    for c, h, w in [(32, 64, 48), (64, 32, 24), (128, 16, 12), (256, 8, 6)]:   # W32 branches 1-4
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(c, c, 3, padding=1).eval()
        x32 = torch.randn(batch, c, h, w).contiguous(memory_format=torch.channels_last)
        x = x32.bfloat16()
        v = transformed_filter(conv.weight.detach()).bfloat16().contiguous()
        bias = conv.bias.detach().bfloat16()
        u = torch.randn(16, batch * h * w // 4, c, dtype=torch.bfloat16)
        with torch.no_grad():
            ref = torch.relu(conv(x32))
            conv_bf16 = conv.to(torch.bfloat16).to(memory_format=torch.channels_last)
            direct = torch.compile(lambda t: torch.relu(conv_bf16(t)))
            wino = torch.compile(winograd_relu)
            err_d = (direct(x).float() - ref).abs().max().item()
            err_w = (wino(x, v, bias).float() - ref).abs().max().item()
            t_d = measure(lambda: direct(x), cpu, warmup=3, iters=30)
            t_g = measure(lambda: torch.bmm(u, v), cpu, warmup=3, iters=30)
            t_w = measure(lambda: wino(x, v, bias), cpu, warmup=3, iters=30)
        print(f"| {c} | {h}x{w} | {t_d * 1e3:.2f} | {t_g * 1e3:.2f} | {t_w * 1e3:.2f} | {err_d:.3f} / {err_w:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
