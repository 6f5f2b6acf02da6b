#!/usr/bin/env python3
"""The training iteration that `difi bench` times, in plain PyTorch eager.

Reads the resolved config that `difi bench CONFIG --write-spec FILE` writes
(JSON: the config with every default filled in, its base directory and
difi's thread count), builds the same networks and times one iteration as
difi runs it, for either kind of config:

- distillation (`diff-instruct`): EDM's preconditioning around SongUNet or
  DhariwalUNet, the toy's mixture teacher and MLPs; `fake_updates_per_iter`
  fake-score updates (EDM's denoising loss on detached generator samples),
  one generator update through the IKL surrogate, then the generator's EMA;
- teacher training (`edm-teacher`, as `difi train-teacher` runs it): EDM's
  denoising loss on a batch of images drawn from the config's dataset (the
  EDM-format .zip or folder, read here too), one Adam update, then the EMA,
  with difi's per-iteration seeds, so both sides draw the same batches.

Prints the fields of `difi bench --json`.

    difi bench configs/demo-fmnist.ron --write-spec /tmp/spec.json
    python benches/pytorch_eager.py --spec /tmp/spec.json --json
    python benches/pytorch_eager.py --config configs/demo-fmnist.ron --check

`--check` asks difi for its networks' weights and their outputs on fixed
inputs (`difi bench CONFIG --write-check FILE`), loads those weights here and
reports the relative L2 difference of every network's forward pass; for a
teacher-training config also of three training iterations from difi's
starting weights: each iteration's loss and the weights and EMA after them.

Written for this repository from difi's Rust sources (zoo/src/edm,
zoo/src/toy, train/src, divergences/src); it needs torch, and numpy and
Pillow to read a teacher-training dataset.
"""

import argparse
import copy
import ctypes
import io
import json
import math
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

# ---------------------------------------------------------------- safetensors

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
}


