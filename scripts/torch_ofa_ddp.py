#!/usr/bin/env python3
"""webdistill's OFA-KD run (`webdistill distill --method ofa`) in PyTorch with DistributedDataParallel.

For data or models that outgrow the one GPU (or browser) webdistill trains on: the same recipe
on as many processes as `torchrun` starts (backend nccl on CUDA, gloo on the CPU), starting from
and ending in webdistill's files. See docs/SCALE.md for when to use it and the commands.

    pip install torch timm safetensors numpy pillow
    torchrun --nproc_per_node 2 scripts/torch_ofa_ddp.py --student vit_micro_p4 \\
        --teacher resnet20 --teacher-weights assets/teacher/resnet20_fmnist.safetensors \\
        --data fashion-mnist --epochs 10 --batch 32 --out /tmp/ofa/last.safetensors
    webdistill eval --model vit_micro_p4 --weights /tmp/ofa/last.safetensors --data fashion-mnist

Also runs as a single process without torchrun (`python3 scripts/torch_ofa_ddp.py ...`).

What is the same as webdistill (src/distill/ofa.rs, objective.rs, losses.rs, src/train/config.rs,
src/train/run.rs, src/train/recipe/supervised.rs):
- Models and state-dict names: the student is timm's VisionTransformer (webdistill's ViT
  entries) or a CRD/mdistiller CIFAR ResNet (scripts/golden_cnn.py); the teacher a CIFAR ResNet
  or torchvision's resnet18/34(_cifar), built for the data's channels, classes and size, in eval
  mode. The teacher file loads with strict=True; the written student file holds exactly the
  student's state dict (OFA branches excluded), the tensors of webdistill's `last.safetensors`,
  so `webdistill eval`, `predict`, `train --init` and `distill --init` load it.
- OFA branches on the student stages `--ofa-stages` (default 1,2,3): token students get
  PatchMerging steps down to the grid `img/8` (7 from 112 px; an odd grid stops merging: none at
  28 px with patch 4), a Linear when the width changes, max(4 - s, 1) timm Blocks (4 heads, no qkv
  bias, LayerNorm eps 1e-5), the class token and Linear(dim, classes); CNN students get
  `n - s` SepConvs (channels doubling, the last to max(student, teacher) pooled width) or a 1x1
  conv for the last stage, global pooling and a Linear. Initialised as OFAKD's init_weights.
- Loss: gt_weight * CE(labels, label smoothing) + kd_weight * ofa(final logits, last eps) +
  ofa_weight * sum_s ofa(branch s, eps of s), ofa = mean_b sum_c -((p_t + onehot)^eps - onehot)
  * log_softmax(z / T) (no T^2), teacher detached. `--eps` as webdistill's `--ofa-eps`: one value
  for all, or one per branch stage then the final logits.
- Defaults of `webdistill distill` without --recipe: AdamW (0.9, 0.999, 1e-8) lr 1e-3, weight
  decay 0.05 on tensors of rank >= 2 except pos_embed and cls_token, per-step cosine to 1e-5 after
  one epoch of linear warm-up from 1e-6, batch 64, 10 epochs, random crop of the image
  zero-padded by 2 pixels and horizontal flip, no label smoothing, no drop path, no clipping.
  Steps per epoch = train images // global batch (global batch = --batch x processes).
- Data: per-channel mean / std of the whole training split (bytes / 255, float64), images
  zero-padded to --img-size before normalisation; --train-limit / --test-limit take the first N
  images; the image-folder split is webdistill's (see --data).

What differs: the batches (DistributedSampler and torch's RNG, not webdistill's counter-based
Feistel order), so runs agree in distribution, not step for step; BatchNorm statistics of a CNN
student are per process unless --sync-bn. Not implemented: the recipes' RandomResizedCrop,
colour jitter, mixup/cutmix (cifar-cnn, cifar-vit presets), other methods than ofa, resume.

Supported students: vit_nano_p4, vit_micro_p4, vit_tiny_p4, vit_small_p4, deit_tiny_patch16_224
(all timm VisionTransformer, the sizes of src/models/vit.rs) and the CIFAR ResNets resnet8,
resnet14, resnet20, resnet32, resnet44, resnet56, resnet110. Teachers: those CIFAR ResNets and
resnet18, resnet34, resnet18_cifar, resnet34_cifar.

Output: rank 0 evaluates the test split after every epoch, prints
`epoch E/N: train loss L, test loss l, top-1 A%, top-5 B%, ...` and writes the student to --out
(a .safetensors path, or a directory that gets last.safetensors), atomically (temp + os.replace).
"""
import argparse
import datetime
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from golden_cnn import CifarResNet  # noqa: E402
from torch_distill_step import PatchMerge, feature_blocks, ofa_loss  # noqa: E402
from train_teacher_torch import load as load_idx_dir  # noqa: E402
from train_teacher_torch import save_atomic, state_dict_np  # noqa: E402

