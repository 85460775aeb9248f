#!/usr/bin/env python3
"""PyTorch reference timing of the distillation step that `webdistill bench distill-step` runs.

The step (issue 5's measurement): a `resnet20` teacher (eval mode, no gradients) and a student
on a batch of 64 random 3x32x32 images with 100 classes; the OFA-KD objective (papers-digest
A1-A4) with branches on student stages 1-3, eps = 1, T = 1, plus CE on the labels; AdamW
(lr 5e-4, weight decay 0.05). Same architectures and sizes as webdistill's; weights are random
(speed only), float32 with PyTorch's default TF32 settings.

Students (`--student`):
- `vit_micro_p4`: timm VisionTransformer, patch 4, dim 128, depth 6, 4 heads (1,217,508
  parameters; `webdistill models`: 1.22M). Stage taps after blocks 1, 2, 4, 5.
- `mixer_micro_p4`: timm MlpMixer, patch 4, dim 128, depth 6, mlp_ratio (0.5, 4.0) (862,692
  parameters; `webdistill models`: 0.86M). Same taps; no class token, the head reads the mean.

OFA branches (src/distill/ofa.rs, token students): PatchMerging 8x8 -> 4x4 tokens (LayerNorm,
Linear 4d -> d without bias, GELU) on the patch tokens, `4 - s` timm ViT Blocks (4 heads,
mlp 4, no qkv bias; for the mixer too, as webdistill builds them), the class token (ViT) or the
token mean (Mixer), Linear(d, classes). 673,124 + 475,236 + 277,348 = 1,425,708 parameters for
stages 1-3 of either student.

    pip install torch timm
    python3 scripts/torch_distill_step.py [--device cpu|cuda] [--student vit_micro_p4|mixer_micro_p4]
        [--steps 10] [--batch 64] [--threads N] [--graphs]

Modes: `eager` always. With `--graphs` (CUDA only; on the CPU a note on stderr and nothing
else) also the whole step (teacher, student, branches, losses, backward, AdamW with
capturable=True) captured as one CUDA graph and replayed per step; if capture fails, the step
with its forward and loss under torch.compile(mode="reduce-overhead") instead; if that fails
too, a note on stderr. A failure of these modes never loses the eager line, which is printed
(and flushed) first.

Prints one JSON line per mode on stdout and nothing else there: framework, device, student,
mode (`eager`, `cuda graphs` or `compile reduce-overhead`), batch, steps, ms_per_step and
images_per_s (median over the timed steps after 2 warm-ups, each step waited on with
loss.item()), peak_mib (torch.cuda.max_memory_allocated over the timed steps, and for the
graph modes over the capture too, since replays allocate nothing; null on the CPU), params
(trainable: student + branches), student_params, branch_params, threads. Parameter counts (with
webdistill's), notes and, for the graph modes, their losses against eager's go to stderr.
"""
import argparse
import gc
import json
import os
import statistics
import sys
import time
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_cnn import CifarResNet  # noqa: E402

CLASSES = 100
DIM = 128
DEPTH = 6
STAGES = (1, 2, 3)
# What webdistill builds (src/models/{vit,mixer}.rs, src/distill/ofa.rs; see the docstring).
EXPECTED = {
    "vit_micro_p4": (1217508, [673124, 475236, 277348]),
    "mixer_micro_p4": (862692, [673124, 475236, 277348]),
}


