#!/usr/bin/python3
"""Reference logits from PyTorch for the engine's graph layers and its
architecture files (committed; the tests need neither torch nor this script).

    apt-get install python3-torch python3-torchvision python3-numpy
    /usr/bin/python3 testdata/engine/make_torch_graphs.py

Writes:

* engine/archs/*.yaml: the architecture files the engine ships, written
  here from the same module structure the torch models below have —
  torchvision's resnet18/34/50, vgg16_bn and mobilenet_v2 (ImageNet, 224x224)
  and the CIFAR WideResNet-28-10 and -34-10 of Zagoruyko & Komodakis in its
  common PyTorch form (pre-activation blocks, 1x1 shortcut convolutions).
* testdata/engine/torch/graph/: a small seeded network with residual blocks
  (identity and downsample shortcuts), a concat, grouped, depthwise and
  dilated convolutions, ceil-mode max and average pooling, adaptive pooling,
  relu6 and silu: model.safetensors, arch.yaml, input.npy, logits.npy.
* testdata/engine/torch/zoo/<name>/: for each shipped architecture, the
  logits of two images under weights from the counter-based generator
  below (which the Go test re-implements, so no checkpoint is committed),
  and tensors.json, the model's state_dict names and shapes.

The generator: for tensor name N with n values, value i is built from
z = splitmix64(fnv1a64(N) + (i + 1) * 0x9E3779B97F4A7C15) as
u = float32(z >> 40) * 2^-23 - 1 (uniform in [-1, 1), exact in float32),
then scaled per role in float32 (see values()).
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torchvision
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "torch")
ARCHS = os.path.join(ROOT, "engine", "archs")

M64 = (1 << 64) - 1


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def uniform(name, n):
    """n values in [-1, 1) for tensor name (see the module docstring)."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(fnv1a64(name)) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -23) - np.float32(1)