# src/models/vit.rs: (patch, dim, depth, heads), mlp ratio 4.
VITS = {
    "vit_micro_p4": (4, 128, 6, 4),
    "vit_nano_p4": (4, 32, 4, 2),
    "vit_tiny_p4": (4, 192, 12, 3),
    "vit_small_p4": (4, 384, 12, 6),
    "deit_tiny_patch16_224": (16, 192, 12, 3),
}
CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110)
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # src/data/spec.rs


def cifar_depth(name):
    if name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) in CIFAR_DEPTHS:
        return int(name[6:])
    return None


# ---- data ----------------------------------------------------------------------------------
def _decode(path, size):
    """src/data/formats.rs decode_image: shorter side to `size` (bilinear), centre crop, RGB, CHW."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if w <= h:
            nw, nh = size, max(int(math.floor(h * size / w + 0.5)), 1)
        else:
            nw, nh = max(int(math.floor(w * size / h + 0.5)), 1), size
        if (w, h) != (nw, nh):
            im = im.resize((nw, nh), Image.BILINEAR)
        x, y = (nw - size) // 2, (nh - size) // 2
        im = im.crop((x, y, x + size, y + size))
        return np.asarray(im, np.uint8).transpose(2, 0, 1)


def _class_files(d):
    classes = sorted(e for e in os.listdir(d) if os.path.isdir(os.path.join(d, e)))
    if not classes:
        raise SystemExit(f"{d}: no class subfolders (one subfolder of PNG/JPEG images per class)")
    out = []
    for c in classes:
        cd = os.path.join(d, c)
        files = sorted(os.path.join(cd, f) for f in os.listdir(cd)
                       if os.path.isfile(os.path.join(cd, f)) and f.lower().endswith((".png", ".jpg", ".jpeg")))
        if not files:
            raise SystemExit(f"{cd}: empty class folder: no .png, .jpg or .jpeg files")
        out.append((c, files))
    return out


def held_out(i, f):
    """webdistill's split (src/data/folder.rs): image i of a class (sorted by name) is held out
    when floor((i + 1) f) > floor(i f); 0.1 holds out the 10th, 20th, ..."""
    return math.floor((i + 1) * f + 1e-9) > math.floor(i * f + 1e-9)


def load_folder(d, size, val_split=0.1):
    """webdistill's folder loader: train/ + val/ (or test/) subfolders are the splits; otherwise the
    class folders are in `d` and each class (sorted by path) is split by `held_out`."""
    test_dir = next((os.path.join(d, s) for s in ("val", "test") if os.path.isdir(os.path.join(d, s))), None)
    if os.path.isdir(os.path.join(d, "train")) and test_dir:
        tr = _class_files(os.path.join(d, "train"))
        names = [n for n, _ in tr]
        train = [(c, f) for c, (_, fs) in enumerate(tr) for f in fs]
        test = []
        for n, fs in _class_files(test_dir):
            if n not in names:
                raise SystemExit(f"{os.path.join(test_dir, n)}: class '{n}' is not among the training classes")
            test += [(names.index(n), f) for f in fs]
    else:
        all_ = _class_files(d)
        names = [n for n, _ in all_]
        train, test = [], []
        for c, (_, fs) in enumerate(all_):
            for i, f in enumerate(fs):
                (test if held_out(i, val_split) else train).append((c, f))

    def decode(items):
        x = np.stack([_decode(f, size) for _, f in items]) if items else np.zeros((0, 3, size, size), np.uint8)
        return x, np.array([c for c, _ in items], np.int64)
    return (*decode(train), *decode(test), names)


def _cifar_bin(path, label_bytes, label_at):
    raw = np.fromfile(path, np.uint8)
    rec = label_bytes + 3072
    if raw.size % rec:
        raise SystemExit(f"{path}: {raw.size} bytes is not a whole number of {rec}-byte records")
    raw = raw.reshape(-1, rec)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32), raw[:, label_at].astype(np.int64)


def load_cifar(d, hundred, coarse=False):
    sub = "cifar-100-binary" if hundred else "cifar-10-batches-bin"
    probe = "train.bin" if hundred else "test_batch.bin"
    if not os.path.isfile(os.path.join(d, probe)) and os.path.isfile(os.path.join(d, sub, probe)):
        d = os.path.join(d, sub)
    if hundred:
        xtr, ytr = _cifar_bin(os.path.join(d, "train.bin"), 2, 0 if coarse else 1)
        xte, yte = _cifar_bin(os.path.join(d, "test.bin"), 2, 0 if coarse else 1)
    else:
        parts = [_cifar_bin(os.path.join(d, f"data_batch_{i}.bin"), 1, 0) for i in range(1, 6)]
        xtr, ytr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        xte, yte = _cifar_bin(os.path.join(d, "test_batch.bin"), 1, 0)
    return xtr, ytr, xte, yte, (20 if coarse else 100) if hundred else 10


def load_data(spec, img_size, val_split=0.1):
    """`--data` as webdistill's DataSpec: (train x uint8 NCHW, train y, test x, test y, classes)."""
    kind, _, d = spec.partition(":")
    kind = kind.lower()
    if kind in ("", "bundled", "fashion-mnist-subset") and not d:
        d, kind = os.path.join(ROOT, "data", "fashion-mnist-subset"), "fashion-mnist"
    if kind in ("fashion-mnist", "fashion_mnist", "fmnist", "mnist"):
        if not d and kind == "mnist":
            raise SystemExit("--data mnist needs a directory (mnist:DIR)")
        xtr, ytr, xte, yte = load_idx_dir(d or FASHION_MNIST_DIR)
        return xtr[:, None], ytr.astype(np.int64), xte[:, None], yte.astype(np.int64), 10
    if not d:
        raise SystemExit(f"--data {spec}: {kind} needs a directory ({kind}:DIR)")
    if kind in ("cifar10", "cifar-10"):
        return load_cifar(d, False)
    if kind in ("cifar100", "cifar-100", "cifar100-coarse", "cifar-100-coarse"):
        return load_cifar(d, True, kind.endswith("coarse"))
    if kind in ("folder", "imagefolder"):
        return load_folder(d, img_size or 32, val_split)
    raise SystemExit(f"--data {spec}: unknown dataset; use bundled, fashion-mnist[:DIR], mnist:DIR, "
                     "cifar10:DIR, cifar100[-coarse]:DIR or folder:DIR")


