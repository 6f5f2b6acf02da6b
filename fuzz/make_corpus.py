"""Writes the fuzz targets' seed corpora (small valid inputs of each format)
and the hostile inputs of issue 13 as regressions (fuzz/regressions/).

usage: .venv/bin/python fuzz/make_corpus.py   (from the repository root)

Each file stays under 20 KB. Reruns overwrite the files with equivalent ones
(random values are seeded).
"""

import collections
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from make_edm_pickle import build  # noqa: E402
from torch_utils.persistence import Persistent  # noqa: E402

CORPUS = os.path.join(ROOT, "fuzz", "corpus")
REGRESSIONS = os.path.join(ROOT, "fuzz", "regressions")
torch.manual_seed(0)
rng = np.random.default_rng(0)


def write(target, name, data, root=CORPUS):
    assert len(data) < 20_000, (target, name, len(data))
    os.makedirs(os.path.join(root, target), exist_ok=True)
    with open(os.path.join(root, target, name), "wb") as f:
        f.write(data)


def hostile(target, name, data):
    write(target, name, data, root=REGRESSIONS)


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes(compressed, **arrays):
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def pickles():
    shared = [1, 2.5, "x"]
    write("pickle", "dict-p4.pkl", pickle.dumps({"a": shared, "b": (True, None), "n": -7, "big": 2**40}, protocol=4))
    write("pickle", "shared-p2.pkl", pickle.dumps([shared, shared, {"s": {1, 2}}], protocol=2))
    write("pickle", "ordereddict-p2.pkl", pickle.dumps(collections.OrderedDict(x=1, y=b"\x00\xff"), protocol=2))
    write("pickle", "list-p1.pkl", pickle.dumps({"k": [1, 2.0, "t"], "f": 1e-3}, protocol=1))
    # A CIFAR-10 batch in miniature: uint8 data [2, 3072] and labels.
    batch = {"batch_label": "b", "labels": [3, 7], "data": rng.integers(0, 256, (2, 3072), dtype=np.uint8)}
    write("pickle", "cifar-batch-p2.pkl", pickle.dumps(batch, protocol=2))


def torch_legacy():
    buffer = io.BytesIO()
    torch.save(torch.arange(6, dtype=torch.float32).storage(), buffer, _use_new_zipfile_serialization=False)
    write("torch_legacy", "tensor-legacy-save.bin", buffer.getvalue())
    # What pickle.dumps makes of tensors: _rebuild_tensor_v2 over _load_from_bytes storages.
    write("torch_legacy", "tensor-2x3.pkl", pickle.dumps(torch.arange(6, dtype=torch.float32).reshape(2, 3), protocol=4))
    write("torch_legacy", "tensor-transposed.pkl", pickle.dumps(torch.arange(6.0).reshape(2, 3).t(), protocol=4))
    write("torch_legacy", "parameter.pkl", pickle.dumps(torch.nn.Parameter(torch.ones(4, dtype=torch.float64)), protocol=4))


def network():
    tensors = {
        "model.map_noise.freqs": torch.arange(4, dtype=torch.float32),
        "model.enc.8x8_conv.weight": torch.randn(2, 1, 3, 3),
        "model.enc.8x8_conv.bias": torch.zeros(2),
        "model.dec.aux_conv.weight": torch.randn(1, 2, 1, 1),
    }
    metadata = {"precond": "EDMPrecond", "kwargs": json.dumps({"img_resolution": 8, "img_channels": 1, "model_type": "SongUNet"})}
    data = dict(ema=build(tensors, metadata), loss_fn=Persistent("EDMLoss", P_mean=-1.2), augment_pipe=None)
    write("torch_persistence", "tiny-edm.pkl", pickle.dumps(data))


def arrays():
    write("npy", "f4-2x3.npy", npy_bytes(np.arange(6, dtype="<f4").reshape(2, 3)))
    write("npy", "f8-fortran.npy", npy_bytes(np.asfortranarray(np.arange(6, dtype="<f8").reshape(2, 3))))
    write("npy", "i8-scalar.npy", npy_bytes(np.array(7, dtype="<i8")))
    write("npy", "u1-image.npy", npy_bytes(rng.integers(0, 256, (1, 3, 4, 4), dtype=np.uint8)))
    write("npy", "b1.npy", npy_bytes(np.array([True, False])))
    mu, sigma = rng.standard_normal(8), np.eye(8)
    write("npz", "stats.npz", npz_bytes(False, mu=mu, sigma=sigma))
    write("npz", "stats-compressed.npz", npz_bytes(True, mu=mu, sigma=sigma))
    write("npz", "mixed.npz", npz_bytes(False, labels=np.arange(3, dtype="<i4"), x=np.ones((2, 2), dtype="<f4")))