def read_safetensors(path, metadata=None):
    """All tensors of a safetensors file, by name (CPU); its `__metadata__` strings go into `metadata` if given."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    if metadata is not None:
        metadata.update(header.get("__metadata__") or {})
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        buffer = bytearray(data[start:end])
        flat = torch.frombuffer(buffer, dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(info["shape"]).clone()
    return tensors


# ---------------------------------------------------------------- EDM layers
# Weights are float32; every layer casts them to its input's dtype (EDM's use_fp16).


def _init(shape, fan_in, fan_out, mode, scale, generator=None):
    if mode == "xavier_uniform":
        return (torch.rand(shape, generator=generator) * 2 - 1) * (math.sqrt(6 / (fan_in + fan_out)) * scale)
    if mode == "kaiming_uniform":
        return (torch.rand(shape, generator=generator) * 2 - 1) * (math.sqrt(3 / fan_in) * scale)
    if mode == "kaiming_normal":
        return torch.randn(shape, generator=generator) * (math.sqrt(1 / fan_in) * scale)
    raise ValueError(mode)


class Init:
    def __init__(self, mode, weight=1.0, bias=0.0):
        self.mode, self.weight, self.bias = mode, weight, bias


class Linear(nn.Module):
    def __init__(self, cin, cout, bias, init):
        super().__init__()
        self.in_features = cin
        self.weight = nn.Parameter(_init([cout, cin], cin, cout, init.mode, init.weight))
        self.bias = nn.Parameter(_init([cout], cin, cout, init.mode, init.bias)) if bias else None

    def forward(self, x):
        y = x @ self.weight.to(x.dtype).t()
        return y + self.bias.to(x.dtype) if self.bias is not None else y


def _fir(taps):
    f = torch.tensor(taps, dtype=torch.float32)
    return (f.outer(f) / f.sum().square()).reshape(1, 1, len(taps), len(taps))


class Conv2d(nn.Module):
    """Convolution with optional 2x up/downsampling by a FIR filter; kernel 0 resamples only."""

    def __init__(self, cin, cout, kernel, init, bias=True, up=False, down=False, taps=(1, 1), fused=False):
        super().__init__()
        self.up, self.down, self.fused = up, down, fused
        fan_in, fan_out = cin * kernel * kernel, cout * kernel * kernel
        self.weight = nn.Parameter(_init([cout, cin, kernel, kernel], fan_in, fan_out, init.mode, init.weight)) if kernel else None
        self.bias = nn.Parameter(_init([cout], fan_in, fan_out, init.mode, init.bias)) if kernel and bias else None
        if up or down:
            self.register_buffer("resample_filter", _fir(list(taps)))
        else:
            self.resample_filter = None

    def _upsample(self, x, f, pad):
        c = x.shape[1]
        return F.conv_transpose2d(x, (f.to(x.dtype) * 4).tile([c, 1, 1, 1]), stride=2, padding=pad, groups=c)

    def _downsample(self, x, f, pad):
        c = x.shape[1]
        return F.conv2d(x, f.to(x.dtype).tile([c, 1, 1, 1]), stride=2, padding=pad, groups=c)

    def forward(self, x):
        w = self.weight.to(x.dtype) if self.weight is not None else None
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f = self.resample_filter
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        if w is not None and f is not None and self.fused and self.up:
            x = F.conv2d(self._upsample(x, f, w_pad + f_pad), w)
        elif w is not None and f is not None and self.fused and self.down:
            x = self._downsample(F.conv2d(x, w, padding=w_pad + f_pad), f, 0)
        else:
            if f is not None and self.up:
                x = self._upsample(x, f, f_pad)
            if f is not None and self.down:
                x = self._downsample(x, f, f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


class GroupNorm(nn.Module):
    def __init__(self, channels, eps):
        super().__init__()
        self.groups, self.eps = max(1, min(32, channels // 4)), eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return F.group_norm(x, self.groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(nn.Module):
    def __init__(self, cin, cout, emb, up=False, down=False, attention=False, o=None):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.num_heads = (o["num_heads"] or cout // o["channels_per_head"]) if attention else 0
        self.dropout, self.skip_scale, self.adaptive_scale = o["dropout"], o["skip_scale"], o["adaptive_scale"]
        taps = o["taps"]
        self.norm0 = GroupNorm(cin, o["eps"])
        self.conv0 = Conv2d(cin, cout, 3, o["init"], up=up, down=down, taps=taps)
        self.affine = Linear(emb, cout * (2 if o["adaptive_scale"] else 1), True, o["init"])
        self.norm1 = GroupNorm(cout, o["eps"])
        self.conv1 = Conv2d(cout, cout, 3, o["init_zero"])
        self.skip = None
        if cout != cin or up or down:
            kernel = 1 if o["resample_proj"] or cout != cin else 0
            self.skip = Conv2d(cin, cout, kernel, o["init"], up=up, down=down, taps=taps)
        if self.num_heads:
            self.norm2 = GroupNorm(cout, o["eps"])
            self.qkv = Conv2d(cout, cout * 3, 1, o["init_attn"] or o["init"])
            self.proj = Conv2d(cout, cout, 1, o["init_zero"])

    def forward(self, x, emb):
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb).unsqueeze(2).unsqueeze(3).to(x.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = F.silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = F.silu(self.norm1(x + params))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = x + (self.skip(orig) if self.skip is not None else orig)
        x = x * self.skip_scale
        if self.num_heads:
            n, c = x.shape[:2]
            q, k, v = self.qkv(self.norm2(x)).reshape(n * self.num_heads, c // self.num_heads, 3, -1).unbind(2)
            w = torch.einsum("ncq,nck->nqk", q.float(), (k / math.sqrt(k.shape[1])).float()).softmax(dim=2).to(q.dtype)
            a = torch.einsum("nqk,nck->ncq", w, v)
            x = self.proj(a.reshape(x.shape)) + x
            x = x * self.skip_scale
        return x


def positional_embedding(x, channels, endpoint):
    half = channels // 2
    freqs = torch.arange(half, dtype=torch.float32, device=x.device) / (half - (1 if endpoint else 0))
    freqs = (1 / 10000.0) ** freqs
    angles = x.outer(freqs.to(x.dtype))
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class FourierEmbedding(nn.Module):
    def __init__(self, channels, scale=16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2) * scale)

    def forward(self, x):
        angles = x.outer((self.freqs * (2 * math.pi)).to(x.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


def drop_labels(labels, p, training):
    if not training or p == 0:
        return labels
    keep = (torch.rand([labels.shape[0], 1], device=labels.device) >= p).to(labels.dtype)
    return labels * keep


def run_block(owner, block, x, emb):
    """`block(x, emb)`, recomputed in backward when the owner's `checkpoint_blocks` is set
    (difi's `checkpoint_activations`; PyTorch's recommended non-reentrant checkpoint)."""
    if getattr(owner, "checkpoint_blocks", False) and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(block, x, emb, use_reentrant=False)
    return block(x, emb)


def checkpoint_roles(cfg, networks):
    """Sets `checkpoint_blocks` on the U-Nets of the roles `checkpoint_activations` names."""
    for role in cfg.get("checkpoint_activations") or []:
        unets = [m for m in networks[role].modules() if isinstance(m, (SongUNet, DhariwalUNet))]
        if not unets:
            raise SystemExit(f"checkpoint_activations: the {role} has no U-Net to checkpoint")
        for unet in unets:
            unet.checkpoint_blocks = True


class SongUNet(nn.Module):
    """DDPM++ / NCSN++ with difi's module names and order."""

    def __init__(self, c):
        super().__init__()
        mc, cin_img = c["model_channels"], c["img_channels"]
        emb = mc * c["channel_mult_emb"]
        noise = mc * c["channel_mult_noise"]
        init = Init("xavier_uniform")
        o = dict(num_heads=1, channels_per_head=64, dropout=c["dropout"], skip_scale=math.sqrt(0.5), eps=1e-6,
                 taps=c["resample_filter"], resample_proj=True, adaptive_scale=False, init=init,
                 init_zero=Init("xavier_uniform", 1e-5), init_attn=Init("xavier_uniform", math.sqrt(0.2)))
        self.label_dropout = c["label_dropout"]
        self.embedding, self.noise_channels = c["embedding_type"], noise
        self.map_noise = FourierEmbedding(noise) if self.embedding == "fourier" else None
        self.map_label = Linear(c["label_dim"], noise, True, init) if c["label_dim"] else None
        self.map_augment = Linear(c["augment_dim"], noise, False, init) if c["augment_dim"] else None
        self.map_layer0 = Linear(noise, emb, True, init)
        self.map_layer1 = Linear(emb, emb, True, init)
        self.enc = nn.ModuleDict()
        skips = []
        cout = caux = cin_img
        for level, mult in enumerate(c["channel_mult"]):
            res = c["img_resolution"] >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(cout, mc, 3, init)
                cout = mc
                skips.append(cout)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, emb, down=True, o=o)
                skips.append(cout)
                if c["encoder_type"] == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, 0, init, down=True, taps=c["resample_filter"])
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, 1, init)
                if c["encoder_type"] == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(caux, cout, 3, init, down=True,
                                                                  taps=c["resample_filter"], fused=True)
                    caux = cout
            for idx in range(c["num_blocks"]):
                cin, cout = cout, mc * mult
                attention = res in c["attn_resolutions"]
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, emb, attention=attention, o=o)
                skips.append(cout)
        self.dec = nn.ModuleDict()
        levels = len(c["channel_mult"])
        for level, mult in reversed(list(enumerate(c["channel_mult"]))):
            res = c["img_resolution"] >> level
            if level == levels - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, emb, attention=True, o=o)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, emb, o=o)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, emb, up=True, o=o)
            for idx in range(c["num_blocks"] + 1):
                cin, cout = cout + skips.pop(), mc * mult
                attention = idx == c["num_blocks"] and res in c["attn_resolutions"]
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, emb, attention=attention, o=o)
            if c["decoder_type"] == "skip" or level == 0:
                if c["decoder_type"] == "skip" and level < levels - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(cin_img, cin_img, 0, init, up=True, taps=c["resample_filter"])
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout, 1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, cin_img, 3, o["init_zero"])

    def forward(self, x, noise_labels, class_labels, augment_labels):
        if self.map_noise is not None:
            emb = self.map_noise(noise_labels)
        else:
            emb = positional_embedding(noise_labels, self.noise_channels, True)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)
        if self.map_label is not None and class_labels is not None:
            labels = drop_labels(class_labels, self.label_dropout, self.training)
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer0(emb))
        emb = F.silu(self.map_layer1(emb))
        skips, aux = [], x
        for name, module in self.enc.items():
            if name.endswith("aux_down"):
                aux = module(aux)
            elif name.endswith("aux_skip"):
                x = skips[-1] = x + module(aux)
            elif name.endswith("aux_residual"):
                x = skips[-1] = aux = (x + module(aux)) / math.sqrt(2)
            elif isinstance(module, UNetBlock):
                x = run_block(self, module, x, emb)
                skips.append(x)
            else:
                x = module(x)
                skips.append(x)
        aux = tmp = None
        for name, module in self.dec.items():
            if name.endswith("aux_up"):
                aux = module(aux)
            elif name.endswith("aux_norm"):
                tmp = module(x)
            elif name.endswith("aux_conv"):
                tmp = module(F.silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if x.shape[1] != module.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = run_block(self, module, x, emb)
        return aux


class DhariwalUNet(nn.Module):
    """ADM with difi's module names and order."""

    def __init__(self, c):
        super().__init__()
        mc = c["model_channels"]
        emb = mc * c["channel_mult_emb"]
        third = math.sqrt(1 / 3)
        init, init_zero = Init("kaiming_uniform", third, third), Init("kaiming_uniform", 0.0, 0.0)
        o = dict(num_heads=None, channels_per_head=64, dropout=c["dropout"], skip_scale=1.0, eps=1e-5, taps=[1, 1],
                 resample_proj=False, adaptive_scale=True, init=init, init_zero=init_zero, init_attn=None)
        self.label_dropout, self.model_channels = c["label_dropout"], mc
        self.map_augment = Linear(c["augment_dim"], mc, False, init_zero) if c["augment_dim"] else None
        self.map_layer0 = Linear(mc, emb, True, init)
        self.map_layer1 = Linear(emb, emb, True, init)
        label_init = Init("kaiming_normal", math.sqrt(c["label_dim"]), 0.0)
        self.map_label = Linear(c["label_dim"], emb, False, label_init) if c["label_dim"] else None
        self.enc = nn.ModuleDict()
        skips = []
        cout = c["img_channels"]
        for level, mult in enumerate(c["channel_mult"]):
            res = c["img_resolution"] >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(cout, mc * mult, 3, init)
                cout = mc * mult
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, emb, down=True, o=o)
            skips.append(cout)
            for idx in range(c["num_blocks"]):
                cin, cout = cout, mc * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, emb, attention=res in c["attn_resolutions"], o=o)
                skips.append(cout)
        self.dec = nn.ModuleDict()
        levels = len(c["channel_mult"])
        for level, mult in reversed(list(enumerate(c["channel_mult"]))):
            res = c["img_resolution"] >> level
            if level == levels - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, emb, attention=True, o=o)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, emb, o=o)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, emb, up=True, o=o)
            for idx in range(c["num_blocks"] + 1):
                cin, cout = cout + skips.pop(), mc * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, emb, attention=res in c["attn_resolutions"], o=o)
        self.out_norm = GroupNorm(cout, 1e-5)
        self.out_conv = Conv2d(cout, c["img_channels"], 3, init_zero)

    def forward(self, x, noise_labels, class_labels, augment_labels):
        emb = positional_embedding(noise_labels, self.model_channels, False)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None and class_labels is not None:
            emb = emb + self.map_label(drop_labels(class_labels, self.label_dropout, self.training))
        emb = F.silu(emb)
        skips = []
        for module in self.enc.values():
            x = run_block(self, module, x, emb) if isinstance(module, UNetBlock) else module(x)
            skips.append(x)
        for module in self.dec.values():
            if x.shape[1] != module.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = run_block(self, module, x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


def precond_coefficients(c, sigma):
    """c_skip, c_out, c_in (each [N, 1, 1, 1]) and c_noise [N] of EDM's preconditionings, in float32."""
    sigma = sigma.float().reshape(-1)
    s2 = sigma.square()
    if c["precond"] == "EDMPrecond":
        sd = c["sigma_data"]
        c_skip = (s2 + sd * sd).reciprocal() * (sd * sd)
        c_out = sigma * sd / (s2 + sd * sd).sqrt()
        c_in = (s2 + sd * sd).sqrt().reciprocal()
        c_noise = sigma.log() / 4
    elif c["precond"] == "VPPrecond":
        bd, bm = c["beta_d"], c["beta_min"]
        c_skip, c_out, c_in = torch.ones_like(sigma), -sigma, (s2 + 1).sqrt().reciprocal()
        c_noise = ((((s2 + 1).log() * (2 * bd) + bm * bm).sqrt() - bm) / bd) * (c["M"] - 1)
    else:
        c_skip, c_out, c_in = torch.ones_like(sigma), sigma, torch.ones_like(sigma)
        c_noise = (sigma * 0.5).log()
    b = lambda t: t.reshape(-1, 1, 1, 1)  # noqa: E731
    return b(c_skip), b(c_out), b(c_in), c_noise


class EdmNetwork(nn.Module):
    """D(x; σ) = c_skip x + c_out F(c_in x; c_noise) around a SongUNet or DhariwalUNet (`model.*`)."""

    def __init__(self, c, dtype):
        super().__init__()
        self.c, self.dtype = c, dtype
        self.model = SongUNet(c) if c["model_type"] == "SongUNet" else DhariwalUNet(c)
        self.sigma_data = c["sigma_data"]
        self.sample_shape = [c["img_channels"], c["img_resolution"], c["img_resolution"]]
        self.label_dim = c["label_dim"]

    def forward(self, x, sigma, labels=None):
        kind = x.dtype
        x = x.float()
        if self.label_dim:
            labels = labels.float().reshape(-1, self.label_dim) if labels is not None else \
                torch.zeros([1, self.label_dim], device=x.device)
        else:
            labels = None
        c_skip, c_out, c_in, c_noise = precond_coefficients(self.c, sigma)
        f = self.model((c_in * x).to(self.dtype), c_noise.flatten(), labels, None)
        return (c_skip * x + c_out * f.float()).to(kind)


# ---------------------------------------------------------------- the toy


class Gmm(nn.Module):
    """The exact denoiser (posterior mean) of a Gaussian mixture; computed in float64."""

    def __init__(self, p):
        super().__init__()
        w = torch.tensor(p["weights"] or [1.0] * len(p["means"]), dtype=torch.float64)
        w = w / w.sum()
        self.register_buffer("means", torch.tensor(p["means"], dtype=torch.float64))
        self.register_buffer("variances", torch.tensor(p["stds"], dtype=torch.float64).square())
        self.register_buffer("log_weights", w.log())
        dim = self.means.shape[1]
        self.sample_shape, self.label_dim = [dim], 0
        second = sum(float(wk) * (vk + float(m.square().sum()) / dim)
                     for wk, vk, m in zip(w, self.variances.tolist(), self.means))
        self.sigma_data = math.sqrt(second)

    def forward(self, x, sigma, labels=None):
        kind, x = x.dtype, x.double()
        sigma = sigma.double().reshape(-1)
        total = self.variances[None] + sigma.square()[:, None]
        sq = (x[:, None] - self.means[None]).square().sum(2)
        logits = -0.5 * (sq / total) - 0.5 * x.shape[1] * (total * (2 * math.pi)).log() + self.log_weights[None]
        r = logits.log_softmax(1).exp()
        shrink = self.variances[None] / total
        return ((r * (1 - shrink)) @ self.means + (r * shrink).sum(1, keepdim=True) * x).to(kind)


class Mlp(nn.Module):
    """Linear layers `net.0`, `net.1`, … with SiLU between them (tch's default initialisation)."""

    def __init__(self, cin, hidden, cout, zero_output):
        super().__init__()
        widths = [cin] + list(hidden) + [cout]
        self.net = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        if zero_output:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, h):
        for i, layer in enumerate(self.net):
            h = layer(h)
            if i < len(self.net) - 1:
                h = F.silu(h)
        return h


