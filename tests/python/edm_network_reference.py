"""Writes an EDM network reference file (the format of `tests/fixtures/edm/`)
for the ADM backbone: `DhariwalUNet` under `EDMPrecond`, 10 classes, with
outputs of EDM's Heun sampler.

usage: edm_network_reference.py CHECKOUT OUT.safetensors

CHECKOUT is a checkout of NVlabs/edm (commit 008a4e5); the network is its
`training/networks.py` `EDMPrecond` and the sampler its `generate.py`
`edm_sampler`, both imported from the checkout and run on the CPU. The
weights are EDM's initialisation with Gaussian noise (std 0.05) added to
every parameter, so the zero-initialised layers (`conv1` and `proj` of each
block, `out_conv`) are not zero and every output depends on every layer.

The configuration (`KWARGS`) is small but keeps what the ADM checks need:
10 classes, 128 channels at 8×8 so that its attention blocks (the encoder
block, the decoder's `in0` and both decoder blocks) have two heads of 64
channels (DhariwalUNet fixes 64 channels per head), and both resolutions'
encoder and decoder blocks with the down- and up-sampling blocks between
them. (`model_channels` 8 with `channel_mult` [4, 16] has the same blocks as
32 with [1, 4] but a 32-channel embedding: 9.5 MB rather than 10.3 MB.)

The file holds the network's `state_dict()` under EDM's names (`model.*`,
float32), the inputs `x` [3,3,16,16], `sigma` [3] and one-hot
`class_labels` [3,10], `expected_f64` (the forward pass in eval mode in
float64 from the float32 weights) and `expected` (the same, stored as
float32, as in the other files of `tests/fixtures/edm/`), `latents` and
`expected_samples` (float64: `edm_sampler` with `SAMPLER`, S_churn 0, run
on the float32 network from `latents` with `class_labels` and without
augmentation labels, as `generate.py` calls it; it clamps σ to the range
the preconditioner supports). Metadata: `precond`, `kwargs` (constructor
JSON in EDM's names), `sampler`, `f32_vs_f64_rel_l2` (relative L2 of EDM's
own float32 forward against `expected_f64`) and `source`.

EDM's `networks.py` spells its compute precision `torch.float32` (the
preconditioner's casts, the attention softmax in `AttentionOp`). For the
float64 pass the script runs the same code with that name bound to float64
(a thin stand-in for `torch` in the module's namespace, removed afterwards),
so every operation runs in float64.

`generate.py` imports `click` and `tqdm` for its command line; where they
are not installed, inert stand-ins take their place (the sampler uses
neither).
"""

import json
import struct
import sys
import types

import torch

KWARGS = dict(
    img_resolution=16, img_channels=3, label_dim=10, model_type="DhariwalUNet",
    model_channels=8, channel_mult=[4, 16], num_blocks=1, attn_resolutions=[8],
)
SAMPLER = dict(num_steps=4, sigma_min=0.002, sigma_max=80, rho=7, S_churn=0)
SIGMAS = [0.02, 0.7, 25.0]
LABELS = [0, 1, 2]
DTYPES = {torch.float32: ("F32", "<f4"), torch.float64: ("F64", "<f8")}


def write_safetensors(path, tensors, metadata):
    """safetensors layout: 8-byte header length, JSON header, then the data
    (wider dtypes first, then by name, as the `safetensors` package orders them)."""
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name in sorted(tensors, key=lambda n: (-tensors[n].element_size(), n)):
        tensor = tensors[name].detach().contiguous()
        dtype, layout = DTYPES[tensor.dtype]
        data = tensor.numpy().astype(layout).tobytes()
        header[name] = dict(dtype=dtype, shape=list(tensor.shape), data_offsets=[offset, offset + len(data)])
        offset += len(data)
        blobs.append(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def stand_in_cli_modules():
    """`click` and `tqdm` for importing `generate.py`, if not installed."""

    def decorator_factory(*args, **kwargs):
        return lambda f=None, *a, **k: f

    for name in ("click", "tqdm"):
        try:
            __import__(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__getattr__ = lambda attr: decorator_factory
            sys.modules[name] = module


class Float64Torch(types.ModuleType):
    """`torch`, except that `float32` is float64."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def relative_l2(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def main():
    checkout, out = sys.argv[1:3]
    sys.path.insert(0, checkout)
    stand_in_cli_modules()
    import training.networks as networks  # the reference, from the checkout
    from generate import edm_sampler

    torch.manual_seed(0)
    net = networks.EDMPrecond(**KWARGS).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    for name, parameter in net.named_parameters():
        assert parameter.abs().max() > 0, f"{name} is zero"

    n = len(SIGMAS)
    x = torch.randn([n, KWARGS["img_channels"], KWARGS["img_resolution"], KWARGS["img_resolution"]])
    sigma = torch.tensor(SIGMAS, dtype=torch.float32)
    class_labels = torch.eye(KWARGS["label_dim"])[LABELS]
    latents = torch.randn([n, KWARGS["img_channels"], KWARGS["img_resolution"], KWARGS["img_resolution"]])

    with torch.no_grad():
        output_f32 = net(x, sigma, class_labels)
        samples = edm_sampler(net, latents, class_labels, **SAMPLER)

        net64 = networks.EDMPrecond(**KWARGS).eval()
        net64.load_state_dict(net.state_dict())
        net64.double()
        networks.torch = Float64Torch("torch")
        try:
            output_f64 = net64(x.double(), sigma.double(), class_labels.double())
        finally:
            networks.torch = torch
    assert output_f64.dtype == torch.float64 and samples.dtype == torch.float64
    error = relative_l2(output_f32, output_f64)

    tensors = dict(net.state_dict())  # `model.*`, as `ema.state_dict()` of an EDM checkpoint
    tensors.update(
        x=x, sigma=sigma, class_labels=class_labels,
        expected=output_f64.float(), expected_f64=output_f64,
        latents=latents, expected_samples=samples,
    )
    metadata = dict(
        source="NVlabs/edm@008a4e5 training/networks.py (tests/python/edm_network_reference.py)",
        kwargs=json.dumps(KWARGS),
        f32_vs_f64_rel_l2=f"{error:.3e}",
        precond="EDMPrecond",
        sampler=json.dumps(dict(SAMPLER, source="generate.py edm_sampler")),
    )
    write_safetensors(out, tensors, metadata)
    parameters = sum(p.numel() for p in net.parameters())
    print(f"{out}: {parameters} parameters, f32_vs_f64_rel_l2 {error:.3e}")
    print({k: (DTYPES[v.dtype][0], list(v.shape)) for k, v in tensors.items() if not k.startswith("model.")})


if __name__ == "__main__":
    main()
