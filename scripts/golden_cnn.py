"""Golden files for the CNN backbones (tests/cnn_models.rs reads them; tests never run Python).

For every model: build the PyTorch reference (torchvision ResNets, timm MobileNetV2 and
ConvNeXt, and the CIFAR ResNets of CRD / mdistiller defined below), fill every state-dict
tensor with golden_common's synthetic values (the Rust tests compute the same values), run it
in eval mode on the golden input and save only the logits, plus
the state-dict names and shapes as metadata so the tests check the layouts match exactly.
For resnet20 it also runs one train-mode step (batch statistics, cross-entropy on fixed labels)
and saves the loss, two parameter gradients and the updated running stats of `bn1`.

    pip install torch torchvision timm safetensors numpy
    python scripts/golden_cnn.py                # all goldens into tests/golden/
    python scripts/golden_cnn.py resnet20 ...   # some of them
    python scripts/golden_cnn.py --check-load FILE --model NAME [--classes N --size S]
        # load a webdistill checkpoint into the PyTorch model with strict=True

The golden input is golden_common.unit("input", n) reshaped to [2, 3, S, S]: uniform in
[-1, 1) like normalised images. (synthetic("input", ..) would scale it like a weight, by
1/sqrt(3*S*S), and the logits would hardly depend on the input.)

Sizes: 32-px models at 32 px. The models made for 224 px run at 64 px for the fast CI tests
(the architectures allow it) and at 224 px in `<name>_224.safetensors` for the ignored tests.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_common import fill_model, unit  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
CLASSES = 10


# --- CIFAR ResNets, layout of CRD (HobbitLong/RepDistiller) and mdistiller ---------------
class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(out + res)


class CifarResNet(nn.Module):
    def __init__(self, depth, num_classes, widths=(16, 16, 32, 64), in_chans=3):
        super().__init__()
        n = (depth - 2) // 6
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_layer(widths[1], n)
        self.layer2 = self._make_layer(widths[2], n, stride=2)
        self.layer3 = self._make_layer(widths[3], n, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        # CRD uses AvgPool2d(8) at 32 px: the global average.
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(name, classes):
    """The PyTorch model for a webdistill registry name, and its test input size."""
    import timm
    import torchvision

    if name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) not in (18, 34):
        return CifarResNet(int(name[6:]), classes), 32
    if name in ("resnet18", "resnet34", "resnet18_cifar", "resnet34_cifar"):
        m = getattr(torchvision.models, name.split("_")[0])(num_classes=classes)
        if name.endswith("_cifar"):
            m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            m.maxpool = nn.Identity()
            return m, 32
        return m, 64
    if name.startswith("mobilenetv2"):
        m = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=classes)
        if name == "mobilenetv2_cifar":
            m.conv_stem.stride = (1, 1)
            return m, 32
        return m, 64
    if name.startswith("convnext_"):
        base = name.replace("_p2", "")
        m = timm.create_model(base, pretrained=False, num_classes=classes)
        if name.endswith("_p2"):
            # A 2x2 stride-2 patch stem; stage 0 keeps no downsample (see src/models/convnext.rs).
            m.stem[0] = nn.Conv2d(3, m.stem[0].out_channels, 2, 2)
            return m, 32
        return m, 64
    raise SystemExit(f"unknown model {name}")


NAMES = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet18", "resnet18_cifar", "resnet34", "resnet34_cifar",
    "mobilenetv2", "mobilenetv2_cifar",
    "convnext_atto", "convnext_atto_p2", "convnext_tiny", "convnext_tiny_p2",
]
# Also goldened at 224 px (ignored tests: slow on a software GPU).
BIG = ["resnet18", "resnet34", "mobilenetv2", "convnext_atto", "convnext_tiny"]
TRAIN_LABELS = [3, 7]


def layout(model):
    return json.dumps({k: list(v.shape) for k, v in model.state_dict().items()})


def save(path, tensors, meta):
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, path, metadata=meta)
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")


def golden_input(size):
    return torch.from_numpy(unit("input", 2 * 3 * size * size).astype(np.float32).reshape(2, 3, size, size))


def golden(name, size=None, suffix=""):
    torch.manual_seed(0)
    model, default = build(name, CLASSES)
    size = size or default
    fill_model(model).eval()
    x = golden_input(size)
    with torch.no_grad():
        logits = model(x).numpy()
    tensors = {"logits": logits}
    meta = {"model": name, "size": str(size), "classes": str(CLASSES), "state_dict": layout(model),
            "torch": torch.__version__}
    if name == "resnet20" and not suffix:
        model.train()
        model.zero_grad()
        out = model(x)
        loss = F.cross_entropy(out, torch.tensor(TRAIN_LABELS))
        loss.backward()
        tensors.update({
            "train.logits": out.detach().numpy(),
            "train.loss": loss.detach().numpy().reshape(1),
            "train.grad.conv1.weight": model.conv1.weight.grad.numpy(),
            "train.grad.fc.weight": model.fc.weight.grad.numpy(),
            "train.bn1.running_mean": model.bn1.running_mean.numpy(),
            "train.bn1.running_var": model.bn1.running_var.numpy(),
        })
        meta["train_labels"] = json.dumps(TRAIN_LABELS)
    os.makedirs(OUT, exist_ok=True)
    save(os.path.join(OUT, f"{name}{suffix}.safetensors"), tensors, meta)


def check_load(path, name, classes, size):
    """Load a webdistill checkpoint with strict=True and print the logits of the golden input."""
    from safetensors.torch import load_file
    model, default = build(name, classes)
    sd = load_file(path)
    # PyTorch keeps num_batches_tracked as int64 0-dim; webdistill writes exactly that.
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = golden_input(size or default)
    with torch.no_grad():
        print(model(x).numpy())
    print(f"{path}: {len(sd)} tensors loaded into {name} with strict=True")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--check-load")
    ap.add_argument("--model")
    ap.add_argument("--classes", type=int, default=CLASSES)
    ap.add_argument("--size", type=int)
    a = ap.parse_args()
    if a.check_load:
        return check_load(a.check_load, a.model, a.classes, a.size)
    torch.set_num_threads(max(1, os.cpu_count() // 2))
    # float64 accumulation is not what torch does on CPU; keep its defaults (float32).
    for name in a.names or NAMES:
        golden(name)
        if name in BIG:
            golden(name, 224, "_224")


if __name__ == "__main__":
    main()
