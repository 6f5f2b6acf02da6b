"""Writes StyleGAN2-ADA discriminator reference files: the reference
`Discriminator`'s weights, inputs and logits, for difi's parity test.

usage: stylegan2_discriminator_reference.py CHECKOUT OUT_DIR

CHECKOUT is a checkout of NVlabs/stylegan2-ada-pytorch (commit d72cc7d);
its `training/networks.py` `Discriminator` runs on the CPU with the
reference ops, in float32 (`num_fp16_res=0`). Each file holds the
discriminator's `state_dict()` (weights perturbed away from the
initialisation, so biases matter), inputs `img` [N,C,R,R] and (conditional
networks) `c` [N,c_dim], the logits `expected_logits` [N,1] and the gradient
of their sum with respect to the images, `expected_img_grad` (what R1
penalises); metadata `kwargs` (the constructor arguments) and `source`.
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stylegan2_reference import write_safetensors  # noqa: E402

CASES = {
    # resnet (the reference's default), 4 classes through D.mapping, conv_clamp, mbstd groups of 2.
    "d-resnet-cond-16": dict(
        c_dim=4, img_resolution=16, img_channels=3, architecture="resnet",
        channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=256,
        mapping_kwargs=dict(num_layers=2), epilogue_kwargs=dict(mbstd_group_size=2),
    ),
    # skip: FromRGB at every block, 1 channel, mbstd over the whole batch with 2 features.
    "d-skip-uncond-16": dict(
        c_dim=0, img_resolution=16, img_channels=1, architecture="skip",
        channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=None,
        epilogue_kwargs=dict(mbstd_group_size=None, mbstd_num_channels=2),
    ),
    # orig (the CIFAR-10 configuration's), 8x8, conditional with a given cmap_dim.
    "d-orig-cond-8": dict(
        c_dim=3, img_resolution=8, img_channels=3, architecture="orig",
        channel_base=128, channel_max=16, num_fp16_res=0, conv_clamp=256, cmap_dim=8,
        epilogue_kwargs=dict(mbstd_group_size=4),
    ),
}


def main():
    checkout, out_dir = sys.argv[1:3]
    sys.path.insert(0, checkout)
    from training.networks import Discriminator  # the reference, from the checkout

    os.makedirs(out_dir, exist_ok=True)
    for index, (name, case) in enumerate(CASES.items()):
        torch.manual_seed(100 + index)
        D = Discriminator(**case).eval()
        with torch.no_grad():
            for key, value in D.state_dict().items():
                if key.endswith("resample_filter"):
                    continue
                value.add_(torch.randn_like(value) * (0.3 if value.ndim <= 1 else 0.1))
        n, r, ch = 4, case["img_resolution"], case["img_channels"]
        img = torch.randn([n, ch, r, r])
        c_dim = case["c_dim"]
        c = torch.eye(max(c_dim, 1))[torch.tensor([0, 2, 1, 0]) % max(c_dim, 1)][:, :c_dim]
        img_req = img.clone().requires_grad_(True)
        logits = D(img_req, c)
        (grad,) = torch.autograd.grad(logits.sum(), [img_req])
        tensors = dict(D.state_dict(), img=img, expected_logits=logits.detach(), expected_img_grad=grad)
        if c_dim > 0:
            tensors["c"] = c
        metadata = dict(
            kwargs=json.dumps(case),
            source="NVlabs/stylegan2-ada-pytorch@d72cc7d training/networks.py Discriminator "
            "(tests/python/stylegan2_discriminator_reference.py)",
        )
        path = os.path.join(out_dir, name + ".safetensors")
        write_safetensors(path, tensors, metadata)
        print(name, os.path.getsize(path), "bytes", sorted(k for k in D.state_dict()))


if __name__ == "__main__":
    main()