class MlpDenoiser(nn.Module):
    def __init__(self, p, dim, label_dim, sigma_data):
        super().__init__()
        self.mlp = Mlp(dim + p["noise_features"] + label_dim, p["hidden"], dim, True)
        half = p["noise_features"] // 2
        self.register_buffer("frequencies", torch.linspace(0.0, math.log(64), half).exp(), persistent=False)
        self.c = {"precond": "EDMPrecond", "sigma_data": sigma_data}
        self.sigma_data, self.sample_shape, self.label_dim = sigma_data, [dim], label_dim

    def forward(self, x, sigma, labels=None):
        kind, x = x.dtype, x.float()
        c_skip, c_out, c_in, c_noise = (t.reshape(-1, 1) for t in precond_coefficients(self.c, sigma))
        angles = c_noise * self.frequencies[None]
        parts = [x * c_in, angles.cos(), angles.sin()] + ([labels.float()] if self.label_dim else [])
        return (c_skip * x + c_out * self.mlp(torch.cat(parts, 1))).to(kind)

    def state_dict_names(self):
        return {f"net.{i}.{k}": t for i, layer in enumerate(self.mlp.net) for k, t in layer.named_parameters()}


# ---------------------------------------------------------------- generators


class DenoiserGenerator(nn.Module):
    """G(z) = D(σ_init z; σ_init) around a copy of the teacher."""

    def __init__(self, denoiser, sigma_init):
        super().__init__()
        self.denoiser, self.sigma_init = denoiser, sigma_init
        self.latent_shape, self.label_dim = denoiser.sample_shape, denoiser.label_dim

    def forward(self, z, labels=None):
        sigma = torch.full([z.shape[0]], self.sigma_init, device=z.device)
        return self.denoiser(z * self.sigma_init, sigma, labels)


