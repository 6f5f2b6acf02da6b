"""Writes a StyleGAN2-ADA-structured network pickle from a reference file.

usage: make_stylegan2_pickle.py FIXTURE.safetensors OUT.pkl [LEAVE_OUT_KEY]

The generator (`G_ema`, and the same again as `G`) is a tree of persistent stand-in
modules holding the fixture's `mapping.*` and `synthesis.*` tensors under the
reference's module names and classes (`Generator`, `MappingNetwork`,
`FullyConnectedLayer`, `SynthesisNetwork`, `SynthesisBlock`,
`SynthesisLayer`, `ToRGBLayer`, `Conv2dLayer`), with the fixture's
constructor `kwargs`; `mapping_kwargs` and `synthesis_kwargs` are
`dnnlib.util.EasyDict`s as `train.py` makes them. `w_avg`, `noise_const` and
`resample_filter` are buffers, the rest parameters. LEAVE_OUT_KEY, when given,
is a tensor left out (to test refusals).
"""

import json
import os
import pickle
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnnlib.util import EasyDict  # noqa: E402
from make_edm_pickle import read_safetensors  # noqa: E402
from torch_utils.persistence import Persistent  # noqa: E402

BUFFERS = ("w_avg", "noise_const", "resample_filter")


def class_of(path, name):
    """The reference's class of module `name` under `path` (module names)."""
    if name == "mapping":
        return "MappingNetwork"
    if name == "synthesis":
        return "SynthesisNetwork"
    if name.startswith("fc") or name in ("embed", "affine"):
        return "FullyConnectedLayer"
    if name.startswith("b") and name[1:].isdigit():
        return "SynthesisBlock"
    if name in ("conv0", "conv1"):
        return "SynthesisLayer"
    if name == "torgb":
        return "ToRGBLayer"
    if name == "skip":
        return "Conv2dLayer"
    raise ValueError(f"unknown module {'.'.join(path + [name])}")


def build(tensors, kwargs, leave_out):
    kwargs = dict(kwargs)
    kwargs["mapping_kwargs"] = EasyDict(kwargs.get("mapping_kwargs", {}))
    kwargs["synthesis_kwargs"] = EasyDict(kwargs.get("synthesis_kwargs", {}))
    root = Persistent("Generator", **kwargs)
    for name, tensor in sorted(tensors.items()):
        if not name.startswith(("mapping.", "synthesis.")) or name == leave_out:
            continue
        *path, leaf = name.split(".")
        module = root
        for index, part in enumerate(path):
            if part not in module._modules:
                module.add_module(part, Persistent(class_of(path[:index], part)))
            module = module._modules[part]
        if leaf in BUFFERS:
            module.register_buffer(leaf, tensor.float())
        else:
            module.register_parameter(leaf, torch.nn.Parameter(tensor.float(), requires_grad=False))
    return root


def main():
    fixture, out = sys.argv[1:3]
    leave_out = sys.argv[3] if len(sys.argv) > 3 else None
    tensors, metadata = read_safetensors(fixture)
    kwargs = json.loads(metadata["kwargs"])
    g_ema = build(tensors, kwargs, leave_out)
    data = dict(
        G=build(tensors, kwargs, leave_out),
        D=Persistent("Discriminator", c_dim=kwargs.get("c_dim", 0), img_resolution=kwargs["img_resolution"]),
        G_ema=g_ema,
        augment_pipe=None,
        training_set_kwargs=EasyDict(class_name="training.dataset.ImageFolderDataset", path="datasets/x.zip"),
    )
    with open(out, "wb") as f:
        pickle.dump(data, f)


if __name__ == "__main__":
    main()