def feature_blocks(depth):
    # webdistill's models::feature_blocks (OFAKD's stage taps for plain token models).
    if depth == 12:
        return [1, 3, 9, 11]
    return [max(-(-depth * k // 4), 1) - 1 for k in range(1, 5)]


class VitStudent(nn.Module):
    """timm's ViT with the four stage features OFA taps (class token first)."""

    prefix = 1

    def __init__(self, classes):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer
        self.vit = VisionTransformer(img_size=32, patch_size=4, embed_dim=DIM, depth=DEPTH, num_heads=4, num_classes=classes)
        self.taps = feature_blocks(DEPTH)

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


class MixerStudent(nn.Module):
    """timm's MlpMixer (webdistill's mixer_micro_p4) with the four stage features OFA taps."""

    prefix = 0

    def __init__(self, classes):
        super().__init__()
        from timm.models.mlp_mixer import MlpMixer
        self.mixer = MlpMixer(num_classes=classes, img_size=32, patch_size=4, num_blocks=DEPTH, embed_dim=DIM,
                              mlp_ratio=(0.5, 4.0))
        self.taps = feature_blocks(DEPTH)

    def forward(self, x):
        m = self.mixer
        x = m.stem(x)
        feats = []
        for i, blk in enumerate(m.blocks):
            x = blk(x)
            if i in self.taps:
                feats.append(x)
        x = m.norm(x)
        return m.head(x.mean(1)), feats


STUDENTS = {"vit_micro_p4": VitStudent, "mixer_micro_p4": MixerStudent}


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
    """OFA's branch for a token student: one merge (8x8 -> 4x4 at 32 px), ViT blocks, readout, fc."""

    def __init__(self, dim, depth, classes, prefix, grid=8):
        super().__init__()
        from timm.models.vision_transformer import Block
        self.prefix = prefix
        self.grid = grid
        self.merge = PatchMerge(dim, dim, True)
        self.blocks = nn.Sequential(*[Block(dim, 4, 4.0, qkv_bias=False) for _ in range(depth)])
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        p = self.prefix
        patches = self.merge(x[:, p:], self.grid)
        if p:
            x = self.blocks(torch.cat([x[:, :p], patches], 1))
            return self.fc(x[:, 0])
        return self.fc(self.blocks(patches).mean(1))


def ofa_loss(logits_s, logits_t, target, eps=1.0, temperature=1.0):
    pred_t = F.softmax(logits_t / temperature, 1)
    # One-hot by scatter_: no host sync, safe inside a CUDA graph.
    onehot = torch.zeros_like(logits_s).scatter_(1, target[:, None], 1.0)
    prod = (pred_t + onehot) ** eps
    return (-(prod - onehot) * F.log_softmax(logits_s / temperature, 1)).sum(1).mean()


def count(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class Setup:
    """Teacher, student, branches, AdamW and static input/label tensors, built from seed 0."""

    def __init__(self, student, batch, dev, capturable=False):
        torch.manual_seed(0)
        self.teacher = CifarResNet(20, CLASSES).to(dev).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = STUDENTS[student](CLASSES).to(dev).train()
        prefix = self.student.prefix
        self.branches = nn.ModuleList([TokenBranch(DIM, 4 - s, CLASSES, prefix) for s in STAGES]).to(dev).train()
        params = list(self.student.parameters()) + list(self.branches.parameters())
        kw = {"capturable": True} if capturable else {}
        self.opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.05, **kw)
        self.x = torch.randn(batch, 3, 32, 32, device=dev)
        self.y = torch.randint(0, CLASSES, (batch,), device=dev)
        self.student_params = count(self.student)
        self.branch_params = [count(b) for b in self.branches]

    def forward_loss(self, x, y):
        with torch.no_grad():
            t = self.teacher(x)
        s, feats = self.student(x)
        loss = F.cross_entropy(s, y) + ofa_loss(s, t, y)
        for br, f in zip(self.branches, feats[: len(STAGES)]):
            loss = loss + ofa_loss(br(f), t, y)
        return loss

    def step(self):
        loss = self.forward_loss(self.x, self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def timed(fn, steps, dev, reset=True):
    """Median seconds of `steps` calls of fn() (each waited on) after 2 warm-ups, and the peak MiB
    allocated since the warm-ups (reset=True) or since the caller's reset_peak (reset=False)."""
    losses = [fn().item() for _ in range(2)]
    sync(dev)
    if reset:
        reset_peak(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        losses.append(fn().item())
        sync(dev)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return statistics.median(times), peak, losses


def run_eager(a, dev):
    s = Setup(a.student, a.batch, dev)
    return (s,) + timed(s.step, a.steps, dev)


def run_graphs(a, dev):
    """The whole step as one CUDA graph (PyTorch's "whole network capture" recipe)."""
    s = Setup(a.student, a.batch, dev, capturable=True)
    # Warm up on a side stream (lazy init: cuBLAS/cuDNN handles, AdamW state) before capture.
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        for _ in range(3):
            s.step()
    torch.cuda.current_stream(dev).wait_stream(side)
    sync(dev)
    graph = torch.cuda.CUDAGraph()
    # Grads set to None before capture: backward inside the graph allocates them from the
    # graph's private pool, and every replay writes them afresh (no zero_grad needed).
    s.opt.zero_grad(set_to_none=True)
    # Replays allocate nothing (they reuse the pool's addresses, which the allocator does not
    # count as allocated between replays), so the peak is taken over the capture, whose
    # allocations mirror one eager step's, and the replays.
    free(dev)
    reset_peak(dev)
    with torch.cuda.graph(graph):
        static_loss = s.forward_loss(s.x, s.y)
        static_loss.backward()
        s.opt.step()
    sync(dev)

    def replay():
        graph.replay()
        return static_loss

    return (s,) + timed(replay, a.steps, dev, reset=False) + (graph,)


def run_compile(a, dev):
    """Forward + losses under torch.compile(mode="reduce-overhead"); backward and AdamW eager."""
    s = Setup(a.student, a.batch, dev)
    fwd = torch.compile(s.forward_loss, mode="reduce-overhead")
    mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)

    def step():
        if mark is not None:
            mark()
        loss = fwd(s.x, s.y)
        s.opt.zero_grad(set_to_none=True)
        loss.backward()
        s.opt.step()
        return loss

    # Compilation happens in the first calls; extra warm-ups so cudagraph trees record. As with
    # the graph mode, the peak includes the recording runs (replays allocate nothing).
    reset_peak(dev)
    for _ in range(3):
        step().item()
    return (s,) + timed(step, a.steps, dev, reset=False)


def free(dev):
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--student", default="vit_micro_p4", choices=sorted(STUDENTS))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--graphs", action="store_true", help="also time the step as a CUDA graph (CUDA only)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    a.steps = max(a.steps, 1)
    dev = torch.device(a.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else a.device

    def emit(mode, s, sec, peak):
        ms = sec * 1e3
        print(json.dumps({
            "framework": f"pytorch {torch.__version__}",
            "device": device_name,
            "student": a.student,
            "mode": mode,
            "batch": a.batch,
            "steps": a.steps,
            "ms_per_step": round(ms, 3),
            "images_per_s": round(a.batch / sec, 1),
            "peak_mib": None if peak is None else round(peak, 1),
            "params": s.student_params + sum(s.branch_params),
            "student_params": s.student_params,
            "branch_params": s.branch_params,
            "threads": torch.get_num_threads(),
        }), flush=True)

    s, sec, peak, eager_losses = run_eager(a, dev)
    exp_student, exp_branches = EXPECTED[a.student]
    ok = s.student_params == exp_student and s.branch_params == exp_branches
    print(f"{a.student}: {s.student_params} parameters, branches {s.branch_params} "
          f"(webdistill: {exp_student}, {exp_branches}){'' if ok else '  MISMATCH'}", file=sys.stderr)
    emit("eager", s, sec, peak)
    del s
    free(dev)

    def check(mode, losses):
        # Both modes run 3 steps before the losses they return, from the same seed as eager:
        # their losses should follow eager's steps 3, 4, ... (up to float reordering).
        pairs = list(zip(losses, eager_losses[3:]))
        worst = max((abs(g - e) / max(abs(e), 1e-12) for g, e in pairs), default=float("nan"))
        print(f"{mode}: losses {[round(v, 5) for v, _ in pairs]} vs eager {[round(e, 5) for _, e in pairs]} "
              f"(worst relative difference {worst:.2e})", file=sys.stderr)

    if not a.graphs:
        return
    if dev.type != "cuda":
        print(f"--graphs: CUDA graphs need a CUDA device (this run is on {a.device}); skipped", file=sys.stderr)
        return
    try:
        s, sec, peak, losses, graph = run_graphs(a, dev)
        check("cuda graphs", losses)
        emit("cuda graphs", s, sec, peak)
        del s, graph
        free(dev)
        return
    except Exception as e:  # noqa: BLE001 - never lose the run to this mode
        print(f"--graphs: CUDA graph capture failed ({type(e).__name__}: {e}); trying torch.compile(mode=\"reduce-overhead\")",
              file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
    free(dev)  # here, once the exception (and the frames it holds) is gone
    try:
        s, sec, peak, losses = run_compile(a, dev)
        check("compile reduce-overhead", losses)
        emit("compile reduce-overhead", s, sec, peak)
    except Exception as e:  # noqa: BLE001
        print(f"--graphs: torch.compile(mode=\"reduce-overhead\") failed too ({type(e).__name__}: {e}); eager only",
              file=sys.stderr)
        traceback.print_exc(file=sys.stderr)


if __name__ == "__main__":
    main()