class MlpGenerator(nn.Module):
    def __init__(self, p, dim, label_dim):
        super().__init__()
        self.mlp = Mlp(p["latent_dim"] + label_dim, p["hidden"], dim, False)
        self.latent_shape, self.label_dim = [p["latent_dim"]], label_dim

    def forward(self, z, labels=None):
        return self.mlp(torch.cat([z, labels.float()], 1) if self.label_dim else z)


def named_weights(module):
    """Parameters and buffers under difi's VarStore names (`model.…` for EDM, `net.i.…` for MLPs)."""
    out = dict(module.named_parameters())
    out.update((k, v) for k, v in module.named_buffers() if not k.endswith("frequencies"))
    renamed = {}
    for name, t in out.items():
        for prefix in ("denoiser.", "mlp."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        renamed[name] = t
    return renamed


def load_weights(module, tensors, prefix, what):
    own = named_weights(module)
    picked = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(own) - set(picked))
    extra = sorted(set(picked) - set(own))
    if missing or extra:
        raise SystemExit(f"{what}: weights do not match the network (missing {missing[:5]}, unexpected {extra[:5]})")
    with torch.no_grad():
        for name, t in own.items():
            if tuple(t.shape) != tuple(picked[name].shape):
                raise SystemExit(f"{what}: `{name}` has shape {list(picked[name].shape)}, the network {list(t.shape)}")
            t.copy_(picked[name])


# ---------------------------------------------------------------- building from the spec


def autocast_dtype(cfg):
    """The dtype of difi's `autocast` run setting, or None when it is off."""
    setting = cfg.get("autocast", "none")
    if setting not in ("none", "bf16", "fp16"):
        raise SystemExit(f"autocast `{setting}` is not supported by this script (none, bf16, fp16)")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[setting]


