"""Golden values for the distillation losses (tests/distill_losses.rs).

Each loss is written here as the reference code has it (OFAKD's ofa_loss, mdistiller/OFAKD
kd, dkd and dist), on synthetic logits from golden_common; we save the loss values and the
gradients with respect to the student logits. Run: python3 scripts/golden_losses.py
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from golden_common import synthetic  # noqa: E402

B, C = 8, 10
zs0 = torch.from_numpy(synthetic("losses.zs", (B, C)) * 3.0).double()
zt0 = torch.from_numpy(synthetic("losses.zt", (B, C)) * 3.0).double()
labels = torch.tensor([(i * 3) % C for i in range(B)])


def kd_loss(zs, zt, t):
    log_s = F.log_softmax(zs / t, dim=1)
    p_t = F.softmax(zt / t, dim=1)
    return F.kl_div(log_s, p_t, reduction="batchmean") * t * t


def cat_mask(t, mask1, mask2):
    t1 = (t * mask1).sum(dim=1, keepdims=True)
    t2 = (t * mask2).sum(1, keepdims=True)
    return torch.cat([t1, t2], dim=1)


def dkd_loss(zs, zt, target, alpha, beta, t):
    gt = torch.zeros_like(zs).scatter_(1, target.unsqueeze(1), 1).bool()
    other = torch.ones_like(zs).scatter_(1, target.unsqueeze(1), 0).bool()
    ps = F.softmax(zs / t, dim=1)
    pt = F.softmax(zt / t, dim=1)
    ps = cat_mask(ps, gt, other)
    pt = cat_mask(pt, gt, other)
    tckd = F.kl_div(torch.log(ps), pt, reduction="sum") * (t ** 2) / zs.shape[0]
    pt2 = F.softmax(zt / t - 1000.0 * gt, dim=1)
    ls2 = F.log_softmax(zs / t - 1000.0 * gt, dim=1)
    nckd = F.kl_div(ls2, pt2, reduction="sum") * (t ** 2) / zs.shape[0]
    return alpha * tckd + beta * nckd


def cosine_similarity(a, b, eps=1e-8):
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def pearson_correlation(a, b, eps=1e-8):
    return cosine_similarity(a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1), eps)


def dist_loss(zs, zt, beta, gamma, tau):
    ys = (zs / tau).softmax(dim=1)
    yt = (zt / tau).softmax(dim=1)
    inter = 1 - pearson_correlation(ys, yt).mean()
    intra = 1 - pearson_correlation(ys.transpose(0, 1), yt.transpose(0, 1)).mean()
    return beta * tau ** 2 * inter + gamma * tau ** 2 * intra


def ofa_loss(zs, zt, target_mask, eps, t=1.0):
    pred_student = F.softmax(zs / t, dim=1)
    pred_teacher = F.softmax(zt / t, dim=1)
    prod = (pred_teacher + target_mask) ** eps
    return torch.sum(-(prod - target_mask) * torch.log(pred_student), dim=-1).mean()


cases = {
    "kd_t1": lambda zs: kd_loss(zs, zt0, 1.0),
    "kd_t4": lambda zs: kd_loss(zs, zt0, 4.0),
    "dkd": lambda zs: dkd_loss(zs, zt0, labels, 1.0, 2.0, 1.0),
    "dkd_t4": lambda zs: dkd_loss(zs, zt0, labels, 1.0, 8.0, 4.0),
    "dist": lambda zs: dist_loss(zs, zt0, 1.0, 1.0, 1.0),
    "dist_t2": lambda zs: dist_loss(zs, zt0, 2.0, 0.5, 2.0),
    "ofa_eps1": lambda zs: ofa_loss(zs, zt0, F.one_hot(labels, C).double(), 1.0),
    "ofa_eps1.5": lambda zs: ofa_loss(zs, zt0, F.one_hot(labels, C).double(), 1.5),
    "ofa_eps1.5_t2": lambda zs: ofa_loss(zs, zt0, F.one_hot(labels, C).double(), 1.5, 2.0),
}

out = {"zs": zs0.float(), "zt": zt0.float(), "labels": labels.to(torch.int64)}
for name, f in cases.items():
    zs = zs0.clone().requires_grad_(True)
    loss = f(zs)
    loss.backward()
    out[f"{name}.loss"] = loss.detach().reshape(1).float()
    out[f"{name}.grad"] = zs.grad.float()
    print(f"{name}: {loss.item():.8f}")

path = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "losses.safetensors")
save_file({k: v.contiguous() for k, v in out.items()}, path)
print("wrote", os.path.normpath(path))