# webdistill's names (src/data/formats.rs).
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def mean_std(x):
    """webdistill's Dataset::mean_std: per channel over every training pixel / 255, float64."""
    mean, std = [], []
    for c in range(x.shape[1]):
        s = sq = 0.0
        for i in range(0, len(x), 4096):  # chunks: a large split stays within memory
            v = x[i:i + 4096, c].astype(np.float64) / 255.0
            s += v.sum()
            sq += (v * v).sum()
        n = max(x.shape[0] * x.shape[2] * x.shape[3], 1)
        m = s / n
        mean.append(np.float32(m))
        std.append(np.float32(math.sqrt(max(sq / n - m * m, 0.0))))
    return np.array(mean, np.float32), np.array(std, np.float32)


def augment(x, gen, pad, flip):
    """webdistill's Crop::Pad + hflip on uint8 [B, C, H, W]: a window of the zero-padded image."""
    b, c, h, w = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        top = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        left = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    else:
        xp, top, left = x, torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long)
    rows = top[:, None] + torch.arange(h)[None, :]
    cols = left[:, None] + torch.arange(w)[None, :]
    if flip:
        f = torch.rand(b, generator=gen) < 0.5
        cols = torch.where(f[:, None], cols.flip(1), cols)
    # The draws come from a CPU generator; the gather runs where the batch is.
    rows, cols = rows.to(x.device), cols.to(x.device)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


