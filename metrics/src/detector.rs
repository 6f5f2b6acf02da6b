//! Feature detectors for FID and precision/recall, and the features of
//! datasets and image batches. The standard detector is NVIDIA's
//! Inception-v3 TorchScript file (`inception-2015-12-05.pt`, used by
//! StyleGAN2-ADA, EDM and Diff-Instruct): uint8 `[N, 3, H, W]` in [0, 255]
//! in, 2048 features out with `return_features=True`. Any TorchScript module
//! with that interface loads the same way. [`crate::detectors`] names them.

use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::Dataset;
use tch::{CModule, Device, IValue, Kind, Tensor};

/// Maps uint8 images to feature vectors.
pub trait FeatureDetector {
    /// Name for reports (`inception-2015-12-05.pt`, `fmnist-classifier`).
    fn name(&self) -> String;

    /// Whether distances in this feature space are a proxy, to be reported
    /// as such and never as FID (anything but Inception-v3).
    fn is_proxy(&self) -> bool;

    /// Features `[N, D]` (float32, CPU) of uint8 images `[N, C, H, W]`.
    fn features(&self, images: &Tensor) -> Result<Tensor>;
}

/// A TorchScript detector called as `module(images, True)` (`return_features`).
pub struct TorchScriptDetector {
    module: CModule,
    path: PathBuf,
    device: Device,
    proxy: bool,
}

impl TorchScriptDetector {
    /// Loads a TorchScript file; `proxy` says whether it is something other
    /// than NVIDIA's Inception-v3.
    pub fn load(path: &Path, device: Device, proxy: bool) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such detector file")));
        }
        let mut module = CModule::load_on_device(path, device)
            .map_err(|e| Error::checkpoint(path, format!("not a loadable TorchScript module ({e})")))?;
        module.set_eval();
        Ok(TorchScriptDetector { module, path: path.to_path_buf(), device, proxy })
    }
}

impl FeatureDetector for TorchScriptDetector {
    fn name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    fn is_proxy(&self) -> bool {
        self.proxy
    }

    fn features(&self, images: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let mut images = images.f_to_device(self.device).ctx("detector input")?;
        if images.size().get(1) == Some(&1) {
            images = images.f_repeat([1, 3, 1, 1]).ctx("gray to RGB")?;
        }
        let output = self
            .module
            .forward_is(&[IValue::Tensor(images), IValue::Bool(true)])
            .map_err(|e| Error::checkpoint(&self.path, format!("forward(images, return_features=True) failed: {e}")))?;
        match output {
            IValue::Tensor(features) => {
                features.f_to_kind(Kind::Float).ctx("features")?.f_to_device(Device::Cpu).ctx("features")
            }
            _ => Err(Error::checkpoint(&self.path, "the detector did not return a tensor")),
        }
    }
}

/// Features `[N, D]` of every image of `dataset` (no flips), in batches;
/// at most `max` images.
pub fn dataset_features(
    dataset: &dyn Dataset,
    detector: &dyn FeatureDetector,
    batch: usize,
    max: Option<usize>,
) -> Result<Tensor> {
    let n = max.map_or(dataset.len(), |m| m.min(dataset.len()));
    let batch = batch.max(1);
    let batches = (0..n).step_by(batch).map(|start| {
        let images: Vec<Tensor> =
            (start..(start + batch).min(n)).map(|i| dataset.get(i).map(|(image, _)| image)).collect::<Result<_>>()?;
        Tensor::f_stack(&images, 0).ctx("batch")
    });
    batch_features(detector, n, batches)
}

/// Features `[N, D]` of uint8 image batches `[B, C, H, W]` holding `total`
/// images in all, with a progress bar.
pub fn batch_features(
    detector: &dyn FeatureDetector,
    total: usize,
    batches: impl Iterator<Item = Result<Tensor>>,
) -> Result<Tensor> {
    let progress = indicatif::ProgressBar::new(total as u64);
    let mut features = Vec::new();
    for images in batches {
        let images = images?;
        progress.inc(images.size().first().copied().unwrap_or(0) as u64);
        features.push(detector.features(&images)?);
    }
    progress.finish_and_clear();
    Tensor::f_cat(&features, 0).ctx("features")
}