def values(name, shape):
    """The generator's tensor for a state_dict entry, by its role."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = uniform(name, n)
    f = np.float32
    role = name.rsplit(".", 1)[-1]
    if role == "weight" and len(shape) >= 2:
        fan = int(np.prod(shape[1:]))
        v = u * f(math.sqrt(6.0 / fan))
    elif role == "weight":  # batchnorm scale
        v = f(1) + f(0.25) * u
    elif role == "bias":
        v = f(0.1) * u
    elif role == "running_mean":
        v = f(0.1) * u
    elif role == "running_var":
        v = f(1) + f(0.5) * u
    else:
        raise ValueError(name)
    return v.reshape(shape)


def fill(model):
    sd = model.state_dict()
    new = {}
    for k, t in sd.items():
        if k.endswith("num_batches_tracked"):
            new[k] = torch.zeros_like(t)
        else:
            new[k] = torch.from_numpy(values(k, tuple(t.shape)).copy())
    model.load_state_dict(new, strict=True)
    return [[k, list(t.shape)] for k, t in sd.items() if not k.endswith("num_batches_tracked")]


# ---- architecture files ----

def L(**kw):
    """One layer as a flow mapping, keys in a fixed order."""
    order = ["type", "name", "out", "kernel", "stride", "padding", "dilation", "groups", "bias", "ceil_mode", "output", "p"]
    parts = []
    for k in order:
        if k in kw:
            v = kw[k]
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, (list, tuple)):
                v = "[%s]" % ", ".join(str(x) for x in v)
            parts.append("%s: %s" % (k, v))
    return "{" + ", ".join(parts) + "}"


def emit(lines, items, indent):
    pad = " " * indent
    for it in items:
        if isinstance(it, str):
            lines.append(pad + "- " + it)
            continue
        kind, name, paths = it
        lines.append(pad + "- type: " + kind)
        if name:
            lines.append(pad + "  name: " + name)
        if kind == "residual":
            body, short = paths
            lines.append(pad + "  body:")
            emit(lines, body, indent + 4)
            if short:
                lines.append(pad + "  shortcut:")
                emit(lines, short, indent + 4)
        else:
            lines.append(pad + "  branches:")
            for br in paths:
                if not br:
                    lines.append(pad + "    - []")
                    continue
                lines.append(pad + "    -")
                emit(lines, br, indent + 6)


def write_arch(name, comment, inp, layers):
    lines = ["# " + c for c in comment.strip().split("\n")]
    lines += ["input:", "  shape: [%s]" % ", ".join(map(str, inp["shape"]))]
    for k in ("mean", "std"):
        lines.append("  %s: [%s]" % (k, ", ".join(repr(v) for v in inp[k])))
    lines.append("layers:")
    emit(lines, layers, 2)
    os.makedirs(ARCHS, exist_ok=True)
    with open(os.path.join(ARCHS, name + ".yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")


IMAGENET = {"shape": [3, 224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
CIFAR = {"shape": [3, 32, 32], "mean": [0.4914, 0.4822, 0.4465], "std": [0.2471, 0.2435, 0.2616]}


def resnet_arch(kind, blocks):
    layers = [L(type="conv2d", name="conv1", out=64, kernel=7, stride=2, padding=3, bias=False),
              L(type="batchnorm2d", name="bn1"), L(type="relu"),
              L(type="maxpool2d", kernel=3, stride=2, padding=1)]
    inplanes = 64
    exp = 1 if kind == "basic" else 4
    for li, (planes, n) in enumerate(zip([64, 128, 256, 512], blocks)):
        for b in range(n):
            stride = 2 if (li > 0 and b == 0) else 1
            if kind == "basic":
                body = [L(type="conv2d", name="conv1", out=planes, kernel=3, stride=stride, padding=1, bias=False),
                        L(type="batchnorm2d", name="bn1"), L(type="relu"),
                        L(type="conv2d", name="conv2", out=planes, kernel=3, padding=1, bias=False),
                        L(type="batchnorm2d", name="bn2")]
            else:
                body = [L(type="conv2d", name="conv1", out=planes, kernel=1, bias=False),
                        L(type="batchnorm2d", name="bn1"), L(type="relu"),
                        L(type="conv2d", name="conv2", out=planes, kernel=3, stride=stride, padding=1, bias=False),
                        L(type="batchnorm2d", name="bn2"), L(type="relu"),
                        L(type="conv2d", name="conv3", out=planes * 4, kernel=1, bias=False),
                        L(type="batchnorm2d", name="bn3")]
            short = []
            if stride != 1 or inplanes != planes * exp:
                short = [L(type="conv2d", name="downsample.0", out=planes * exp, kernel=1, stride=stride, bias=False),
                         L(type="batchnorm2d", name="downsample.1")]
            layers.append(("residual", "layer%d.%d" % (li + 1, b), (body, short)))
            layers.append(L(type="relu"))
            inplanes = planes * exp
    layers += [L(type="adaptive_avgpool2d", output=1), L(type="flatten"), L(type="linear", name="fc", out=1000)]
    return layers


def vgg16_bn_arch():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, i = [], 0
    for v in cfg:
        if v == "M":
            layers.append(L(type="maxpool2d", kernel=2, stride=2))
            i += 1
            continue
        layers += [L(type="conv2d", name="features.%d" % i, out=v, kernel=3, padding=1),
                   L(type="batchnorm2d", name="features.%d" % (i + 1)), L(type="relu")]
        i += 3
    layers += [L(type="adaptive_avgpool2d", output=7), L(type="flatten"),
               L(type="linear", name="classifier.0", out=4096), L(type="relu"), L(type="dropout", p=0.5),
               L(type="linear", name="classifier.3", out=4096), L(type="relu"), L(type="dropout", p=0.5),
               L(type="linear", name="classifier.6", out=1000)]
    return layers


def mobilenet_v2_arch():
    def cna(prefix, out, k, stride=1, groups=1):
        return [L(type="conv2d", name=prefix + ".0", out=out, kernel=k, stride=stride, padding=(k - 1) // 2,
                  groups=groups, bias=False) if groups > 1 else
                L(type="conv2d", name=prefix + ".0", out=out, kernel=k, stride=stride, padding=(k - 1) // 2, bias=False),
                L(type="batchnorm2d", name=prefix + ".1"), L(type="relu6")]

    layers = cna("features.0", 32, 3, 2)
    inp, fi = 32, 1
    for t, c, n, s in [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]:
        for b in range(n):
            stride = s if b == 0 else 1
            hidden = int(round(inp * t))
            body, j = [], 0
            if t != 1:
                body += cna("conv.%d" % j, hidden, 1)
                j += 1
            body += cna("conv.%d" % j, hidden, 3, stride, groups=hidden)
            body += [L(type="conv2d", name="conv.%d" % (j + 1), out=c, kernel=1, bias=False),
                     L(type="batchnorm2d", name="conv.%d" % (j + 2))]
            if stride == 1 and inp == c:
                layers.append(("residual", "features.%d" % fi, (body, [])))
            else:
                # No skip connection: the body alone, under the same prefix.
                layers += [prefix_layer(x, "features.%d" % fi) for x in body]
            inp, fi = c, fi + 1
    layers += cna("features.18", 1280, 1)
    layers += [L(type="adaptive_avgpool2d", output=1), L(type="flatten"), L(type="dropout", p=0.2),
               L(type="linear", name="classifier.1", out=1000)]
    return layers


def prefix_layer(flow, prefix):
    return flow.replace("name: ", "name: %s." % prefix, 1)


def wrn_arch(depth, widen):
    n = (depth - 4) // 6
    ch = [16, 16 * widen, 32 * widen, 64 * widen]
    layers = [L(type="conv2d", name="conv1", out=16, kernel=3, padding=1, bias=False)]
    inp = 16
    for bi, (out, stride) in enumerate(zip(ch[1:], [1, 2, 2])):
        for b in range(n):
            p = "block%d.layer.%d" % (bi + 1, b)
            s = stride if b == 0 else 1
            if inp == out:
                body = [L(type="batchnorm2d", name="bn1"), L(type="relu"),
                        L(type="conv2d", name="conv1", out=out, kernel=3, stride=s, padding=1, bias=False),
                        L(type="batchnorm2d", name="bn2"), L(type="relu"),
                        L(type="conv2d", name="conv2", out=out, kernel=3, padding=1, bias=False)]
                layers.append(("residual", p, (body, [])))
            else:
                # The shortcut starts after the shared bn1 + relu.
                layers += [L(type="batchnorm2d", name=p + ".bn1"), L(type="relu")]
                body = [L(type="conv2d", name="conv1", out=out, kernel=3, stride=s, padding=1, bias=False),
                        L(type="batchnorm2d", name="bn2"), L(type="relu"),
                        L(type="conv2d", name="conv2", out=out, kernel=3, padding=1, bias=False)]
                short = [L(type="conv2d", name="convShortcut", out=out, kernel=1, stride=s, bias=False)]
                layers.append(("residual", p, (body, short)))
            inp = out
    layers += [L(type="batchnorm2d", name="bn1"), L(type="relu"), L(type="avgpool2d", kernel=8),
               L(type="flatten"), L(type="linear", name="fc", out=10)]
    return layers


# ---- WideResNet as commonly written in PyTorch (xternalz / RobustBench) ----

class WRNBlock(nn.Module):
    def __init__(self, inp, out, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inp)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.equal = inp == out
        self.convShortcut = None if self.equal else nn.Conv2d(inp, out, 1, stride, 0, bias=False)

    def forward(self, x):
        if not self.equal:
            x = self.relu1(self.bn1(x))
            out = self.relu2(self.bn2(self.conv1(x)))
        else:
            out = self.relu2(self.bn2(self.conv1(self.relu1(self.bn1(x)))))
        out = self.conv2(out)
        return torch.add(x if self.equal else self.convShortcut(x), out)


class WRNStage(nn.Module):
    def __init__(self, n, inp, out, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WRNBlock(inp if i == 0 else out, out, stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, widen, classes=10):
        super().__init__()
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = WRNStage(n, ch[0], ch[1], 1)
        self.block2 = WRNStage(n, ch[1], ch[2], 2)
        self.block3 = WRNStage(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], classes)
        self.ch = ch[3]

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = nn.functional.avg_pool2d(out, 8)
        return self.fc(out.view(-1, self.ch))


ZOO = {
    "resnet18": ("torchvision.models.resnet18 (BasicBlock, [2, 2, 2, 2])", IMAGENET,
                 lambda: resnet_arch("basic", [2, 2, 2, 2]), lambda: torchvision.models.resnet18()),
    "resnet34": ("torchvision.models.resnet34 (BasicBlock, [3, 4, 6, 3])", IMAGENET,
                 lambda: resnet_arch("basic", [3, 4, 6, 3]), lambda: torchvision.models.resnet34()),
    "resnet50": ("torchvision.models.resnet50 (Bottleneck, [3, 4, 6, 3], stride on the 3x3: v1.5)", IMAGENET,
                 lambda: resnet_arch("bottleneck", [3, 4, 6, 3]), lambda: torchvision.models.resnet50()),
    "vgg16_bn": ("torchvision.models.vgg16_bn", IMAGENET, vgg16_bn_arch, lambda: torchvision.models.vgg16_bn()),
    "mobilenet_v2": ("torchvision.models.mobilenet_v2 (width 1.0)", IMAGENET, mobilenet_v2_arch,
                     lambda: torchvision.models.mobilenet_v2()),
    "wrn28_10": ("WideResNet-28-10 for CIFAR-10 (Zagoruyko & Komodakis), as xternalz/RobustBench write it;\n"
                 "RobustBench checkpoints also hold sub_block1.* tensors their forward pass does not use", CIFAR,
                 lambda: wrn_arch(28, 10), lambda: WideResNet(28, 10)),
    "wrn34_10": ("WideResNet-34-10 for CIFAR-10 (Zagoruyko & Komodakis), as xternalz/RobustBench write it;\n"
                 "RobustBench checkpoints also hold sub_block1.* tensors their forward pass does not use", CIFAR,
                 lambda: wrn_arch(34, 10), lambda: WideResNet(34, 10)),
}


def make_zoo():
    for name, (desc, inp, arch, build) in ZOO.items():
        comment = ("weightops architecture file for %s.\n"
                   "Written by testdata/engine/make_torch_graphs.py; TestArchZooMatchesTorch checks its\n"
                   "logits against torch on seeded weights.") % desc
        write_arch(name, comment, inp, arch())
        m = build()
        names = fill(m)
        m.eval()
        c, h, w = inp["shape"]
        x = (uniform("input:" + name, 2 * c * h * w) * np.float32(0.5) + np.float32(0.5)).reshape(2, c, h, w)
        mean = torch.tensor(inp["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(inp["std"], dtype=torch.float32).view(1, 3, 1, 1)
        with torch.no_grad():
            logits = m((torch.from_numpy(x) - mean) / std)
        d = os.path.join(OUT, "zoo", name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tensors.json"), "w") as f:
            json.dump(names, f, separators=(",", ":"))
            f.write("\n")
        np.save(os.path.join(d, "logits.npy"), logits.numpy().astype(np.float32))
        print(name, "params", sum(int(np.prod(s)) for _, s in names), "max |logit| %.3g" % logits.abs().max().item())


# ---- a small graph exercising every new layer ----

class Graph(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(4, 6, 3, padding=1, groups=2)
        self.pool1 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.b1_c1 = nn.Conv2d(6, 8, 3, stride=2, padding=2, dilation=2, bias=False)
        self.b1_bn = nn.BatchNorm2d(8)
        self.b1_dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.b1_down = nn.Conv2d(6, 8, 1, stride=2, bias=False)
        self.b2_bn = nn.BatchNorm2d(8)
        self.b2_c = nn.Conv2d(8, 8, 1)
        self.cat0 = nn.Conv2d(8, 4, (1, 3), padding=(0, 1))
        self.pool2 = nn.AvgPool2d(2, stride=2, ceil_mode=True)
        self.pool3 = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.fc = nn.Linear(12 * 2 * 3, 5)

    def forward(self, x):
        x = self.pool1(self.stem(x))
        x = nn.functional.silu(self.b1_dw(nn.functional.relu6(self.b1_bn(self.b1_c1(x)))) + self.b1_down(x))
        x = self.b2_c(self.b2_bn(x)) + x
        x = nn.functional.adaptive_max_pool2d(x, (5, 6))
        x = torch.cat([nn.functional.relu(self.cat0(x)), x], dim=1)
        x = self.pool3(self.pool2(x))
        x = nn.functional.adaptive_avg_pool2d(x, (2, 3))
        return self.fc(torch.flatten(x, 1))


GRAPH_ARCH = """# PyTorch reference graph (make_torch_graphs.py)
input:
  shape: [4, 19, 17]
  mean: [0.5]
  std: [0.25]
