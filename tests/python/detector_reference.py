"""A stand-in feature detector and reference statistics for difi's FID tests.

usage:
  detector_reference.py make OUT.pt                      a TorchScript module with Inception-v3's interface
  detector_reference.py stats DATASET.zip DETECTOR.pt OUT.npz
      statistics of every image of a dataset as StyleGAN2-ADA/EDM compute them:
      uint8 NCHW, grayscale repeated to 3 channels, detector(x, return_features=True),
      mean and np.cov(rowvar=False) in float64

The stand-in takes uint8 [N, 3, H, W] in [0, 255] at any size, as NVIDIA's
inception-2015-12-05.pt does, and returns 32 features (or 10 logits).
"""

import io
import sys
import zipfile

import numpy as np
import PIL.Image
import torch


class StandInDetector(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = img.to(torch.float32) / 127.5 - 1
        x = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
        features = torch.tanh(self.conv(x)).mean(dim=[2, 3]) * 10
        if return_features:
            return features
        return self.head(features)


def make(out):
    torch.jit.script(StandInDetector().eval()).save(out)


def stats(dataset, detector, out):
    module = torch.jit.load(detector).eval()
    with zipfile.ZipFile(dataset) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        images = [np.array(PIL.Image.open(io.BytesIO(z.read(n)))) for n in names]
    x = np.stack([img[:, :, None] if img.ndim == 2 else img for img in images]).transpose(0, 3, 1, 2)
    x = torch.from_numpy(np.ascontiguousarray(x))
    if x.shape[1] == 1:
        x = x.repeat([1, 3, 1, 1])
    with torch.no_grad():
        features = torch.cat([module(x[i : i + 250], True) for i in range(0, len(x), 250)]).numpy().astype(np.float64)
    np.savez(out, mu=features.mean(axis=0), sigma=np.cov(features, rowvar=False))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"make": make, "stats": stats}[command](*args)
