"""Writes StyleGAN2-ADA reference files for the architectures the shared
fixtures do not cover (`orig`, `resnet`), in the shared fixtures' format.

usage: stylegan2_reference.py CHECKOUT OUT_DIR

CHECKOUT is a checkout of NVlabs/stylegan2-ada-pytorch (commit d72cc7d);
its `training/networks.py` `Generator` runs on the CPU with the reference
ops. Each file holds the generator's `state_dict()` (weights perturbed away
from the initialisation, so noise strengths and biases matter), inputs `z`
and `c`, and `expected_ws`, `expected_img` (noise_mode='const') and
`expected_img_nonoise` (noise_mode='none'); metadata `kwargs`,
`truncation_psi` and `source`.
"""

import json
import os
import struct
import sys

import numpy as np
import torch

CASES = {
    "sg2-orig-cond-16": dict(
        z_dim=16, c_dim=4, w_dim=24, img_resolution=16, img_channels=3,
        mapping_kwargs=dict(num_layers=3),
        synthesis_kwargs=dict(channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=None, architecture="orig"),
        truncation_psi=0.5,
    ),
    "sg2-resnet-16": dict(
        z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=1,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=256, architecture="resnet"),
        truncation_psi=1.0,
    ),
}


def write_safetensors(path, tensors, metadata):
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name in sorted(tensors):
        data = tensors[name].detach().contiguous().float().numpy().astype("<f4").tobytes()
        header[name] = dict(dtype="F32", shape=list(tensors[name].shape), data_offsets=[offset, offset + len(data)])
        offset += len(data)
        blobs.append(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def main():
    checkout, out_dir = sys.argv[1:3]
    sys.path.insert(0, checkout)
    from training.networks import Generator  # the reference, from the checkout

    os.makedirs(out_dir, exist_ok=True)
    for index, (name, case) in enumerate(CASES.items()):
        case = dict(case)
        psi = case.pop("truncation_psi")
        torch.manual_seed(index)
        G = Generator(**case).eval()
        with torch.no_grad():
            for key, value in G.state_dict().items():
                if key.endswith("resample_filter") or key.endswith("noise_const"):
                    continue
                value.add_(torch.randn_like(value) * (0.3 if value.ndim <= 1 else 0.1))
        z = torch.randn([3, case["z_dim"]])
        c = torch.eye(max(case["c_dim"], 1))[torch.tensor([0, 2, 1]) % max(case["c_dim"], 1)][:, : case["c_dim"]]
        with torch.no_grad():
            ws = G.mapping(z, c, truncation_psi=psi)
            img = G.synthesis(ws, noise_mode="const")
            img_nonoise = G.synthesis(ws, noise_mode="none")
        tensors = dict(G.state_dict(), z=z, expected_ws=ws, expected_img=img, expected_img_nonoise=img_nonoise)
        if case["c_dim"] > 0:
            tensors["c"] = c
        metadata = dict(
            kwargs=json.dumps(case),
            truncation_psi=str(psi),
            source="NVlabs/stylegan2-ada-pytorch@d72cc7d training/networks.py Generator (tests/python/stylegan2_reference.py)",
        )
        write_safetensors(os.path.join(out_dir, name + ".safetensors"), tensors, metadata)
        print(name, {k: list(v.shape) for k, v in tensors.items() if not k.startswith(("mapping", "synthesis"))})


if __name__ == "__main__":
    main()
