#!/usr/bin/env python3
"""One PNG with a webdistill run and the same run in PyTorch: training loss against step and
test top-1 after each epoch (docs/RESULTS.md, "Training against PyTorch").

    python3 scripts/plot_train_compare.py --webdistill RUN_DIR --torch torch.jsonl --out docs/train_vs_torch.png

RUN_DIR is a `webdistill train --out` folder (steps.jsonl: the loss of every chunk of steps
the loop reads; metrics.jsonl: one record per epoch); torch.jsonl is what
`scripts/golden_training.py --long` writes (one line per step, test_top1 at epoch ends).
Needs matplotlib.
"""
import argparse
import json
import os


def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--webdistill", required=True)
    ap.add_argument("--torch", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="resnet8 on 5000 Fashion-MNIST images, 3 epochs, same recipe and initial weights")
    a = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wd_steps = lines(os.path.join(a.webdistill, "steps.jsonl"))
    wd_epochs = lines(os.path.join(a.webdistill, "metrics.jsonl"))
    pt = lines(a.torch)
    # Average PyTorch's per-step losses over webdistill's chunks, so both curves are equally smooth.
    pt_loss = {r["step"]: r["loss"] for r in pt}
    prev, pt_x, pt_y = 0, [], []
    for r in wd_steps:
        span = [pt_loss[s] for s in range(prev + 1, r["step"] + 1) if s in pt_loss]
        if span:
            pt_x.append(r["step"])
            pt_y.append(sum(span) / len(span))
        prev = r["step"]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([r["step"] for r in wd_steps], [r["loss"] for r in wd_steps], label="webdistill (lavapipe)")
    ax1.plot(pt_x, pt_y, label="PyTorch (CPU)", linestyle="--")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss (mean over the chunk)")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot([r["epoch"] for r in wd_epochs], [r["test_top1"] for r in wd_epochs], marker="o", label="webdistill")
    pt_ep = [r for r in pt if "epoch" in r]
    ax2.plot([r["epoch"] for r in pt_ep], [100 * r["test_top1"] for r in pt_ep], marker="s", linestyle="--",
             label="PyTorch")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test top-1 (%)")
    ax2.set_xticks([r["epoch"] for r in wd_epochs])
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.suptitle(a.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out, dpi=100)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