class Normalise:
    """uint8 [B, C, h, w] -> float: zero-padded to `out` px, * (1/255), (v - mean) * (1/std)."""

    def __init__(self, mean, std, out, dev):
        self.mean = torch.tensor(mean, device=dev).view(1, -1, 1, 1)
        self.inv_std = (1.0 / torch.tensor(std, device=dev)).view(1, -1, 1, 1)
        self.out, self.dev = out, dev

    def __call__(self, x):
        p = (self.out - x.shape[-1]) // 2
        if p:
            x = F.pad(x, (p, p, p, p))
        x = x.to(self.dev, non_blocking=True).float() * (1.0 / 255.0)
        return (x - self.mean) * self.inv_std


# ---- models --------------------------------------------------------------------------------
class VitStudent(nn.Module):
    """timm's VisionTransformer (webdistill's names) returning the logits and OFA's stage taps."""

    def __init__(self, name, in_chans, size, classes, drop_path=0.0):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer
        patch, dim, depth, heads = VITS[name]
        if size % patch:
            raise SystemExit(f"{name}: image size {size} is not a multiple of the patch size {patch}")
        self.vit = VisionTransformer(img_size=size, patch_size=patch, in_chans=in_chans, embed_dim=dim, depth=depth,
                                     num_heads=heads, num_classes=classes, drop_path_rate=drop_path)
        self.taps = feature_blocks(depth)
        self.dim, self.grid = dim, size // patch
        # [(kind, tokens or channels, grid)] per stage, as webdistill's feature_shapes.
        self.stages = [("tokens", dim, self.grid)] * len(self.taps)
        self.pooled_dim = dim

    def forward(self, x):
        v = self.vit
        x = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))
        feats = []
        for i, blk in enumerate(v.blocks):
            x = blk(x)
            if i in self.taps:
                feats.append(x)
        return v.forward_head(v.norm(x)), feats

    @property
    def inner(self):
        """The module whose state dict is webdistill's checkpoint."""
        return self.vit


class CnnStudent(nn.Module):
    """A CIFAR ResNet whose stage features are the outputs of layer1..3."""

    def __init__(self, depth, in_chans, size, classes):
        super().__init__()
        self.net = CifarResNet(depth, classes, in_chans=in_chans)
        s2, s3 = (size - 1) // 2 + 1, ((size - 1) // 2) // 2 + 1
        self.stages = [("map", 16, size), ("map", 32, s2), ("map", 64, s3)]
        self.pooled_dim = 64

    def forward(self, x):
        n = self.net
        x = F.relu(n.bn1(n.conv1(x)))
        feats = []
        for layer in (n.layer1, n.layer2, n.layer3):
            x = layer(x)
            feats.append(x)
        return n.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)), feats

    @property
    def inner(self):
        return self.net


def build_teacher(name, in_chans, classes):
    d = cifar_depth(name)
    if d:
        return CifarResNet(d, classes, in_chans=in_chans), 64
    if name in ("resnet18", "resnet34", "resnet18_cifar", "resnet34_cifar"):
        import torchvision
        m = getattr(torchvision.models, name.split("_")[0])(num_classes=classes)
        if name.endswith("_cifar"):
            m.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
            m.maxpool = nn.Identity()
        elif in_chans != 3:
            m.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        return m, 512
    raise SystemExit(f"--teacher {name}: supported teachers are resnet{CIFAR_DEPTHS} and resnet18/34(_cifar)")


def build_student(name, in_chans, size, classes, drop_path):
    if name in VITS:
        return VitStudent(name, in_chans, size, classes, drop_path)
    d = cifar_depth(name)
    if d:
        if drop_path:
            raise SystemExit("--drop-path is implemented for ViT students only")
        return CnnStudent(d, in_chans, size, classes)
    raise SystemExit(f"--student {name}: supported students are {', '.join(VITS)} and "
                     f"{', '.join(f'resnet{d}' for d in CIFAR_DEPTHS)}")


