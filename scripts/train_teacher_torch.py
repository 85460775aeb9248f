#!/usr/bin/env python3
"""Train the shipped resnet20 Fashion-MNIST teacher in PyTorch, with webdistill's own recipe.

Why PyTorch: on the software GPU this project has had so far (lavapipe on 2 CPU cores) a
resnet20 trains at a few images/s with `webdistill train`, so a real schedule (tens of epochs
over 60,000 images) takes days there, while PyTorch on the same two cores takes about an hour.
tests/train_match.rs shows that a webdistill run and the same PyTorch run agree step for step
(per-step loss within 1e-3), so this is the run `webdistill train` would make, only faster:

    webdistill train --model resnet20 --data fashion-mnist --epochs E --batch 128 --opt sgd \
        --lr 0.1 --momentum 0.9 --wd 5e-4 --warmup-epochs 0 --min-lr 0

Same model and tensor names (CRD/mdistiller CIFAR resnet20, 1 input channel), same
normalisation (per-channel mean/std of the training bytes / 255), same augmentation (random
28x28 crop of the image zero-padded by 2 pixels, horizontal flip), weight decay on tensors of
rank >= 2 only (webdistill's grouping), cosine learning rate per step. The result is a plain
state dict in safetensors; check it with webdistill itself:

    pip install torch safetensors numpy
    python3 scripts/train_teacher_torch.py --epochs 30 --out /tmp/teacher [--stop-after 5] [--resume]
    webdistill eval --model resnet20 --weights /tmp/teacher/best.safetensors --data fashion-mnist

Resumable: `state.pt` (model, optimizer, epoch, RNG) is written atomically after each epoch;
`--resume` continues from it, `--stop-after N` stops after N more epochs. metrics.jsonl gets
one line per epoch (loss, test top-1, lr, seconds).
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_cnn import CifarResNet  # noqa: E402


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir):
    def f(stem):
        for name in (stem + ".gz", stem):
            p = os.path.join(data_dir, name)
            if os.path.exists(p):
                return read_idx(p)
        raise SystemExit(f"{data_dir}: no {stem}[.gz]")
    return (f("train-images-idx3-ubyte"), f("train-labels-idx1-ubyte"),
            f("t10k-images-idx3-ubyte"), f("t10k-labels-idx1-ubyte"))


def lr_at(step, base, total, min_lr):
    # webdistill's Schedule::Cosine with no warm-up (src/optim.rs), per step.
    p = min(step / max(total, 1), 1.0)
    return min_lr + 0.5 * (base - min_lr) * (1.0 + math.cos(math.pi * p))


def augment(x, gen, pad=2):
    """Random crop of the zero-padded image (in byte space, as webdistill) and a flip."""
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    left = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (top[:, None] + torch.arange(h)[None, :])  # b x h
    cols = (left[:, None] + torch.arange(w)[None, :])  # b x w
    flip = torch.rand(b, generator=gen) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b)[:, None, None]
    return xp[:, 0][bi, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def state_dict_np(model):
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        out[k] = v.numpy().astype(np.int64 if v.dtype == torch.int64 else np.float32)
    return out


def save_atomic(path, write):
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)


def evaluate(model, x, y, mean, std, dev, batch=1000):
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = (torch.from_numpy(x[i:i + batch]).float().div(255).unsqueeze(1).to(dev) - mean) / std
            yb = torch.from_numpy(y[i:i + batch].astype(np.int64)).to(dev)
            out = model(xb)
            loss += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    model.train()
    return correct / len(x), loss / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--min-lr", type=float, default=0.0)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--stop-after", type=int, default=0, help="stop after this many more epochs")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    dev = torch.device(a.device)
    xtr, ytr, xte, yte = load(a.data)
    # webdistill's Dataset::mean_std: over every training pixel / 255, in float64.
    v = xtr.astype(np.float64) / 255.0
    mean, std = float(v.mean()), float(np.sqrt(max((v * v).mean() - v.mean() ** 2, 0.0)))
    del v
    mean_t = torch.tensor(mean, dtype=torch.float32, device=dev)
    std_t = torch.tensor(std, dtype=torch.float32, device=dev)

    torch.manual_seed(a.seed)
    model = CifarResNet(20, 10, in_chans=1).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=a.lr, momentum=a.momentum)
    steps_per_epoch = len(xtr) // a.batch
    total = steps_per_epoch * a.epochs
    gen = torch.Generator().manual_seed(a.seed)
    start, best = 0, 0.0
    state_path = os.path.join(a.out, "state.pt")
    if a.resume:
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        start, best = st["epoch"], st["best"]
        print(f"resumed {state_path} after epoch {start} (best {best:.4f})", flush=True)
    from safetensors.numpy import save_file
    meta = {"model": "resnet20", "data": "fashion-mnist", "recipe": json.dumps(vars(a)), "torch": torch.__version__,
            "mean": str(mean), "std": str(std)}
    done_now = 0
    for epoch in range(start, a.epochs):
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(xtr), generator=gen).numpy()
        run_loss, seen = 0.0, 0
        for s in range(steps_per_epoch):
            step = epoch * steps_per_epoch + s
            for g in opt.param_groups:
                g["lr"] = lr_at(step, a.lr, total, a.min_lr)
            idx = perm[s * a.batch:(s + 1) * a.batch]
            xb = augment(torch.from_numpy(xtr[idx]).unsqueeze(1), gen)
            xb = ((xb.float().div(255)).to(dev) - mean_t) / std_t
            yb = torch.from_numpy(ytr[idx].astype(np.int64)).to(dev)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run_loss += loss.item() * len(idx)
            seen += len(idx)
            if s % 100 == 0:
                el = time.time() - t0
                print(f"epoch {epoch + 1} step {s}/{steps_per_epoch} loss {run_loss / seen:.4f} "
                      f"{seen / max(el, 1e-9):.0f} img/s", flush=True)
        top1, test_loss = evaluate(model, xte, yte, mean_t, std_t, dev)
        secs = time.time() - t0
        rec = {"epoch": epoch + 1, "loss": run_loss / seen, "test_top1": top1, "test_loss": test_loss,
               "lr": opt.param_groups[0]["lr"], "seconds": round(secs, 1)}
        print(json.dumps(rec), flush=True)
        with open(os.path.join(a.out, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
        sd = state_dict_np(model)
        save_atomic(os.path.join(a.out, "last.safetensors"), lambda p: save_file(sd, p, metadata=meta))
        if top1 >= best:
            best = top1
            save_atomic(os.path.join(a.out, "best.safetensors"), lambda p: save_file(sd, p, metadata=meta))
        save_atomic(state_path, lambda p: torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "epoch": epoch + 1,
             "best": best}, p))
        done_now += 1
        if a.stop_after and done_now >= a.stop_after:
            print(f"stopped after epoch {epoch + 1} (--stop-after {a.stop_after}); continue with --resume")
            return
    print(f"done: best test top-1 {best:.4f}")


if __name__ == "__main__":
    main()
