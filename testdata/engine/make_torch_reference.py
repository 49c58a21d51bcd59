#!/usr/bin/python3
"""Reference outputs from PyTorch for the engine's tests (committed; the tests
need neither torch nor this script).

    apt-get install python3-torch python3-numpy
    /usr/bin/python3 testdata/engine/make_torch_reference.py

Writes under testdata/engine/torch/:

* cnn/: a seeded CNN exercising conv2d (stride 2, padding 1; and a
  non-square kernel without bias), batchnorm2d with non-trivial running
  statistics, relu, maxpool (overlapping, padded), avgpool (padded), flatten,
  linear, gelu, linear. model.safetensors (written by the small writer below),
  arch.yaml, input.npy (raw samples in [0, 1]) and logits.npy (torch, eval
  mode, on the normalised inputs).
* mlp/: linear, leaky_relu, batchnorm1d, dropout, linear, tanh, linear,
  log_softmax, saved with torch.save (a PyTorch zip checkpoint), arch.json,
  input.npy, logits.npy.
* llama/: a tiny LLaMA in the Hugging Face layout (config.json, BF16
  model.safetensors) and logits.npy for the token ids in tokens.txt,
  computed by a plain torch transcription of transformers'
  LlamaForCausalLM forward pass (RMSNorm, rotate_half rotary embeddings,
  grouped-query attention with repeat_kv, causal mask, SwiGLU).
"""
import json
import math
import os
import struct

import numpy as np
import torch
from torch import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch")
DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.bfloat16: "BF16", torch.float16: "F16"}


def save_safetensors(path, tensors):
    """A minimal safetensors writer: JSON header, 8-byte length, raw data."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def randomize_bn(bn, g):
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.5)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 1.5 + 0.25)
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.2)
        bn.num_batches_tracked.fill_(7)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2, padding=1),         # 20x20 -> 10x10
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),           # -> 5x5
            nn.Conv2d(6, 8, (3, 2), padding=(1, 0), bias=False),  # -> 5x4
            nn.AvgPool2d(3, stride=2, padding=1),           # -> 3x2
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.GELU(), nn.Linear(16, 5))

    def forward(self, x):
        return self.classifier(self.features(x))


CNN_ARCH = """# PyTorch reference CNN (make_torch_reference.py)
input:
  shape: [3, 20, 20]
  mean: [0.5, 0.4, 0.3]
  std: [0.25, 0.2, 0.3]
layers:
  - {type: conv2d, name: features.0, stride: 2, padding: 1}
  - {type: batchnorm2d, name: features.1}
  - {type: relu}
  - {type: maxpool2d, kernel: 3, stride: 2, padding: 1}
  - {type: conv2d, name: features.4, padding: [1, 0], bias: false}
  - {type: avgpool2d, kernel: 3, stride: 2, padding: 1}
  - {type: flatten}
  - {type: linear, name: classifier.1}
  - {type: gelu}
  - {type: linear, name: classifier.3}
"""

MLP_ARCH = {
    "input": {"shape": [12], "mean": [0.5], "std": [0.5]},
    "layers": [
        {"type": "linear", "name": "net.0", "out": 20},
        {"type": "leaky_relu", "negative_slope": 0.2},
        {"type": "batchnorm1d", "name": "net.2"},
        {"type": "dropout", "p": 0.3},
        {"type": "linear", "name": "net.4"},
        {"type": "tanh"},
        {"type": "linear", "name": "net.6"},
        {"type": "log_softmax"},
    ],
}


def make_cnn(g):
    torch.manual_seed(11)
    m = CNN()
    randomize_bn(m.features[1], g)
    m.eval()
    x = torch.rand(8, 3, 20, 20, generator=g)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.2, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = m((x - mean) / std)
    d = os.path.join(OUT, "cnn")
    os.makedirs(d, exist_ok=True)
    save_safetensors(os.path.join(d, "model.safetensors"), m.state_dict())
    with open(os.path.join(d, "arch.yaml"), "w") as f:
        f.write(CNN_ARCH)
    np.save(os.path.join(d, "input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(d, "logits.npy"), logits.numpy().astype(np.float32))


def make_mlp(g):
    torch.manual_seed(12)
    m = nn.Module()
    m.net = nn.Sequential(nn.Linear(12, 20), nn.LeakyReLU(0.2), nn.BatchNorm1d(20), nn.Dropout(0.3),
                          nn.Linear(20, 10), nn.Tanh(), nn.Linear(10, 4), nn.LogSoftmax(dim=1))
    randomize_bn(m.net[2], g)
    m.eval()
    x = torch.rand(16, 12, generator=g)
    with torch.no_grad():
        logits = m.net((x - 0.5) / 0.5)
    d = os.path.join(OUT, "mlp")
    os.makedirs(d, exist_ok=True)
    torch.save(m.state_dict(), os.path.join(d, "model.pt"))
    with open(os.path.join(d, "arch.json"), "w") as f:
        json.dump(MLP_ARCH, f, indent=2)
        f.write("\n")
    np.save(os.path.join(d, "input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(d, "logits.npy"), logits.numpy().astype(np.float32))


# ---- tiny LLaMA, transcribed from transformers' modeling_llama ----

LLAMA = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, vocab_size=50,
             max_position_embeddings=64, tie_word_embeddings=False)


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def llama_forward(w, cfg, ids):
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = H // nh
    T = len(ids)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    freqs = torch.outer(torch.arange(T).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf")).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        h = rms_norm(x, w[p + "input_layernorm.weight"], cfg["rms_norm_eps"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, nh, hd).transpose(0, 1)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=0)  # repeat_kv
        v = v.repeat_interleave(nh // nkv, dim=0)
        att = (q @ k.transpose(1, 2)) / math.sqrt(hd) + mask
        att = torch.softmax(att.float(), dim=-1)
        o = (att @ v).transpose(0, 1).reshape(T, H)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], cfg["rms_norm_eps"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], cfg["rms_norm_eps"])
    return x @ w["lm_head.weight"].T


def make_llama(g):
    cfg = LLAMA
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = H // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H)}
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        shapes.update({p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (kv, H),
                       p + "self_attn.v_proj.weight": (kv, H), p + "self_attn.o_proj.weight": (H, H),
                       p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                       p + "mlp.down_proj.weight": (H, I), p + "input_layernorm.weight": (H,),
                       p + "post_attention_layernorm.weight": (H,)})
    w = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        w[name] = t.bfloat16()  # stored as BF16; computed on the rounded values
    ids = [int(v) for v in torch.randint(0, V, (12,), generator=g)]
    with torch.no_grad():
        logits = llama_forward({k: v.float() for k, v in w.items()}, cfg, ids)
    d = os.path.join(OUT, "llama")
    os.makedirs(d, exist_ok=True)
    save_safetensors(os.path.join(d, "model.safetensors"), w)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(cfg, architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                       torch_dtype="bfloat16"), f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "tokens.txt"), "w") as f:
        f.write(" ".join(str(i) for i in ids) + "\n")
    np.save(os.path.join(d, "logits.npy"), logits.numpy().astype(np.float32))


def main():
    g = torch.Generator().manual_seed(1234)
    make_cnn(g)
    make_mlp(g)
    make_llama(g)
    print("torch", torch.__version__, "->", OUT)


if __name__ == "__main__":
    main()