# ---- OFA branches (src/distill/ofa.rs) -----------------------------------------------------
def final_grid(img_size):
    return 7 if img_size >= 112 else max(img_size // 8, 1)


class TokenBranch(nn.Module):
    def __init__(self, dim, ds, grid, fin, depth, classes):
        super().__init__()
        from timm.models.vision_transformer import Block
        n, g = 0, grid
        while g % 2 == 0 and g // 2 >= fin:
            n, g = n + 1, g // 2
        merges, width = [], dim
        for i in range(n):
            merges.append(PatchMerge(width, ds, i == 0 or i != n - 1))
            width = ds
        if width != dim:
            raise SystemExit(f"OFA branch: class tokens of width {dim} but merged features of width {width}")
        self.merge = nn.ModuleList(merges)
        self.proj = nn.Linear(width, ds) if width != ds else None
        self.blocks = nn.Sequential(*[Block(ds, 4, 4.0, qkv_bias=False) for _ in range(depth)])
        self.fc = nn.Linear(ds, classes)
        self.grid = grid

    def forward(self, x):
        cls, p = x[:, :1], x[:, 1:]
        res = self.grid
        for m in self.merge:
            p = m(p, res)
            res //= 2
        if self.proj is not None:
            p = self.proj(p)
        return self.fc(self.blocks(torch.cat([cls, p], 1))[:, 0])


class SepConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.Conv2d(cin, cin, 1, bias=False),
            nn.BatchNorm2d(cin), nn.ReLU(),
            nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x):
        return self.op(x)


class CnnBranch(nn.Module):
    def __init__(self, c, k, d, classes):
        super().__init__()
        seps, cin = [], c
        for i in range(k):
            seps.append(SepConv(cin, d if i == k - 1 else cin * 2))
            cin *= 2
        self.sep = nn.Sequential(*seps)
        self.conv = nn.Conv2d(c, d, 1) if k == 0 else None
        self.fc = nn.Linear(d, classes)

    def forward(self, x):
        h = self.sep(x) if self.conv is None else self.conv(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


def ofa_init(m):
    # OFAKD's init_weights.
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_branches(student, teacher_dim, stages, size, classes):
    n = len(student.stages)
    d = max(student.pooled_dim, teacher_dim)
    out = []
    for s in stages:
        if not 1 <= s <= n:
            raise SystemExit(f"--ofa-stages: stage {s} is out of range; the student has stages 1..{n}")
        kind, c, grid = student.stages[s - 1]
        if kind == "tokens":
            out.append(TokenBranch(c, student.pooled_dim, grid, final_grid(size), max(n - s, 1), classes))
        else:
            out.append(CnnBranch(c, n - s, d, classes))
    # Named as webdistill's store names them (distill.ofa.branch{s}.*).
    m = nn.ModuleDict({f"branch{s}": br for s, br in zip(stages, out)})
    m.apply(ofa_init)
    return m


class OfaNet(nn.Module):
    """Student and branches as one module, so one DDP wrapper all-reduces both."""

    def __init__(self, student, branches):
        super().__init__()
        self.student, self.branches = student, branches

    def forward(self, x, stages):
        logits, feats = self.student(x)
        return logits, [self.branches[f"branch{s}"](feats[s - 1]) for s in stages]


def eps_for(eps, slot, slots):
    # DistillConfig::eps_for: none -> 1, one -> all, one per slot, else the last.
    if not eps:
        return 1.0
    if len(eps) == 1:
        return eps[0]
    return eps[slot] if len(eps) == slots else eps[-1]


def lr_at(step, a, spe, total):
    # src/optim.rs Schedule::Cosine with optimizer_of's warm-up (f32 round: half away from 0).
    warmup = int(math.floor(a.warmup_epochs * spe + 0.5))
    if step < warmup:
        return a.warmup_lr + (a.lr - a.warmup_lr) * step / warmup
    span = max(total, warmup + 1) - warmup
    p = min((step - warmup) / span, 1.0)
    return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1.0 + math.cos(math.pi * p))


