//! Feature detectors by name: `inception` (NVIDIA's Inception-v3
//! TorchScript, never downloaded: its path comes from the caller or the
//! `DIFI_INCEPTION` variable), `fmnist-classifier` (weights built into difi),
//! or the path of any TorchScript module with Inception's interface.

use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};
use difi_core::metrics::detector::{FeatureDetector, TorchScriptDetector};
use tch::Device;

use crate::fmnist_classifier::FmnistClassifier;

/// The weights of `fmnist-classifier`, trained by `difi zoo train-classifier`.
pub const FMNIST_CLASSIFIER: &[u8] = include_bytes!("../weights/fmnist-classifier.safetensors");

/// File name of NVIDIA's Inception-v3 detector.
pub const INCEPTION_FILE: &str = "inception-2015-12-05.pt";

/// Where to get the Inception-v3 file, for messages.
pub const INCEPTION_URL: &str =
    "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/inception-2015-12-05.pt";

/// Opens detector `spec` on `device`; `inception_path` locates Inception-v3
/// when `spec` is `inception` (else `DIFI_INCEPTION`).
pub fn open(spec: &str, inception_path: Option<&Path>, device: Device) -> Result<Box<dyn FeatureDetector>> {
    match spec {
        "fmnist-classifier" => Ok(Box::new(FmnistClassifier::from_bytes(
            FMNIST_CLASSIFIER,
            Path::new("fmnist-classifier (built in)"),
            device,
        )?)),
        "inception" => {
            let path =
                inception_path.map(Path::to_path_buf).or_else(|| std::env::var_os("DIFI_INCEPTION").map(PathBuf::from));
            let path = path.ok_or_else(|| {
                Error::config(
                    "detector",
                    format!(
                        "no Inception-v3 weights: download {INCEPTION_FILE} ({INCEPTION_URL}) and pass its path \
                         (--inception PATH, metrics.inception_path) or set DIFI_INCEPTION"
                    ),
                )
            })?;
            Ok(Box::new(TorchScriptDetector::load(&path, device, false)?))
        }
        path => {
            let path = Path::new(path);
            let proxy = path.file_name().is_none_or(|n| n != INCEPTION_FILE);
            Ok(Box::new(TorchScriptDetector::load(path, device, proxy)?))
        }
    }
}
