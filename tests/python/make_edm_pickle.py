"""Writes an EDM-structured network pickle from a reference file.

usage: make_edm_pickle.py FIXTURE.safetensors OUT.pkl

The network (`ema`) is a tree of persistent stand-in modules holding the
fixture's `model.*` weights under EDM's module names, with the fixture's
`precond` class and constructor `kwargs`; `enc` and `dec` are plain
`torch.nn.ModuleDict`s as in EDM. Tensors pickle through torch's own
`__reduce__`, i.e. `_rebuild_tensor_v2` over `_load_from_bytes` storages.
"""

import json
import os
import pickle
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_utils.persistence import Persistent  # noqa: E402

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
BUFFERS = ("resample_filter", "freqs")


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        array = np.frombuffer(data[8 + length + start : 8 + length + end], dtype=DTYPES[info["dtype"]])
        tensors[name] = torch.from_numpy(array.reshape(info["shape"]).copy())
    return tensors, metadata


def build(tensors, metadata):
    kwargs = json.loads(metadata["kwargs"])
    root = Persistent(metadata["precond"], **kwargs)
    for name, tensor in sorted(tensors.items()):
        if not name.startswith("model."):
            continue
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if part not in module._modules:
                if part in ("enc", "dec"):
                    child = torch.nn.ModuleDict()
                else:
                    child = Persistent(kwargs.get("model_type", "SongUNet") if part == "model" else part)
                module.add_module(part, child)
            module = module._modules[part]
        if leaf in BUFFERS:
            module.register_buffer(leaf, tensor.float())
        else:
            module.register_parameter(leaf, torch.nn.Parameter(tensor.float(), requires_grad=False))
    return root


def main():
    fixture, out = sys.argv[1:3]
    tensors, metadata = read_safetensors(fixture)
    data = dict(
        ema=build(tensors, metadata),
        loss_fn=Persistent("EDMLoss", P_mean=-1.2, P_std=1.2, sigma_data=0.5),
        augment_pipe=None,
        dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="datasets/x.zip"),
    )
    with open(out, "wb") as f:
        pickle.dump(data, f)


if __name__ == "__main__":
    main()
