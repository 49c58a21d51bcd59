#!/usr/bin/python3
"""Builds the PyTorch checkpoint fixtures read by weights/pytorch_test.go.

Run with Debian's python3-torch (1.13) from the repository root:

    /usr/bin/python3 testdata/pytorch/make_fixtures.py

For every <name>.pt it writes <name>.expected.json, which holds, for each
tensor the Go reader must find, its safetensors dtype name, its shape and its
contiguous little-endian bytes as hex, plus the metadata (top-level scalars)
the reader should report. Tests need no torch: they compare against the JSON.

Tensor values are seeded, so reruns give the same values; the legacy files
still differ run to run in their storage keys (torch names them after memory
addresses), which the reader does not care about.
"""

import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def raw_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # numpy has no bfloat16
    data = t.numpy().tobytes()
    assert sys.byteorder == "little"
    return data


def flatten(obj, prefix, out):
    for k, v in obj.items():
        name = prefix + str(k)
        if isinstance(v, torch.Tensor):
            out[name] = v
        elif isinstance(v, dict):
            flatten(v, name + ".", out)


def expected(state, metadata):
    tensors = {}
    flat = {}
    flatten(state, "", flat)
    for name, t in flat.items():
        tensors[name] = {
            "dtype": DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "hex": raw_bytes(t).hex(),
        }
    return {"tensors": tensors, "metadata": metadata}


def save(name, obj, state, metadata=None, **kwargs):
    path = os.path.join(HERE, name + ".pt")
    torch.save(obj, path, **kwargs)
    # Check torch reads back what the JSON claims.
    back = torch.load(path)
    exp = expected(state, metadata or {})
    got = {}
    if isinstance(back, dict) and "state_dict" in back:
        back = back["state_dict"]
    flatten(back, "", got)
    assert sorted(got) == sorted(exp["tensors"]), (sorted(got), sorted(exp["tensors"]))
    for k, t in got.items():
        assert raw_bytes(t).hex() == exp["tensors"][k]["hex"], k
    with open(os.path.join(HERE, name + ".expected.json"), "w") as f:
        json.dump(exp, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{name}.pt: {os.path.getsize(path)} bytes, {len(exp['tensors'])} tensors")


def basic_state():
    g = torch.Generator().manual_seed(1234)
    return {
        "f32": torch.randn(3, 4, generator=g),
        "f64": torch.randn(2, 3, generator=g, dtype=torch.float64),
        "f16": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(2, 2, 3, generator=g).bfloat16(),
        "i64": torch.arange(-3, 3, dtype=torch.int64).view(2, 3),
        "i32": torch.randint(-100000, 100000, (4,), generator=g, dtype=torch.int32),
        "i16": torch.randint(-30000, 30000, (3,), generator=g, dtype=torch.int16),
        "i8": torch.randint(-128, 128, (2, 4), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 256, (6,), generator=g, dtype=torch.uint8),
        "bool": torch.rand(5, generator=g) > 0.5,
        "scalar": torch.tensor(3.5),
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        "empty": torch.zeros(0, 3),
        "layers.10.w": torch.randn(2, generator=g),
        "layers.9.w": torch.randn(2, generator=g),
        "layers.2.w": torch.randn(2, generator=g),
    }


def views_state():
    g = torch.Generator().manual_seed(99)
    a = torch.arange(20.0)
    m = torch.randn(6, 8, generator=g)
    b = torch.randn(4, 6, generator=g).bfloat16()
    c = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    i = torch.arange(12, dtype=torch.int64).view(3, 4)
    return {
        "base": a,
        "x": a[5:15],
        "y": a.view(4, 5)[:, 1],
        "z": a.view(4, 5).t(),
        "step": a[::2],
        "elem": a[3],  # 0-d view with an offset
        "none": a[5:5],  # empty view
        "bcast": a[2:5].expand(4, 3),  # stride 0
        "m_t": m.t(),
        "m_slice": m[1:5, 2:7],
        "m_step": m[::2, 1::3],
        "b": b,
        "b_t": b.t(),
        "b_col": b[:, 2],
        "b_rows": b[1:3],
        "c_perm": c.permute(2, 0, 1),
        "c_sub": c[1, :, 1:3],
        "i_t": i.t(),
    }


def main():
    basic = basic_state()
    save("zip", basic, basic)
    save("legacy", basic, basic, _use_new_zipfile_serialization=False)
    save("zip_proto4", basic, basic, pickle_protocol=4)

    views = views_state()
    save("views", views, views)
    save("views_legacy", views, views, _use_new_zipfile_serialization=False)

    g = torch.Generator().manual_seed(7)
    inner = {
        "emb.weight": torch.randn(4, 3, generator=g),
        "enc": {"w": torch.randn(2, 2, generator=g), "b": torch.zeros(2)},
        "dec": {"layer": {"0": {"w": torch.ones(3, dtype=torch.float16)}}},
    }
    wrapped = {
        "state_dict": inner,
        "epoch": 3,
        "name": "run1",
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(2)}}, "lr": 0.1},
    }
    save("wrapped", wrapped, inner, {"epoch": "3", "name": "run1"})


if __name__ == "__main__":
    main()