@torch.no_grad()
def evaluate(student, x, y, norm, batch, dev, classes):
    """Sums as webdistill's eval plan: cross-entropy, top-1 and top-5 hits, images."""
    was = student.training
    student.eval()
    loss = t1 = t5 = 0.0
    k = min(5, classes)
    for i in range(0, len(x), batch):
        xb = norm(torch.from_numpy(x[i:i + batch].copy()))
        yb = torch.from_numpy(y[i:i + batch]).to(dev)
        z, _ = student(xb)
        loss += F.cross_entropy(z, yb, reduction="sum").item()
        t1 += (z.argmax(1) == yb).sum().item()
        t5 += (z.topk(k, 1).indices == yb[:, None]).any(1).sum().item()
    student.train(was)
    n = max(len(x), 1)
    return {"test_loss": loss / n, "test_top1": 100.0 * t1 / n, "test_top5": 100.0 * t5 / n, "images": len(x)}


def load_student_weights(student, path, log):
    """webdistill's load_student: every tensor must match, except a classifier of another shape
    (another class count), which keeps its initialisation."""
    from safetensors.torch import load_file
    sd = load_file(path)
    own = student.inner.state_dict()
    head = "head." if isinstance(student, VitStudent) else "fc."
    if any(k.startswith(head) and k in sd and sd[k].shape != v.shape for k, v in own.items()):
        sd = {k: v for k, v in sd.items() if not k.startswith(head)}
        missing, unexpected = student.inner.load_state_dict(sd, strict=False)
        if unexpected or any(not k.startswith(head) for k in missing):
            raise SystemExit(f"{path}: missing {missing}, unexpected {unexpected}")
        log(f"--init {path}: {len(sd)} tensors loaded; the classifier has another class count and stays at its init")
    else:
        student.inner.load_state_dict(sd, strict=True)
        log(f"--init {path}: {len(sd)} tensors loaded")


