"""Golden values for OBoW (tests/obow.rs), written as the reference code has them
(obow/builder_obow.py BoWExtractor and BoWPredictor, papers-digest B2-B4), in float64 on
synthetic tensors from golden_common. Inputs and parameters are saved with the results, so the
Rust tests need no Python. Run: python3 scripts/golden_obow.py
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from golden_common import synthetic  # noqa: E402

torch.set_default_dtype(torch.float64)
B, C, H, W, K, D = 2, 8, 7, 7, 16, 4
INV_DELTA, KAPPA, MU0, DECAY = 10.0, 5.0, 0.5, 0.99


def t(name, shape, scale=1.0):
    return torch.from_numpy(synthetic(name, shape).astype("float64")) * scale


# Teacher features after a ReLU, as the backbone's stage outputs are.
feat = t("obow.feat", (B, C, H, W), 3.0).clamp(min=0)
vocab = t("obow.vocab", (K, C), 3.0).clamp(min=0)
out = {"feat": feat, "vocab": vocab}

# ---- BoWExtractor.forward (training): distances, mu, codes, max-pool, L1 normalisation.
f = feat[:, :, 1:-1, 1:-1].contiguous()
emb_b = vocab.pow(2).sum(1)
emb_w = -2 * vocab.unsqueeze(2).unsqueeze(3)
dist = f.pow(2).sum(1, keepdim=True) + F.conv2d(f, weight=emb_w, bias=emb_b)
min_dist, _ = torch.min(dist, dim=1)
mu = MU0 * DECAY + (1 - DECAY) * min_dist.mean()
codes = F.softmax(-(INV_DELTA / mu) * dist, dim=1)
bow = F.normalize(F.adaptive_max_pool2d(codes, 1).flatten(1), p=1, dim=1)
out["bow.mu"] = mu.reshape(1)
out["bow.bow"] = bow
# _update_dictionary with local_average: 3x3 averages of the border-cropped map (one random
# location per image is taken; the Rust test picks the location with its own hash).
out["vocab.local_average"] = F.avg_pool2d(f, kernel_size=3, stride=1)

# ---- BoWPredictor: weight generator over the whole vocabulary, logits, soft CE / KL.
params = {
    "fc.weight": t("fc.weight", (2 * D, C)),
    "bn.weight": t("bn.weight", (2 * D,)),
    "bn.bias": t("bn.bias", (2 * D,)),
    "last.weight": t("last.weight", (D, 2 * D)),
    "last.bias": t("last.bias", (D,)),
}
for p in params.values():
    p.requires_grad_(True)
crops = 2
pooled = t("obow.pooled", (crops * B, D), 2.0).requires_grad_(True)
w = F.normalize(vocab, p=2, dim=1)
h = F.linear(w, params["fc.weight"])
h = F.batch_norm(h, None, None, params["bn.weight"], params["bn.bias"], training=True, eps=1e-5)
h = F.relu(h)
h = F.linear(h, params["last.weight"], params["last.bias"])
wgen = F.normalize(h, p=2, dim=1)
logits = KAPPA * pooled @ wgen.t()
target = bow.repeat(crops, 1)  # crop-major: row k*B + b is image b
log_p = F.log_softmax(logits, dim=1)
kl = F.kl_div(log_p, target, reduction="batchmean")
ce = -(target * log_p).sum(1).mean()
ce.backward()
out["head.pooled"] = pooled.detach()
out["head.weights"] = wgen.detach()
out["head.ce"] = ce.detach().reshape(1)
out["head.kl"] = kl.detach().reshape(1)
out["head.grad.pooled"] = pooled.grad
for n, p in params.items():
    out[n] = p.detach()
    out["head.grad." + n] = p.grad

path = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "obow.safetensors")
save_file({k: v.detach().float().contiguous() for k, v in out.items()}, path)
print("wrote", os.path.normpath(path), sum(v.numel() for v in out.values()), "values")