def resolve_device(spec_device):
    if spec_device in (None, "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec_device == "cuda":
        return torch.device("cuda:0")
    return torch.device(spec_device)


def edm_dtype(params, use_fp16, device):
    precision = params.get("precision", "auto")
    if precision == "auto":
        return torch.float16 if use_fp16 and device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def build_edm(params, base_dir, device, what):
    """The `edm` plugin's network from its resolved params, its checkpoint (safetensors) loaded if it names one."""
    arch = params["network"]
    net = EdmNetwork(arch, edm_dtype(params, arch.get("use_fp16", False), device))
    if params.get("checkpoint"):
        path = os.path.join(base_dir, params["checkpoint"])
        load_weights(net, {k: v for k, v in read_safetensors(path).items() if k.startswith("model.")}, "",
                     f"{what} checkpoint {path}")
    return net.to(device)


def build_teacher(spec, device):
    component = spec["config"]["teacher"]
    plugin, params = component.get("plugin"), component.get("params") or {}
    if plugin == "edm":
        return build_edm(params, spec["base_dir"], device, "teacher")
    if plugin == "gmm":
        return Gmm(params).to(device)
    raise SystemExit(f"teacher plugin `{plugin}` is not supported by this script (edm, gmm)")


def copy_of(teacher):
    net = copy.deepcopy(teacher)
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def build_generator(spec, teacher, device):
    component = spec["config"].get("generator") or {}
    params = component.get("params") or {}
    if component.get("init_from") == "teacher":
        return DenoiserGenerator(copy_of(teacher), params.get("sigma_init", 1.0)).to(device)
    if component.get("plugin") == "mlp-generator":
        return MlpGenerator(params, teacher.sample_shape[0], teacher.label_dim).to(device)
    raise SystemExit(f"generator {component} is not supported by this script (init_from teacher, mlp-generator)")


def build_fake_score(spec, teacher, device):
    component = spec["config"].get("fake_score") or {}
    params = component.get("params") or {}
    if component.get("init_from") == "teacher":
        return copy_of(teacher).to(device)
    if component.get("plugin") == "mlp-denoiser":
        sigma_data = params.get("sigma_data") or teacher.sigma_data
        return MlpDenoiser(params, teacher.sample_shape[0], teacher.label_dim, sigma_data).to(device)
    raise SystemExit(f"fake score {component} is not supported by this script (init_from teacher, mlp-denoiser)")


# ---------------------------------------------------------------- the iteration


class DiffInstruct:
    """One Diff-Instruct iteration with IKL, as train/src/algorithms/diff_instruct.rs runs it."""

    def __init__(self, spec, device):
        cfg = spec["config"]
        self.cfg, self.device = cfg, device
        unsupported = [k for k in ("fake_augment",) if cfg.get(k)]
        if (cfg.get("divergence") or {}).get("plugin", "ikl") != "ikl":
            unsupported.append("divergence (only ikl)")
        if (cfg.get("fake_loss") or {}).get("kind", "edm") not in ("edm", "divergence"):
            unsupported.append("fake_loss.kind (only edm, divergence)")
        if unsupported:
            raise SystemExit(f"not supported by this script: {', '.join(unsupported)}")
        self.teacher = build_teacher(spec, device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.generator = build_generator(spec, self.teacher, device)
        self.generator_ema = copy_of(self.generator)
        for p in self.generator_ema.parameters():
            p.requires_grad_(False)
        self.fake = build_fake_score(spec, self.teacher, device)
        checkpoint_roles(cfg, {"teacher": self.teacher, "generator": self.generator, "fake_score": self.fake})
        self.batch = cfg["schedule"]["batch_size"]
        self.label_dim = self.teacher.label_dim
        if self.label_dim and cfg.get("labels", "dataset") != "uniform":
            raise SystemExit("labels from a dataset are not supported by this script; use labels: \"uniform\"")
        self.optims = {}
        self.opt_cfg = cfg["optim"]
        for name, net in (("generator", self.generator), ("fake_score", self.fake)):
            o = self.opt_cfg[name]
            params = [p for p in net.parameters() if p.requires_grad]
            self.optims[name] = (torch.optim.Adam(params, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                                  fused=True if o.get("fused") else None), params)
        self.steps = {"generator": 0, "fake_score": 0}
        div = (cfg.get("divergence") or {}).get("params") or {}
        self.ikl = dict(p_mean=div.get("p_mean", -1.2), p_std=div.get("p_std", 1.2),
                        weighting=div.get("weighting", "sigma2"), scale=div.get("sigma_scale", "teacher"))
        fl = cfg.get("fake_loss") or {}
        if fl.get("kind", "edm") == "divergence":
            # IKL's own levels, scaled as it scales them (difi's Divergence::fake_score_sigma).
            scale = self.fake.sigma_data / 0.5 if self.ikl["scale"] == "teacher" else 1.0
            self.fake_loss = (self.ikl["p_mean"], self.ikl["p_std"], scale)
        else:
            self.fake_loss = (fl.get("p_mean", -1.2), fl.get("p_std", 1.2), None)
        self.ema_params = list(self.generator_ema.parameters())
        self.live_params = list(self.generator.parameters())
        self.nimg = 0
        # difi's `autocast`: the whole step in an autocast region, each backward
        # pass and optimiser step outside it (the cached casts dropped after
        # each step), the EMA after it.
        self.autocast = autocast_dtype(cfg)

    def _batch(self):
        n = self.batch
        z = torch.randn([n, *self.generator.latent_shape], device=self.device)
        labels = None
        if self.label_dim:
            labels = F.one_hot(torch.randint(self.label_dim, [n], device=self.device), self.label_dim).float()
        return self.generator(z, labels), labels

    def _update(self, name, loss):
        opt, params = self.optims[name]
        o = self.opt_cfg[name]
        # Skipping a non-finite loss needs its value on the host; clamping (the
        # reference's way) does not, and reading it would wait for the device.
        value = loss.detach()
        if o.get("nonfinite", "skip") == "skip":
            value = loss.item()
            if not math.isfinite(value):
                return value
        with torch.autocast(self.device.type, enabled=False):
            opt.zero_grad(set_to_none=False)
            (loss * o.get("loss_scale", 1.0)).backward()
            big = 1e5 if o.get("nonfinite") == "clamp" else 0.0
            for p in params:
                if p.grad is not None:
                    p.grad.nan_to_num_(nan=0.0, posinf=big, neginf=-big)
            warmup = o.get("warmup_kimg", 0.0)
            lr = o["lr"] if warmup <= 0 else o["lr"] * min(self.steps[name] * self.batch / 1000 / warmup, 1.0)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            # As difi: the region's cached casts are of the old weights.
            torch.clear_autocast_cache()
        self.steps[name] += 1
        return value

    def fake_score_update(self):
        if self.cfg.get("fake_samples_in_eval_mode", True):
            self.generator.eval()
        with torch.no_grad():
            y, labels = self._batch()
        self.fake.train()
        p_mean, p_std, scale = self.fake_loss
        n = y.shape[0]
        sigma = (torch.randn([n], device=self.device) * p_std + p_mean).exp()
        if scale is not None:
            sigma = sigma * scale
        sd = self.fake.sigma_data
        weight = (sigma.square() + sd * sd) / (sigma * sd).square()
        sigma_b = sigma.reshape(-1, *([1] * (y.dim() - 1)))
        noisy = y + torch.randn_like(y) * sigma_b
        per_sample = (self.fake(noisy, sigma, labels) - y).square().flatten(1).sum(1)
        return self._update("fake_score", (per_sample * weight).mean())

    def generator_update(self):
        self.generator.train()
        train = self.cfg.get("generator_loss_mode", "train") == "train"
        self.teacher.train(train)
        self.fake.train(train)
        x_g, labels = self._batch()
        fake_params = [p for p in self.fake.parameters()]
        for p in fake_params:
            p.requires_grad_(False)
        n = x_g.shape[0]
        with torch.no_grad():
            x = x_g.detach()
            sigma = (torch.randn([n], device=self.device) * self.ikl["p_std"] + self.ikl["p_mean"]).exp()
            if self.ikl["scale"] == "teacher":
                sigma = sigma * (self.teacher.sigma_data / 0.5)
            sigma_b = sigma.reshape(-1, *([1] * (x.dim() - 1)))
            x_t = x + torch.randn_like(x) * sigma_b
            # The same dropout masks for both networks: the same generator state before each.
            stream = int(torch.randint(2**63 - 1, [1]).item())
            torch.manual_seed(stream)
            d_real = self.teacher(x_t, sigma, labels)
            torch.manual_seed(stream)
            d_fake = self.fake(x_t, sigma, labels)
            direction = d_fake - d_real
            s2 = sigma_b.square()
            if self.ikl["weighting"] in ("constant", "unit"):
                direction = direction / s2
            elif self.ikl["weighting"] == "edm":
                sd2 = self.teacher.sigma_data ** 2
                direction = direction * (s2 + sd2) / (s2.square() * sd2)
        loss = (direction * x_g).sum() / n
        for p in fake_params:
            p.requires_grad_(True)
        self.teacher.eval()
        return self._update("generator", loss)

    def iteration(self):
        k = self.cfg.get("fake_updates_per_iter", 1)
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            for _ in range(k):
                self.fake_score_update()
            self.generator_update()
        beta = ema_beta(self.cfg["schedule"], self.nimg, self.batch)
        with torch.no_grad():
            torch._foreach_lerp_(self.ema_params, self.live_params, 1.0 - beta)
        self.nimg += self.batch


# ---------------------------------------------------------------- teacher training


class ImageDataset:
    """An EDM-format dataset as difi's `zip` and `folder` plugins read it: the PNGs of a
    ZIP archive or folder sorted by name, labels from `dataset.json`, images decoded on
    demand as uint8 [C, H, W], `xflip` adding a mirrored copy of each (indices n..2n)."""

    def __init__(self, component, base_dir):
        plugin, p = component.get("plugin"), component.get("params") or {}
        if plugin not in ("zip", "folder"):
            raise SystemExit(f"dataset plugin `{plugin}` is not supported by this script (zip, folder)")
        self.path = os.path.join(base_dir, p["path"])
        if os.path.isdir(self.path):
            self.archive = None
            files = [os.path.relpath(os.path.join(d, f), self.path).replace(os.sep, "/")
                     for d, _, names in os.walk(self.path) for f in names]
        elif os.path.isfile(self.path):
            self.archive = zipfile.ZipFile(self.path)
            files = [i.filename for i in self.archive.infolist() if not i.is_dir()]
        else:
            raise SystemExit(f"the dataset {self.path} does not exist")
        self.names = sorted(n for n in files if os.path.splitext(n)[1].lower() == ".png")
        if not self.names:
            raise SystemExit(f"the dataset {self.path} holds no PNG images")
        if p.get("max_size") is not None and p["max_size"] < len(self.names):
            raise SystemExit("dataset.params.max_size (difi's seeded subset) is not supported by this script")
        self.labels = None
        if "dataset.json" in files and p.get("use_labels") in (None, True):
            labels = json.loads(self._read("dataset.json")).get("labels")
            if labels is not None:
                by_name = {name: int(label) for name, label in labels}
                self.labels = [by_name[name] for name in self.names]
        self.xflip = bool(p.get("xflip"))

    def _read(self, name):
        if self.archive is not None:
            return self.archive.read(name)
        with open(os.path.join(self.path, name), "rb") as f:
            return f.read()

    def __len__(self):
        return len(self.names) * (2 if self.xflip else 1)

    def get(self, index):
        """Image `index` as uint8 [C, H, W] and its class (0 when unlabelled)."""
        import numpy as np
        from PIL import Image

        n = len(self.names)
        raw = index % n
        pixels = np.array(Image.open(io.BytesIO(self._read(self.names[raw]))))
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        if index >= n:
            image = image.flip(2)
        return image, self.labels[raw] if self.labels is not None else 0


class TeacherTraining:
    """One iteration of EDM teacher training as difi's runner runs train/src/algorithms/edm_teacher.rs:
    the batch in `batch_per_pass` rounds (each: dataset images drawn uniformly with replacement, σ,
    then ε, the denoising loss, a host read of its value, backward), one Adam update, then the EMA."""

    def __init__(self, spec, device):
        cfg = spec["config"]
        self.cfg, self.device = cfg, device
        unsupported = []
        if cfg.get("augment"):
            unsupported.append("augment (EDM's augmentation pipeline)")
        if (cfg["network"].get("plugin")) != "edm":
            unsupported.append(f"network plugin `{cfg['network'].get('plugin')}` (only edm)")
        if unsupported:
            raise SystemExit(f"not supported by this script: {', '.join(unsupported)}")
        self.net = build_edm(cfg["network"].get("params") or {}, spec["base_dir"], device, "network")
        self.autocast = autocast_dtype(cfg)
        self.ema = copy_of(self.net)
        checkpoint_roles(cfg, {"network": self.net})
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.dataset = ImageDataset(cfg["dataset"], spec["base_dir"])
        self.batch = cfg["schedule"]["batch_size"]
        self.per_pass = min(cfg.get("batch_per_pass") or self.batch, self.batch)
        self.rounds = self.batch // self.per_pass
        self.loss = cfg.get("loss") or {}
        self.o = cfg["optim"]["network"]
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=self.o["lr"], betas=tuple(self.o["betas"]), eps=self.o["eps"],
                                    fused=True if self.o.get("fused") else None)
        live = named_weights(self.net)
        averages = named_weights(self.ema)
        self.ema_pairs = ([averages[k] for k in sorted(live)], [live[k] for k in sorted(live)])
        self.steps, self.nimg = 0, 0

    def start_from(self, weights):
        """Loads `weights` (difi's names) into the network and copies them into the EMA, as the runner starts."""
        load_weights(self.net, weights, "", "network")
        with torch.no_grad():
            for average, live in zip(*self.ema_pairs):
                average.copy_(live)

    def _images(self, n):
        """`n` dataset images as float [n, C, H, W] in [-1, 1] and one-hot labels (conditional networks)."""
        indices = torch.randint(len(self.dataset), [n], dtype=torch.int64).tolist()
        images, classes = zip(*(self.dataset.get(i) for i in indices))
        images = torch.stack(images, 0).to(self.device).float() / 127.5 - 1
        labels = None
        if self.net.label_dim:
            labels = F.one_hot(torch.tensor(classes, device=self.device), self.net.label_dim).float()
        return images, labels

    def _noise_levels(self, n):
        """σ [n] drawn as the loss kind says, and its weight λ(σ) [n] (train/src/denoising_loss.rs)."""
        c, kind, sd = self.loss, self.loss.get("kind", "edm"), self.net.sigma_data
        if kind == "edm":
            sigma = (torch.randn([n], device=self.device) * c.get("p_std", 1.2) + c.get("p_mean", -1.2)).exp()
            return sigma, (sigma.square() + sd * sd) / (sigma * sd).square()
        u = torch.rand([n], device=self.device)
        if kind == "vp":
            t = u * (c["epsilon_t"] - 1.0) + 1.0
            sigma = ((t.square() * (0.5 * c["beta_d"]) + t * c["beta_min"]).exp() - 1.0).sqrt()
        elif kind == "ve":
            sigma = torch.pow(c["sigma_max"] / c["sigma_min"], u) * c["sigma_min"]
        else:
            raise SystemExit(f"loss.kind `{kind}` is not supported by this script (edm, vp, ve)")
        return sigma, sigma.square().reciprocal()

    def _round_loss(self):
        images, labels = self._images(self.per_pass)
        n = images.shape[0]
        sigma, weight = self._noise_levels(n)
        noisy = images + torch.randn_like(images) * sigma.reshape(-1, *([1] * (images.dim() - 1)))
        per_sample = (self.net(noisy, sigma, labels) - images).square().flatten(1).sum(1)
        return (per_sample * weight).mean()

    def iteration(self):
        """One iteration; returns the loss value (summed over the rounds)."""
        self.net.train()
        clamp = self.o.get("nonfinite", "skip") == "clamp"
        self.opt.zero_grad(set_to_none=False)
        total = 0.0
        for _ in range(self.rounds):
            # difi's `autocast`: each round's forward in the region, its backward outside.
            with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                loss = self._round_loss() / self.rounds
            value = loss.item()
            total += value
            if math.isfinite(value) or clamp:
                (loss * self.o.get("loss_scale", 1.0)).backward()
        if math.isfinite(total) or clamp:
            big = 1e5 if clamp else 0.0
            for p in self.params:
                if p.grad is not None:
                    p.grad.nan_to_num_(nan=0.0, posinf=big, neginf=-big)
            warmup = self.o.get("warmup_kimg", 0.0)
            lr = self.o["lr"] if warmup <= 0 else self.o["lr"] * min(self.steps * self.batch / 1000 / warmup, 1.0)
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.opt.step()
            self.steps += 1
        beta = ema_beta(self.cfg["schedule"], self.nimg, self.batch)
        with torch.no_grad():
            torch._foreach_lerp_(self.ema_pairs[0], self.ema_pairs[1], 1.0 - beta)
        self.nimg += self.batch
        return total


def ema_beta(schedule, nimg, batch):
    """β of the EMA after `nimg` samples (EDM's half-life with ramp-up), as train/src/ema.rs."""
    halflife = schedule.get("ema_halflife_kimg", 500) * 1000
    ratio = schedule.get("ema_rampup_ratio")
    if ratio is not None:
        halflife = min(halflife, nimg * ratio)
    return 0.5 ** (batch / halflife) if halflife > 0 else 0.0


_MASK64 = 2**64 - 1
ITERATION_STREAM = 2  # difi_core::rng::RngStream::Iteration


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(seed, stream, index):
    """difi's per-iteration seed (core/src/rng.rs): splitmix64 over (seed, stream, index), 63 bits."""
    x = seed
    for word in (stream, index):
        x = _splitmix64(x ^ _splitmix64(word))
    return x >> 1


# ---------------------------------------------------------------- measuring


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def nvml_used_mib(index):
    """Device-wide memory in use (NVML), as difi reports it; None without NVML."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != 0:
            return None
        handle = ctypes.c_void_p()
        if nvml.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(handle)) != 0:
            return None
        info = (ctypes.c_ulonglong * 3)()
        if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(info)) != 0:
            return None
        return info[2] / 2**20
    except OSError:
        return None


def seed_of(seed, index):
    """A per-iteration seed (not difi's derivation: only the distribution of draws matters for timing)."""
    return (seed * 1_000_003 + index * 7919 + 12345) % (2**63 - 1)


def configure_backends(cfg, device):
    """EDM's CUDA settings, as difi applies them: TF32 as `allow_tf32` says, cuDNN autotuning on."""
    if device.type == "cuda":
        allow = bool(cfg.get("allow_tf32", False))
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
        torch.backends.cudnn.benchmark = True


def bench(spec, iterations, warmup):
    cfg = spec["config"]
    device = resolve_device(cfg.get("device"))
    configure_backends(cfg, device)
    seed = cfg.get("seed", 0)
    torch.manual_seed(seed)
    teacher_training = cfg.get("algorithm") == "edm-teacher"
    if teacher_training:
        # The iterations difi times, draw for draw (difi's per-iteration seeds).
        run, seed_of_iteration = TeacherTraining(spec, device), lambda i: derive_seed(seed, ITERATION_STREAM, i)
    else:
        run, seed_of_iteration = DiffInstruct(spec, device), lambda i: seed_of(seed, i)
    for i in range(warmup):
        torch.manual_seed(seed_of_iteration(i))
        run.iteration()
    synchronize(device)
    times = []
    started = time.perf_counter()
    for i in range(iterations):
        torch.manual_seed(seed_of_iteration(warmup + i))
        t0 = time.perf_counter()
        run.iteration()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    mean = total / max(iterations, 1)
    median = statistics.median(times) if times else float("nan")
    batch = run.batch
    report = {
        "implementation": "pytorch-eager",
        "algorithm": cfg.get("algorithm", "diff-instruct"),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": batch,
        "iterations": iterations,
        "sec_per_iteration": mean,
        "sec_per_iteration_median": median,
        "images_per_s": batch / median,
        "sec_per_kimg": median * 1000 / batch,
        "gpu_mem_mib": nvml_used_mib(device.index or 0) if device.type == "cuda" else None,
        "gpu_max_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "rss_mib": rss_mib(),
        "peak_rss_mib": peak_rss_mib(),
    }
    if not teacher_training:
        report["fake_updates_per_iter"] = cfg.get("fake_updates_per_iter", 1)
    return report


# ---------------------------------------------------------------- checking against difi


def relative_l2(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm())


def check(spec, path, bound):
    """Loads difi's weights and inputs from `path` and compares each network's forward pass."""
    if spec["config"].get("algorithm") == "edm-teacher":
        return teacher_check(spec, path, bound)
    tensors = read_safetensors(path)
    device = torch.device(spec.get("check_device") or "cpu")
    teacher = build_teacher(spec, device).eval()
    # The teacher's weights first: copies of it are made from them.
    if any(k.startswith("teacher.") for k in tensors):
        load_weights(teacher, tensors, "teacher.", "teacher")
    generator = build_generator(spec, teacher, device).eval()
    fake = build_fake_score(spec, teacher, device).eval()
    for prefix, net in (("generator.", generator), ("fake_score.", fake)):
        if any(k.startswith(prefix) for k in tensors):
            load_weights(net, tensors, prefix, prefix[:-1])
    get = lambda k: tensors[k].to(device) if k in tensors else None  # noqa: E731
    x, sigma, labels, z = get("check.x"), get("check.sigma"), get("check.labels"), get("check.z")
    results = {}
    with torch.no_grad():
        for name, out in (("teacher", lambda: teacher(x, sigma, labels)),
                          ("fake_score", lambda: fake(x, sigma, labels)),
                          ("generator", lambda: generator(z, labels))):
            results[name] = relative_l2(out(), tensors[f"check.{name}"])
    ok = all(v <= bound for v in results.values())
    return {"relative_l2": results, "bound": bound, "ok": ok}


def teacher_check(spec, path, bound):
    """A teacher-training check file (`train/src/bench_teacher_check.rs`): the network's forward pass on
    difi's inputs from difi's starting weights, then the same training iterations (difi's seeds, so the
    same batches and draws) compared with difi's: each iteration's loss and the weights and EMA after."""
    metadata = {}
    tensors = read_safetensors(path, metadata)
    device = torch.device(metadata.get("device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"difi wrote the check on {device}, but this torch has no CUDA")
    cfg = spec["config"]
    configure_backends(cfg, device)
    run = TeacherTraining(spec, device)
    run.start_from({k[len("network."):]: v for k, v in tensors.items() if k.startswith("network.")})
    get = lambda k: tensors[k].to(device) if k in tensors else None  # noqa: E731
    run.net.eval()
    with torch.no_grad():
        output = run.net(get("check.x"), get("check.sigma"), get("check.labels"))
    results = {"network": relative_l2(output, tensors["check.network"])}
    difi_losses = json.loads(metadata["losses"])
    losses = []
    for i in range(int(metadata["steps"])):
        torch.manual_seed(derive_seed(cfg.get("seed", 0), ITERATION_STREAM, i))
        losses.append(run.iteration())
    results["step_loss"] = relative_l2(torch.tensor(losses), torch.tensor(difi_losses))
    for part, net in (("network", run.net), ("network_ema", run.ema)):
        ours = named_weights(net)
        prefix = f"step.{part}."
        theirs = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if sorted(ours) != sorted(theirs):
            raise SystemExit(f"{part}: difi's trained weights do not match the network's names")
        names = sorted(ours)
        results[f"step_{part}"] = relative_l2(torch.cat([ours[k].detach().flatten().cpu() for k in names]),
                                              torch.cat([theirs[k].flatten() for k in names]))
    ok = all(v <= bound for v in results.values())
    return {"relative_l2": results, "bound": bound, "ok": ok, "losses": losses, "difi_losses": difi_losses}


# ---------------------------------------------------------------- command line


def spec_from_difi(args):
    handle, path = tempfile.mkstemp(suffix=".json", prefix="difi-spec-")
    os.close(handle)
    command = [args.difi, "bench", args.config, "--write-spec", path] + [a for s in args.set for a in ("--set", s)]
    subprocess.run(command, check=True)
    with open(path) as f:
        spec = json.load(f)
    os.unlink(path)
    return spec


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", help="the JSON `difi bench CONFIG --write-spec FILE` writes")
    parser.add_argument("--config", help="a difi config (asks `--difi` for its spec)")
    parser.add_argument("--set", action="append", default=[], help="difi --set override (with --config)")
    parser.add_argument("--difi", default="target/release/difi", help="the difi binary (with --config or --check)")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: the spec's, difi's own)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--check", action="store_true", help="compare each network's forward pass with difi's")
    parser.add_argument("--check-file", help="with --check: a file from `difi bench --write-check` (else made now)")
    parser.add_argument("--bound", type=float, default=1e-5, help="largest relative L2 --check accepts")
    args = parser.parse_args()
    if not args.spec and not args.config:
        parser.error("give --spec FILE or --config CONFIG")
    if args.spec:
        with open(args.spec) as f:
            spec = json.load(f)
    else:
        spec = spec_from_difi(args)
    threads = args.threads or spec.get("threads")
    if threads:
        torch.set_num_threads(threads)
    if args.check:
        if not args.check_file and not args.config:
            parser.error("--check needs --config (to run difi) or --check-file")
        path = args.check_file
        if not path:
            handle, path = tempfile.mkstemp(suffix=".safetensors", prefix="difi-check-")
            os.close(handle)
            command = [args.difi, "bench", args.config, "--write-check", path]
            subprocess.run(command + [a for s in args.set for a in ("--set", s)], check=True)
        result = check(spec, path, args.bound)
        if not args.check_file:
            os.unlink(path)
        print(json.dumps(result) if args.json else "\n".join(
            f"{k}: relative L2 {v:.3e}" for k, v in result["relative_l2"].items()) + f"\n{'ok' if result['ok'] else 'FAILED'} (bound {args.bound:g})")
        sys.exit(0 if result["ok"] else 1)
    report = bench(spec, args.iterations, args.warmup)
    if args.json:
        print(json.dumps(report))
        return
    print(f"pytorch eager on {report['device']}, batch {report['batch_size']}, {report['threads']} threads")
    print(f"  {report['sec_per_iteration_median']:.4f} s per iteration (median; mean {report['sec_per_iteration']:.4f})")
    print(f"  {report['images_per_s']:.1f} images/s, peak resident memory {report['peak_rss_mib']:.0f} MiB")
    if report["gpu_mem_mib"] is not None:
        print(f"  GPU memory in use {report['gpu_mem_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
