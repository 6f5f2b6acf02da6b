"""Reference outputs of EDM's AugmentPipe (NVlabs/edm, training/augment.py)
for difi's augmentation tests.

usage: augment_reference.py EDM_CHECKOUT OUT.npz

Runs the reference implementation from a checkout of NVlabs/edm (it is not
part of difi) on fixed images with fixed seeds and stores, for each case,
the input `caseK_images`, the seed `caseK_seed`, the outputs `caseK_out` and
`caseK_labels`, and the pipe's arguments in `caseK_kwargs` (JSON as uint8).
The random draws come from torch's CPU generator seeded right before the
call, which difi's libtorch reproduces draw for draw.
"""

import json
import sys

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
from training.augment import AugmentPipe  # noqa: E402

DI = dict(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
CASES = [
    # Diff-Instruct's and EDM's CIFAR-10 setting, at its probability and always on.
    (dict(p=0.12, **DI), 3, 16, 8, 1),
    (dict(p=1.0, **DI), 3, 16, 8, 2),
    (dict(p=1.0, **DI), 1, 12, 6, 3),
    # Integer blits alone (square: rotate_int transposes), and everything but
    # integer rotation at once on non-square images.
    (dict(p=1.0, rotate_int=1, translate_int=1), 3, 16, 6, 4),
    (dict(p=0.7, xflip=1, yflip=1, translate_int=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1), 1, 16, 8, 5),
]

arrays = {}
for k, (kwargs, channels, size, n, seed) in enumerate(CASES):
    gen = torch.Generator().manual_seed(100 + k)
    width = size if k != 4 else size // 2 * 3
    images = torch.randn([n, channels, size, width], generator=gen)
    pipe = AugmentPipe(**kwargs)
    torch.manual_seed(seed)
    out, labels = pipe(images)
    arrays[f"case{k}_images"] = images.numpy()
    arrays[f"case{k}_seed"] = np.array(seed, np.int64)
    arrays[f"case{k}_out"] = out.numpy()
    arrays[f"case{k}_labels"] = labels.numpy()
    arrays[f"case{k}_kwargs"] = np.frombuffer(json.dumps(kwargs).encode(), np.uint8)
np.savez(sys.argv[2], **arrays)
print(f"{len(CASES)} cases written to {sys.argv[2]}")