def safetensors():
    def file(tensors, metadata):
        header, offset, blobs = {"__metadata__": metadata}, 0, []
        for name, (dtype, array) in tensors.items():
            blob = array.tobytes()
            header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
            offset += len(blob)
            blobs.append(blob)
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text + b"".join(blobs)

    write(
        "safetensors",
        "teacher.safetensors",
        file(
            {"model.w": ("F32", np.arange(6, dtype="<f4").reshape(2, 3)), "model.b": ("F64", np.zeros(2, dtype="<f8"))},
            {"precond": "EDMPrecond", "kwargs": "{}"},
        ),
    )
    write("safetensors", "ints.safetensors", file({"steps": ("I64", np.arange(3, dtype="<i8"))}, {}))


def configs():
    for name in ["toy-gmm.ron", "demo-fmnist.ron", "teacher-fmnist.ron"]:
        path = os.path.join(ROOT, "configs", name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                write("ron_config", name, f.read())


def datasets():
    for name in ["digits-8x8-labelled.zip", "digits-8x8-rgb.zip"]:
        with zipfile.ZipFile(os.path.join(ROOT, "tests", "fixtures", "data", name)) as source:
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dest:
                names = sorted(n for n in source.namelist() if n.endswith(".png"))[:4]
                for n in names:
                    dest.writestr(n, source.read(n))
                if "dataset.json" in source.namelist():
                    labels = json.loads(source.read("dataset.json"))["labels"]
                    if labels is not None:
                        labels = [entry for entry in labels if entry[0] in names]
                    dest.writestr("dataset.json", json.dumps({"labels": labels}))
            write("dataset_archive", name, out.getvalue())
            write("dataset_archive", name.replace(".zip", "-image.png"), source.read(names[0]))


def regressions():
    # Issue 13's hostile pickles.
    hostile("pickle", "memo-put-4g.pkl", b"\x80\x02Nr\xff\xff\xff\xff.")
    hostile("pickle", "memo-put-usize-max.pkl", b"\x80\x02Np18446744073709551615\n.")
    laughs = b"\x80\x02]q\x00"
    for level in range(1, 31):
        laughs += b"(" + (b"h" + bytes([level - 1])) * 10 + b"lq" + bytes([level])
    hostile("pickle", "billion-laughs.pkl", laughs + b".")
    hostile("pickle", "nested-tuples.pkl", b"\x80\x02)" + b"\x85" * 5000 + b".")
    hostile("pickle", "self-reference.pkl", b"\x80\x02]q\x00h\x00a.")
    # A stride-0 tensor: 1.5 KB that converted into 2 GB.
    hostile("torch_legacy", "stride-0.pkl", pickle.dumps(torch.ones(1).expand(2**29), protocol=4))
    legacy = io.BytesIO()
    torch.save(torch.arange(6, dtype=torch.float32).storage(), legacy, _use_new_zipfile_serialization=False)
    legacy = legacy.getvalue()
    count_at = len(legacy) - 24 - 8
    assert struct.unpack("<q", legacy[count_at : count_at + 8])[0] == 6
    hostile("torch_legacy", "storage-count-2p40.bin", legacy[:count_at] + struct.pack("<q", 2**40) + legacy[count_at + 8 :])
    # FID statistics whose header promises 64x64 float64 and hold nothing.
    header = npy_bytes(np.zeros((64, 64)))[:128]
    hostile("npy", "sigma-64x64-no-data.npy", header)
    hostile("npy", "header-length-4g.npy", b"\x93NUMPY\x02\x00\xff\xff\xff\xff{")
    stats = npz_bytes(False, mu=np.zeros(2), sigma=np.zeros((2, 2)))
    hostile("npz", "sigma-no-data.npz", zip_of({"sigma.npy": header}))
    hostile("npz", "entry-encrypted.npz", with_flag(stats, 1))
    hostile("npz", "entry-lzma.npz", with_method(stats, 14))


def zip_of(entries):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return out.getvalue()


def patch_headers(data, offset_in_header, value):
    """Sets a 2-byte field of every local (offset 6 = flags, 8 = method) and central header."""
    data = bytearray(data)
    for signature, shift in ((b"PK\x03\x04", 0), (b"PK\x01\x02", 2)):
        at = data.find(signature)
        while at >= 0:
            data[at + offset_in_header + shift : at + offset_in_header + shift + 2] = struct.pack("<H", value)
            at = data.find(signature, at + 4)
    return bytes(data)


def with_flag(data, flag):
    return patch_headers(data, 6, flag)


def with_method(data, method):
    return patch_headers(data, 8, method)


pickles()
torch_legacy()
network()
arrays()
safetensors()
configs()
datasets()
regressions()
