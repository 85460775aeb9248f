"""Deterministic synthetic tensors, identical to tests/common/golden.rs (same hash, same rules).

Golden tests fill a PyTorch model with these values, run it in eval mode on a synthetic
input, and commit only the logits; the Rust tests compute the same weights and input.
"""
import numpy as np

M64 = (1 << 64) - 1


def name_hash(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode():
        h ^= b
        h = (h * 0x00000100000001B3) & M64
    return h


def _splitmix64(x):
    z = (x + np.uint64(0x9E3779B97F4A7C15))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def unit(name: str, n: int) -> np.ndarray:
    """Values in [-1, 1) for elements 0..n of tensor `name` (float64)."""
    with np.errstate(over="ignore"):
        i = np.arange(n, dtype=np.uint64)
        r = _splitmix64(np.uint64(name_hash(name)) ^ (i * np.uint64(0x9E3779B97F4A7C15)))
    return (r >> np.uint64(11)).astype(np.float64) / float(1 << 53) * 2.0 - 1.0


def synthetic(name: str, shape) -> np.ndarray:
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape)) if shape else 1
    last = name.rsplit(".", 1)[-1]
    fan_in = max(int(np.prod(shape[1:])) if len(shape) > 1 else 1, 1)
    u = unit(name, n)
    if last == "running_var":
        v = 1.0 + 0.5 * u
    elif last == "running_mean":
        v = 0.1 * u
    elif last == "num_batches_tracked":
        v = np.zeros(n)
    elif "pos_embed" in name or "cls_token" in name or "relative_position_bias_table" in name:
        v = 0.02 * u
    elif len(shape) >= 2:
        v = u * np.sqrt(3.0 / fan_in)
    elif last in ("weight", "alpha"):
        v = 1.0 + 0.1 * u
    else:
        v = 0.1 * u
    return v.astype(np.float32).reshape(shape)


def fill_model(model):
    """Overwrite every state-dict tensor of a torch model with its synthetic values."""
    import torch
    sd = model.state_dict()
    new = {}
    for k, t in sd.items():
        v = synthetic(k, t.shape if t.dim() > 0 else ())
        new[k] = torch.from_numpy(v).to(t.dtype)
    model.load_state_dict(new, strict=True)
    return model
