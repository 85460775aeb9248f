#!/usr/bin/env python3
"""PyTorch's side of whole training runs that tests/train_match.rs replays step for step.

Two short runs on the bundled Fashion-MNIST subset (data/fashion-mnist-subset), each the
run that a webdistill TrainConfig describes, done here in PyTorch:

- cnn: resnet8 (CRD/mdistiller CIFAR ResNet, 1 input channel), BatchNorm in train mode,
  SGD momentum 0.9, weight decay 5e-4 on weights of rank >= 2, cosine learning rate from 0.002
  per step; batch 32 over the first 320 training images, 5 epochs = 50 steps.
- vit: vit_nano_p4 (timm VisionTransformer, 28 px, patch 4, dim 32, depth 4, 2 heads), AdamW
  1e-3 with weight decay 0.05 except biases, norms, pos_embed and cls_token, one epoch of
  linear warm-up from 1e-6 then cosine to 1e-5; same data, batch and steps.

Why lr 0.002 for the CNN: at 0.05 this run is chaotic in float32. PyTorch against itself in
float64 differs by 1.5e-2 in the loss after 12 steps (rounding differences grow about tenfold
every two steps), so no float32 implementation can stay within 1e-3 of another there; at 0.002
PyTorch's float32 run stays within 1e-4 of its float64 run over all 50 steps, so a gap of
1e-3 is ours, not rounding's. The golden keeps that float64 loss too (`<run>.loss_f64`) so
the test can show the floor. (The ViT run is calm at its recipe's lr: 3e-7.)

Both start from golden_common's synthetic weights (the Rust test computes the same values), see
the same batches in the same order (webdistill's training order: a Feistel permutation per
epoch keyed by the seed, ported below from src/ops/data/rng.rs), normalised with the
per-channel mean / std of all training bytes / 255, no augmentation and no dropout. The golden
keeps each step's loss and learning rate, the batch indices, and the final state dict.

    pip install torch timm safetensors numpy
    python3 scripts/golden_training.py            # writes tests/golden/train_match.safetensors

`--long` is the by-hand comparison of docs/RESULTS.md instead: resnet8 on all 5000 training
images for 3 epochs with webdistill's augmentation (random crop of the image zero-padded by 2
pixels, horizontal flip), batch 64, test accuracy on the 1000 test images after each epoch,
a per-step loss log in JSON lines:

    python3 scripts/golden_training.py --long --out /tmp/torch-long.jsonl --init-out /tmp/resnet8-init.safetensors

It writes the synthetic initial weights to `--init-out`, so webdistill's side of the
comparison starts from them too (`webdistill train ... --init /tmp/resnet8-init.safetensors`,
the command is in docs/RESULTS.md).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_common as gc  # noqa: E402
from golden_cnn import CifarResNet  # noqa: E402
from train_teacher_torch import read_idx  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data", "fashion-mnist-subset")
OUT = os.path.join(ROOT, "tests", "golden", "train_match.safetensors")
M32 = 0xFFFFFFFF

# The two runs; tests/train_match.rs builds its TrainConfigs from these same numbers (kept in
# the golden's metadata and checked there).
RUNS = {
    "cnn": dict(model="resnet8", opt="sgd", lr=0.002, momentum=0.9, weight_decay=5e-4, warmup_epochs=0.0,
                warmup_lr=0.0, min_lr=0.0, batch=32, train_limit=320, epochs=5, seed=0),
    "vit": dict(model="vit_nano_p4", opt="adamw", lr=1e-3, momentum=0.9, weight_decay=0.05, warmup_epochs=1.0,
                warmup_lr=1e-6, min_lr=1e-5, batch=32, train_limit=320, epochs=5, seed=0),
}


# ---- webdistill's counter-based RNG and training order (src/ops/data/rng.rs) --------------
def pcg_hash(v):
    s = (v * 747796405 + 2891336453) & M32
    w = (((s >> ((s >> 28) + 4)) ^ s) * 277803737) & M32
    return ((w >> 22) ^ w) & M32


def rand_u32(seed, a, b):
    return pcg_hash(pcg_hash(pcg_hash(seed) ^ a) ^ b)


def dbits(key, item, draw):
    return pcg_hash(pcg_hash(key ^ item) ^ draw)


def feistel_half_bits(n):
    bits = (max(n, 2) - 1).bit_length()
    return max((bits + 1) // 2, 1)


def feistel(x, n, hb, keys):
    mask = (1 << hb) - 1
    v = x
    while True:
        l, r = v >> hb, v & mask
        for k in keys:
            l, r = r, l ^ (pcg_hash(r ^ k) & mask)
        v = (l << hb) | r
        if v < n:
            return v


def train_index(n, batch, seed, step, b):
    q, r = step // n, step % n
    t = r * batch + b
    epoch = q * batch + t // n
    ek = rand_u32(seed, epoch & M32, 0x5045524D)
    keys = [dbits(ek, 0, i) for i in range(4)]
    return feistel(t % n, n, feistel_half_bits(n), keys)


def seed32(seed):
    return (seed ^ (seed >> 32)) & M32


def lr_at(step, c, steps_per_epoch):
    # src/optim.rs Schedule::Cosine, per step.
    base, total = c["lr"], steps_per_epoch * c["epochs"]
    warmup = int(round(c["warmup_epochs"] * steps_per_epoch))
    if step < warmup:
        return c["warmup_lr"] + (base - c["warmup_lr"]) * step / warmup
    span = max(total, warmup + 1) - warmup
    p = min((step - warmup) / span, 1.0)
    return c["min_lr"] + 0.5 * (base - c["min_lr"]) * (1.0 + math.cos(math.pi * p))


# ---- data --------------------------------------------------------------------------------
def load_subset():
    f = lambda s: read_idx(os.path.join(DATA, s + ".gz"))  # noqa: E731
    xtr, ytr = f("train-images-idx3-ubyte"), f("train-labels-idx1-ubyte")
    xte, yte = f("t10k-images-idx3-ubyte"), f("t10k-labels-idx1-ubyte")
    # webdistill's Dataset::mean_std over the whole training split, in float64.
    v = xtr.astype(np.float64) / 255.0
    mean = v.mean()
    std = math.sqrt(max((v * v).mean() - mean * mean, 0.0))
    return xtr, ytr, xte, yte, np.float32(mean), np.float32(std)


def normalise(x_u8, mean, std):
    x = (torch.from_numpy(x_u8.astype(np.float32) / 255.0).unsqueeze(1) - float(mean)) / float(std)
    return x.to(torch.get_default_dtype())


# ---- models and optimizers ---------------------------------------------------------------
def build(name):
    if name == "resnet8":
        return CifarResNet(8, 10, in_chans=1)
    if name == "vit_nano_p4":
        from timm.models.vision_transformer import VisionTransformer
        return VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=32, depth=4, num_heads=2,
                                 num_classes=10)
    raise SystemExit(f"unknown model {name}")


def optimizer(model, c):
    # webdistill's grouping (src/store.rs): decay on tensors of rank >= 2, except the token
    # tables registered without it.
    decay, rest = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and n not in ("pos_embed", "cls_token") else rest).append(p)
    groups = [{"params": decay, "weight_decay": c["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]
    if c["opt"] == "sgd":
        return torch.optim.SGD(groups, lr=c["lr"], momentum=c["momentum"])
    return torch.optim.AdamW(groups, lr=c["lr"], betas=(0.9, 0.999), eps=1e-8)


def augment(x_u8, gen, pad=2):
    """webdistill's Crop::Pad + hflip, drawn from torch's RNG (not webdistill's)."""
    b, h, w = x_u8.shape
    xp = np.pad(x_u8, ((0, 0), (pad, pad), (pad, pad)))
    top = torch.randint(0, 2 * pad + 1, (b,), generator=gen).numpy()
    left = torch.randint(0, 2 * pad + 1, (b,), generator=gen).numpy()
    flip = (torch.rand(b, generator=gen) < 0.5).numpy()
    out = np.empty_like(x_u8)
    for i in range(b):
        crop = xp[i, top[i]:top[i] + h, left[i]:left[i] + w]
        out[i] = crop[:, ::-1] if flip[i] else crop
    return out


def train(c, data, long=False, log=None, init_out=None):
    xtr, ytr, xte, yte, mean, std = data
    n = c["train_limit"] or len(xtr)
    spe = max(n // c["batch"], 1)
    torch.manual_seed(0)
    model = build(c["model"])
    gc.fill_model(model)
    if init_out:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, init_out, metadata={"format": "pt"})
    model.train()
    opt = optimizer(model, c)
    gen = torch.Generator().manual_seed(c["seed"])
    losses, lrs, index = [], [], []
    for step in range(spe * c["epochs"]):
        idx = [train_index(n, c["batch"], seed32(c["seed"]), step, b) for b in range(c["batch"])]
        xb = xtr[idx]
        if long:
            xb = augment(xb, gen)
        x = normalise(xb, mean, std)
        y = torch.from_numpy(ytr[idx].astype(np.int64))
        lr = lr_at(step, c, spe)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        lrs.append(lr)
        index.extend(idx)
        if log is not None:
            rec = {"step": step + 1, "loss": loss.item(), "lr": lr}
            if (step + 1) % spe == 0:
                rec["epoch"] = (step + 1) // spe
                rec["test_top1"] = test_accuracy(model, xte, yte, mean, std)
            log.write(json.dumps(rec) + "\n")
            log.flush()
    return model, losses, lrs, index


@torch.no_grad()
def test_accuracy(model, xte, yte, mean, std):
    model.eval()
    out = model(normalise(xte, mean, std))
    model.train()
    return (out.argmax(1).numpy() == yte).mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--init-out")
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    data = load_subset()
    if a.long:
        c = dict(RUNS["cnn"], train_limit=0, epochs=3, batch=64, lr=0.05)
        with open(a.out or "torch-long.jsonl", "w") as log:
            train(c, data, long=True, log=log, init_out=a.init_out)
        return
    from safetensors.numpy import save_file
    tensors, meta = {}, {"torch": torch.__version__}
    for key, c in RUNS.items():
        model, losses, lrs, index = train(c, data)
        tensors[f"{key}.loss"] = np.array(losses, np.float32)
        tensors[f"{key}.lr"] = np.array(lrs, np.float32)
        tensors[f"{key}.index"] = np.array(index, np.float32)
        for k, v in model.state_dict().items():
            tensors[f"{key}.final.{k}"] = v.detach().numpy().astype(np.float32).reshape(v.shape)
        # The same run in float64: how far float32 rounding alone moves the trajectory.
        torch.set_default_dtype(torch.float64)
        _, losses64, _, _ = train(c, data)
        torch.set_default_dtype(torch.float32)
        tensors[f"{key}.loss_f64"] = np.array(losses64, np.float32)
        meta[key] = json.dumps(c)
        print(f"{key}: {c['model']} loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps")
    save_file(tensors, OUT, metadata=meta)
    print(f"wrote {os.path.relpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