layers:
  - {type: conv2d, name: stem, padding: 1, groups: 2}
  - {type: maxpool2d, kernel: 2, stride: 2, ceil_mode: true}
  - type: residual
    body:
      - {type: conv2d, name: b1_c1, stride: 2, padding: 2, dilation: 2, bias: false}
      - {type: batchnorm2d, name: b1_bn}
      - {type: relu6}
      - {type: conv2d, name: b1_dw, padding: 1, groups: 8}
    shortcut:
      - {type: conv2d, name: b1_down, stride: 2, bias: false}
  - {type: silu}
  - type: residual
    body:
      - {type: batchnorm2d, name: b2_bn}
      - {type: conv2d, name: b2_c}
  - {type: adaptive_maxpool2d, output: [5, 6]}
  - type: concat
    branches:
      -
        - {type: conv2d, name: cat0, padding: [0, 1]}
        - {type: relu}
      - []
  - {type: avgpool2d, kernel: 2, stride: 2, ceil_mode: true}
  - {type: avgpool2d, kernel: 3, stride: 2, padding: 1, ceil_mode: true, count_include_pad: false}
  - {type: adaptive_avgpool2d, output: [2, 3]}
  - {type: flatten}
  - {type: linear, name: fc}
"""


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        raw = t.numpy().tobytes()
        dt = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def make_graph():
    m = Graph()
    fill(m)
    m.eval()
    g = torch.Generator().manual_seed(77)
    x = torch.rand(4, 4, 19, 17, generator=g)
    with torch.no_grad():
        logits = m((x - 0.5) / 0.25)
    d = os.path.join(OUT, "graph")
    os.makedirs(d, exist_ok=True)
    save_safetensors(os.path.join(d, "model.safetensors"), m.state_dict())
    with open(os.path.join(d, "arch.yaml"), "w") as f:
        f.write(GRAPH_ARCH)
    np.save(os.path.join(d, "input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(d, "logits.npy"), logits.numpy().astype(np.float32))


def main():
    make_graph()
    make_zoo()
    print("torch", torch.__version__, "torchvision", torchvision.__version__)


if __name__ == "__main__":
    main()
