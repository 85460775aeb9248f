#!/usr/bin/env python3
"""PyTorch reference timing of the distillation step that `webdistill bench distill-step` runs.

The step (issue 5's measurement): a `resnet20` teacher (eval mode, no gradients) and a
`vit_micro_p4` student on a batch of 64 random 3x32x32 images with 100 classes; the OFA-KD
objective (papers-digest A1-A4) with branches on student stages 1-3 (PatchMerging 8x8 -> 4x4
tokens, 4 - s transformer blocks, class-token readout, Linear), eps = 1, T = 1, plus CE on the
labels; AdamW. Same architecture and sizes as webdistill's; weights are random (speed only).

    pip install torch timm
    python3 scripts/torch_distill_step.py [--device cpu|cuda] [--steps 10] [--threads N]

Prints one JSON line: images/s and ms per step (median over timed steps after 2 warm-ups).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from golden_cnn import CifarResNet  # noqa: E402


def feature_blocks(depth):
    # webdistill's nn::token::feature_blocks (OFAKD's stage taps for plain ViTs).
    if depth == 12:
        return [1, 3, 9, 11]
    return [max(-(-depth * k // 4), 1) - 1 for k in range(1, 5)]


class Student(nn.Module):
    """timm's ViT with the four stage features OFA taps."""

    def __init__(self, classes):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer
        self.vit = VisionTransformer(img_size=32, patch_size=4, embed_dim=128, depth=6, num_heads=4, num_classes=classes)
        self.taps = feature_blocks(6)

    def forward(self, x):
        v = self.vit
        x = v._pos_embed(v.patch_embed(x))
        feats = []
        for i, blk in enumerate(v.blocks):
            x = blk(x)
            if i in self.taps:
                feats.append(x)
        x = v.norm(x)
        return v.head(x[:, 0]), feats


class PatchMerge(nn.Module):
    def __init__(self, dim, out, gelu):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out, bias=False)
        self.gelu = gelu

    def forward(self, x, res):
        b, _, c = x.shape
        x = x.view(b, res // 2, 2, res // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, (res // 2) ** 2, 4 * c)
        x = self.reduction(self.norm(x))
        return F.gelu(x) if self.gelu else x


class TokenBranch(nn.Module):
    def __init__(self, dim, depth, classes):
        super().__init__()
        from timm.models.vision_transformer import Block
        self.merge = PatchMerge(dim, dim, True)
        self.blocks = nn.Sequential(*[Block(dim, 4, 4.0, qkv_bias=False) for _ in range(depth)])
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        cls, patches = x[:, :1], x[:, 1:]
        patches = self.merge(patches, 8)
        x = self.blocks(torch.cat([cls, patches], 1))
        return self.fc(x[:, 0])


def ofa_loss(logits_s, logits_t, target, eps=1.0, temperature=1.0):
    pred_t = F.softmax(logits_t / temperature, 1)
    onehot = F.one_hot(target, logits_s.shape[1]).float()
    prod = (pred_t + onehot) ** eps
    return (-(prod - onehot) * F.log_softmax(logits_s / temperature, 1)).sum(1).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    classes = 100
    teacher = CifarResNet(20, classes).to(dev).eval()
    student = Student(classes).to(dev).train()
    branches = nn.ModuleList([TokenBranch(128, 4 - s, classes) for s in (1, 2, 3)]).to(dev)
    params = list(student.parameters()) + list(branches.parameters())
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.05)
    x = torch.randn(a.batch, 3, 32, 32, device=dev)
    y = torch.randint(0, classes, (a.batch,), device=dev)

    def step():
        with torch.no_grad():
            t = teacher(x)
        s, feats = student(x)
        loss = F.cross_entropy(s, y) + ofa_loss(s, t, y)
        for br, f in zip(branches, feats[:3]):
            loss = loss + ofa_loss(br(f), t, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    times = []
    for i in range(a.steps + 2):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step().item()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}",
        "device": a.device if dev.type == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "batch": a.batch,
        "ms_per_step": round(ms, 1),
        "images_per_s": round(a.batch / ms * 1e3, 1),
    }))


if __name__ == "__main__":
    main()
