"""Reference data for difi's dataset tests, computed independently of difi.

usage:
  dataset_reference.py load DATASET.zip OUT.npz      read a dataset as EDM's loader does (zipfile + PIL)
  dataset_reference.py folder DIR                     make an image folder (class subfolders) + DIR/expected.npz
  dataset_reference.py cifar DIR                      make DIR/cifar-10-python.tar.gz + DIR/expected.npz
  dataset_reference.py mnist DIR                      make DIR/tiny-images-idx3-ubyte.gz (+ labels) + DIR/expected.npz
  dataset_reference.py idx IMAGES.gz OUT.npz          MNIST-format idx files padded to 32x32, as EDM's tool pads them
  dataset_reference.py deflated DATASET.zip OUT.zip   the same files, compressed (an invalid dataset)

Each expected.npz holds what EDM's dataset tool would write for the source:
`images` uint8 [N, C, H, W] in archive order, `labels` int64 [N] (−1: none),
and the archive names in expected.names.json.
"""

import gzip
import io
import json
import os
import pickle
import sys
import tarfile
import zipfile

import numpy as np
import PIL.Image


def load(path, out):
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith(".png"))
        images = []
        for name in names:
            with z.open(name) as f:
                img = np.array(PIL.Image.open(f))
            if img.ndim == 2:
                img = img[:, :, np.newaxis]
            images.append(img.transpose(2, 0, 1))
        meta = json.loads(z.read("dataset.json")) if "dataset.json" in z.namelist() else {"labels": None}
    labels = meta["labels"]
    labels = np.array([dict(labels)[n] for n in names], np.int64) if labels is not None else np.full(len(names), -1)
    save(out, np.stack(images), labels, names)


def save(out, images, labels, names):
    np.savez(out, images=images, labels=np.asarray(labels, np.int64))
    with open(out.replace(".npz", ".names.json"), "w") as f:
        json.dump(list(names), f)


def expected(out, images, labels):
    names = [f"{i:08d}"[:5] + f"/img{i:08d}.png" for i in range(len(images))]
    images = [img[:, :, np.newaxis] if img.ndim == 2 else img for img in images]
    save(out, np.stack([img.transpose(2, 0, 1) for img in images]), labels, names)


def idx(images_gz, out):
    with gzip.open(images_gz, "rb") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(images_gz.replace("-images-idx3-ubyte.gz", "-labels-idx1-ubyte.gz"), "rb") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2)], "constant", constant_values=0)
    save(out, padded[:, np.newaxis], labels, [])


def deflated(source_zip, out):
    with zipfile.ZipFile(source_zip) as src, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))


def folder(root):
    rng = np.random.default_rng(1)
    made = []
    for cls in ["cat", "dog", "zebra"]:
        os.makedirs(os.path.join(root, "src", cls), exist_ok=True)
        for k in range(4):
            img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            path = os.path.join(root, "src", cls, f"{k}.png")
            PIL.Image.fromarray(img).save(path)
            made.append((path, img))
    # EDM's tool: files sorted by path, labels from sorted top-level folder names.
    made.sort(key=lambda m: m[0].split(os.sep))
    classes = sorted({os.path.relpath(p, os.path.join(root, "src")).split(os.sep)[0] for p, _ in made})
    labels = [classes.index(os.path.relpath(p, os.path.join(root, "src")).split(os.sep)[0]) for p, _ in made]
    expected(os.path.join(root, "expected.npz"), [img for _, img in made], labels)


def cifar(root):
    rng = np.random.default_rng(2)
    all_images, all_labels = [], []
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for batch in range(1, 6):
            data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
            labels = [int(x) for x in rng.integers(0, 10, 3)]
            blob = pickle.dumps({b"batch_label": b"training", b"labels": labels, b"data": data}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/data_batch_{batch}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            all_images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            all_labels += labels
    with open(os.path.join(root, "cifar-10-python.tar.gz"), "wb") as f:
        f.write(buffer.getvalue())
    expected(os.path.join(root, "expected.npz"), list(np.concatenate(all_images)), all_labels)


def mnist(root):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    header = np.array([2051, 7, 28, 28], ">u4").tobytes()
    with gzip.open(os.path.join(root, "tiny-images-idx3-ubyte.gz"), "wb") as f:
        f.write(header + images.tobytes())
    with gzip.open(os.path.join(root, "tiny-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(np.array([2049, 7], ">u4").tobytes() + labels.tobytes())
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2)], "constant", constant_values=0)
    expected(os.path.join(root, "expected.npz"), list(padded), [int(x) for x in labels])


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    commands = {"load": load, "folder": folder, "cifar": cifar, "mnist": mnist, "idx": idx, "deflated": deflated}
    commands[command](*args)