def out_path(out):
    if out.endswith(".safetensors"):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        return out
    os.makedirs(out, exist_ok=True)
    return os.path.join(out, "last.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="vit_micro_p4", help="student architecture (webdistill registry name)")
    ap.add_argument("--teacher", default="resnet20")
    ap.add_argument("--teacher-weights", required=True, help="the teacher's .safetensors (PyTorch names)")
    ap.add_argument("--init", default="",
                    help="start the student from this .safetensors (e.g. webdistill's last.safetensors)")
    ap.add_argument("--data", default="bundled", help="bundled, fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, "
                    "cifar100[-coarse]:DIR or folder:DIR")
    ap.add_argument("--val-split", type=float, default=0.1,
                    help="image folders without val/: the fraction of each class held out (as webdistill's --val-split)")
    ap.add_argument("--img-size", type=int, default=0, help="input side (IDX/CIFAR data are zero-padded up to it; "
                    "image folders are resized to it, default 32); 0: the data's")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64, help="images per process and step (global batch: x processes)")
    ap.add_argument("--opt", default="adamw", choices=("adamw", "sgd"))
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-5)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--warmup-lr", type=float, default=1e-6)
    ap.add_argument("--clip-grad", type=float, default=0.0, help="clip gradients to this global L2 norm (0: off)")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--drop-path", type=float, default=0.0)
    ap.add_argument("--crop-padding", type=int, default=2)
    ap.add_argument("--no-hflip", action="store_true")
    ap.add_argument("--eps", "--ofa-eps", dest="eps", default="1",
                    help="OFA eps: one value, or one per branch stage then the final logits (comma-separated)")
    ap.add_argument("--ofa-stages", default="1,2,3")
    ap.add_argument("--ofa-weight", type=float, default=1.0)
    ap.add_argument("--kd-weight", type=float, default=1.0)
    ap.add_argument("--gt-weight", type=float, default=1.0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-limit", type=int, default=0, help="use only the first N training images (0: all)")
    ap.add_argument("--test-limit", type=int, default=0, help="use only the first N test images (0: all)")
    ap.add_argument("--eval-batch", type=int, default=100)
    ap.add_argument("--sync-bn", action="store_true",
                    help="CNN students on CUDA: BatchNorm statistics over the global batch")
    ap.add_argument("--tf32", action="store_true",
                    help="CUDA: allow TF32 convolutions and matmuls (faster, less exact)")
    ap.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads per process (0: torch's default)")
    ap.add_argument("--out", required=True, help="student .safetensors to write (or a directory: DIR/last.safetensors)")
    a = ap.parse_args()

    # ---- processes
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (a.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if a.epochs < 1 or a.batch < 1:
        raise SystemExit("--epochs and --batch must be positive")
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
        # float32 as webdistill computes (TF32 convolutions / matmuls only with --tf32).
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = a.tf32
    else:
        dev = torch.device("cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    # Under torchrun (even one process): a process group, so the nccl / gloo path is the one run.
    ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if a.sync_bn and not use_cuda:
        raise SystemExit("--sync-bn needs CUDA (PyTorch's SyncBatchNorm works with GPU modules only)")
    if ddp:
        timeout = datetime.timedelta(hours=2)  # rank 0 evaluates while the others wait
        if use_cuda:
            dist.init_process_group("nccl", timeout=timeout, device_id=dev)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    log = (lambda *m: print(*m, flush=True)) if rank == 0 else (lambda *m: None)

    # ---- data (every process loads it: the normalisation is over the whole training split)
    xtr, ytr, xte, yte, classes = load_data(a.data, a.img_size, a.val_split)
    # Class names for the student's card (folders name theirs; webdistill's for Fashion-MNIST).
    if isinstance(classes, list):
        names, classes = classes, len(classes)
    elif a.data.split(":")[0].lower() in ("", "bundled", "fashion-mnist", "fashion_mnist", "fmnist"):
        names = FASHION_MNIST_CLASSES
    else:
        names = [str(i) for i in range(classes)]
    mean, std = mean_std(xtr)
    if a.train_limit:
        xtr, ytr = xtr[:a.train_limit], ytr[:a.train_limit]
    if a.test_limit:
        xte, yte = xte[:a.test_limit], yte[:a.test_limit]
    chans, h = xtr.shape[1], xtr.shape[2]
    size = a.img_size or h
    if size < h or (size - h) % 2:
        raise SystemExit(f"--img-size {size}: must be the data's {h} px plus an even padding")
    norm = Normalise(mean, std, size, dev)

    # ---- models: the same seed everywhere (DDP also broadcasts rank 0's weights)
    torch.manual_seed(a.seed)
    stages = [int(s) for s in a.ofa_stages.split(",") if s.strip()]
    if not stages or len(set(stages)) != len(stages):
        raise SystemExit(f"--ofa-stages {a.ofa_stages}: give at least one stage, each once")
    eps = [float(e) for e in a.eps.split(",") if e.strip()]
    student = build_student(a.student, chans, size, classes, a.drop_path)
    teacher, teacher_dim = build_teacher(a.teacher, chans, classes)
    from safetensors.torch import load_file
    teacher.load_state_dict(load_file(a.teacher_weights), strict=True)
    teacher.to(dev).eval().requires_grad_(False)
    branches = build_branches(student, teacher_dim, stages, size, classes)
    if a.init:
        load_student_weights(student, a.init, log)
    net = OfaNet(student, branches)
    if a.sync_bn and ddp:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net.to(dev).train()
    model = nn.parallel.DistributedDataParallel(net, device_ids=[local] if use_cuda else None) if ddp else net

    # webdistill's grouping: decay on rank >= 2 except the token tables.
    decay, rest = [], []
    for n_, p in net.named_parameters():
        (decay if p.dim() >= 2 and not n_.endswith(("pos_embed", "cls_token")) else rest).append(p)
    groups = [{"params": decay, "weight_decay": a.wd}, {"params": rest, "weight_decay": 0.0}]
    if a.opt == "sgd":
        opt = torch.optim.SGD(groups, lr=a.lr, momentum=a.momentum)
    else:
        opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    params = decay + rest

    n = len(xtr)
    spe = max(n // (a.batch * world), 1)
    total = spe * a.epochs
    from torch.utils.data.distributed import DistributedSampler
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=a.seed)
    gen = torch.Generator().manual_seed(a.seed * 1000003 + rank)
    path = out_path(a.out)
    slots = len(stages) + 1
    log(f"OFA {a.teacher} -> {a.student} on {a.data} ({n} train / {len(xte)} test images, {classes} classes, "
        f"{chans}x{size}x{size}); {world} process(es), backend {dist.get_backend() if ddp else 'none'}, "
        f"device {dev}, batch {a.batch} x {world} = {a.batch * world}, {spe} steps/epoch, torch {torch.__version__}")
    log(f"normalisation: mean {mean.tolist()}, std {std.tolist()}")
    meta = {"format": "pt", "model": a.student, "teacher": a.teacher, "data": a.data, "img_size": str(size),
            "recipe": json.dumps(vars(a)), "world_size": str(world), "torch": torch.__version__,
            "mean": json.dumps(mean.tolist()), "std": json.dumps(std.tolist())}
    # webdistill's card (src/train/card.rs), so `webdistill predict --input image.png` takes the file as is.
    meta["webdistill.card"] = json.dumps({
        "model": a.student, "classes": names, "channels": chans, "image_size": h, "input_size": size,
        "mean": mean.tolist(), "std": std.tolist(), "data": a.data, "method": "ofa", "teacher": a.teacher})

    if a.init and rank == 0:
        # The file as loaded, before any step: compare with `webdistill eval` of the same file.
        r = evaluate(student, xte, yte, norm, a.eval_batch, dev, classes)
        print(f"init: test loss {r['test_loss']:.4f}, top-1 {r['test_top1']:.2f}%, top-5 {r['test_top5']:.2f}% "
              f"({r['images']} images)", flush=True)
    t_start = time.time()
    for epoch in range(a.epochs):
        t0 = time.time()
        sampler.set_epoch(epoch)
        order = np.fromiter(iter(sampler), np.int64)
        loss_sum = torch.zeros(2, dtype=torch.float64, device=dev)
        for s in range(spe):
            lr = lr_at(epoch * spe + s, a, spe, total)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = order[s * a.batch:(s + 1) * a.batch]
            xb = augment(torch.from_numpy(xtr[idx]).to(dev, non_blocking=True), gen, a.crop_padding, not a.no_hflip)
            xb = norm(xb)
            yb = torch.from_numpy(ytr[idx]).to(dev)
            with torch.no_grad():
                zt = teacher(xb)
            zs, zb = model(xb, stages)
            loss = a.gt_weight * F.cross_entropy(zs, yb, label_smoothing=a.label_smoothing)
            loss = loss + a.kd_weight * ofa_loss(zs, zt, yb, eps_for(eps, slots - 1, slots), a.temperature)
            branch = sum(ofa_loss(z, zt, yb, eps_for(eps, i, slots), a.temperature) for i, z in enumerate(zb))
            loss = loss + a.ofa_weight * branch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if a.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(params, a.clip_grad)
            opt.step()
            loss_sum += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64, device=dev)])
        if ddp:
            dist.all_reduce(loss_sum)
        train_loss = (loss_sum[0] / loss_sum[1].clamp(min=1)).item()
        secs = time.time() - t0
        if rank == 0:
            r = evaluate(student, xte, yte, norm, a.eval_batch, dev, classes)
            rec = {"epoch": epoch + 1, "train_loss": train_loss, **r, "lr": lr,
                   "images_per_s": spe * a.batch * world / max(secs, 1e-9), "seconds": round(time.time() - t_start, 1)}
            print(f"epoch {epoch + 1}/{a.epochs}: train loss {train_loss:.4f}, test loss {r['test_loss']:.4f}, "
                  f"top-1 {r['test_top1']:.2f}%, top-5 {r['test_top5']:.2f}% ({r['images']} images), "
                  f"{rec['images_per_s']:.1f} img/s, {rec['seconds']:.0f}s so far", flush=True)
            print(json.dumps(rec), flush=True)
            sd = state_dict_np(student.inner)
            m = dict(meta, epoch=str(epoch + 1), test_top1=f"{r['test_top1']:.4f}")
            from safetensors.numpy import save_file
            save_atomic(path, lambda p: save_file(sd, p, metadata=m))
        if ddp:
            dist.barrier()
    log(f"wrote {path}")
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
