#!/usr/bin/env python3
"""Golden logits for the token models (ViT/DeiT, MLP-Mixer, ResMLP, Swin), made with timm.

Each model is built with timm's own classes and the kwargs of our registry name, filled with
golden_common's synthetic weights, and run in eval mode on golden_common.synthetic("input",
[2, 3, H, W]). Only the logits are committed (tests/golden/<name>.safetensors, with timm's
state-dict names and shapes in the metadata so the Rust test can check its names against them).

One small model (mixer_micro_p4) also gets its state dict exported by timm in float16, with the
logits timm computes from those rounded weights: the Rust `predict` test reads that file.

    python3 scripts/golden_vit.py                     # write all golden files
    python3 scripts/golden_vit.py --only vit_micro_p4
    python3 scripts/golden_vit.py --check-exports target/vit-export
        # load checkpoints written by the Rust tests into timm with strict=True and compare logits

Needs torch, timm and safetensors (tests never need Python).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import timm
from safetensors.torch import save_file, load_file
from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_common as gc  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden")
CLASSES = 10


def swin(img, patch, window, embed, depths, heads):
    return SwinTransformer(img_size=img, patch_size=patch, window_size=window, embed_dim=embed, depths=depths,
                           num_heads=heads, num_classes=CLASSES)


SMALL = dict(depths=(2, 2, 2, 2), heads=(2, 4, 8, 16))
TINY = dict(depths=(2, 2, 6, 2), heads=(3, 6, 12, 24))

# name -> (image size, constructor)
MODELS = {
    "vit_micro_p4": (32, lambda: VisionTransformer(img_size=32, patch_size=4, embed_dim=128, depth=6, num_heads=4,
                                                   num_classes=CLASSES)),
    "vit_nano_p4": (32, lambda: VisionTransformer(img_size=32, patch_size=4, embed_dim=32, depth=4, num_heads=2,
                                                  num_classes=CLASSES)),
    "vit_tiny_p4": (32, lambda: VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3,
                                                  num_classes=CLASSES)),
    "vit_small_p4": (32, lambda: VisionTransformer(img_size=32, patch_size=4, embed_dim=384, depth=12, num_heads=6,
                                                   num_classes=CLASSES)),
    "deit_tiny_patch16_224": (224, lambda: timm.create_model("deit_tiny_patch16_224", num_classes=CLASSES)),
    "mixer_micro_p4": (32, lambda: MlpMixer(img_size=32, patch_size=4, embed_dim=128, num_blocks=6,
                                            mlp_ratio=(0.5, 4.0), num_classes=CLASSES)),
    "mixer_nano_p4": (32, lambda: MlpMixer(img_size=32, patch_size=4, embed_dim=32, num_blocks=4,
                                           mlp_ratio=(0.5, 4.0), num_classes=CLASSES)),
    "mixer_b16_224": (224, lambda: timm.create_model("mixer_b16_224", num_classes=CLASSES)),
    "resmlp_12_p4": (32, lambda: MlpMixer(img_size=32, patch_size=4, embed_dim=384, num_blocks=12, mlp_ratio=4,
                                          block_layer=ResBlock, norm_layer=Affine, num_classes=CLASSES)),
    "resmlp_12_224": (224, lambda: timm.create_model("resmlp_12_224", num_classes=CLASSES)),
    "swin_tiny_224": (224, lambda: timm.create_model("swin_tiny_patch4_window7_224", num_classes=CLASSES)),
    "swin_nano_224": (224, lambda: swin(224, 4, 7, 64, **SMALL)),
    "swin_pico_224": (224, lambda: swin(224, 4, 7, 48, **SMALL)),
    "swin_tiny_p2w4": (32, lambda: swin(32, 2, 4, 96, **TINY)),
    "swin_nano_p2w4": (32, lambda: swin(32, 2, 4, 64, **SMALL)),
    "swin_pico_p2w4": (32, lambda: swin(32, 2, 4, 48, **SMALL)),
}

# The model whose timm-written state dict is committed for the `predict` test.
EXPORT = "mixer_micro_p4"


def build(name):
    img, make = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    return img, model


def synthetic_input(img):
    return torch.from_numpy(gc.synthetic("input", [2, 3, img, img]))


@torch.no_grad()
def golden(name):
    img, model = build(name)
    gc.fill_model(model)
    x = synthetic_input(img)
    logits = model(x).float().contiguous()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    meta = {"model": name, "timm": timm.__version__, "torch": torch.__version__, "img": str(img),
            "state_dict": json.dumps(shapes, sort_keys=True)}
    tensors = {"logits": logits}
    if name == EXPORT:
        # timm -> webdistill: the state dict as timm writes it, in float16 to keep the file small,
        # and the logits of those rounded weights.
        sd = {k: v.half().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, os.path.join(OUT, f"{name}.timm_f16.safetensors"), metadata={"format": "pt"})
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
        tensors["logits_f16_weights"] = model(x).float().contiguous()
    save_file(tensors, os.path.join(OUT, f"{name}.safetensors"), metadata=meta)
    print(f"{name:24s} {img:4d}px logits {tuple(logits.shape)} |max| {logits.abs().max().item():.4f}")


@torch.no_grad()
def check_exports(folder):
    """webdistill -> timm: every checkpoint the Rust tests wrote loads with strict=True and gives
    the golden logits."""
    ok = True
    names = sorted(f[:-len(".safetensors")] for f in os.listdir(folder) if f.endswith(".safetensors"))
    for name in names:
        if name not in MODELS:
            continue
        img, model = build(name)
        sd = load_file(os.path.join(folder, f"{name}.safetensors"))
        model.load_state_dict(sd, strict=True)
        got = model(synthetic_input(img))
        want = load_file(os.path.join(OUT, f"{name}.safetensors"))["logits"]
        err = ((got - want).abs().max() / want.abs().max()).item()
        status = "ok" if err < 1e-5 else "MISMATCH"
        ok &= err < 1e-5
        print(f"{name:24s} strict load ok, logits rel. error {err:.2e} {status}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="model names (default: all)")
    ap.add_argument("--check-exports", metavar="DIR", help="check Rust-written checkpoints in DIR against timm")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.check_exports:
        sys.exit(0 if check_exports(args.check_exports) else 1)
    os.makedirs(OUT, exist_ok=True)
    for name in args.only or MODELS:
        golden(name)


if __name__ == "__main__":
    main()
