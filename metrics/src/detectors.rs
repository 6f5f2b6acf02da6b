//! The detectors by name: a typed [`DetectorSpec`] is a name from the
//! [`BUILTIN`] registry or the path of a TorchScript file. Inception-v3 is
//! never downloaded: its path comes from the caller or the `DIFI_INCEPTION`
//! variable.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use difi_core::error::{Error, InvalidValue, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::Device;

use crate::detector::{FeatureDetector, TorchScriptDetector};
use crate::fmnist_classifier::FmnistClassifier;

/// File name of NVIDIA's Inception-v3 detector.
pub const INCEPTION_FILE: &str = "inception-2015-12-05.pt";

/// Where to get the Inception-v3 file, for messages.
pub const INCEPTION_URL: &str =
    "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/inception-2015-12-05.pt";

/// The weights of `fmnist-classifier`, trained by `difi zoo train-classifier`.
pub const FMNIST_CLASSIFIER: &[u8] = include_bytes!("../weights/fmnist-classifier.safetensors");

/// What opening a detector may need besides its name.
#[derive(Clone, Debug, Default)]
pub struct DetectorOptions {
    /// Path of `inception-2015-12-05.pt` (else `DIFI_INCEPTION`).
    pub inception_path: Option<PathBuf>,
    /// Directory that a relative TorchScript path starts from.
    pub base_dir: Option<PathBuf>,
}

type OpenFn = fn(&DetectorOptions, Device) -> Result<Box<dyn FeatureDetector>>;

/// The named detectors: `(name, what it is, how to open it)`.
pub const BUILTIN: &[(&str, &str, OpenFn)] = &[
    ("inception", "NVIDIA's Inception-v3 TorchScript (FID); path from --inception or DIFI_INCEPTION", open_inception),
    ("fmnist-classifier", "a Fashion-MNIST classifier built into difi (proxy-FID)", open_fmnist_classifier),
];

/// A detector: one of the [`BUILTIN`] names, or the path of a TorchScript
/// file with Inception's interface. Written as a string in configs and on
/// the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetectorSpec {
    /// A built-in detector, by its name in [`BUILTIN`].
    Builtin(&'static str),
    /// A TorchScript file.
    TorchScript(PathBuf),
}

impl Default for DetectorSpec {
    fn default() -> Self {
        DetectorSpec::Builtin("inception")
    }
}

impl DetectorSpec {
    /// Opens the detector on `device`.
    pub fn open(&self, options: &DetectorOptions, device: Device) -> Result<Box<dyn FeatureDetector>> {
        match self {
            DetectorSpec::Builtin(name) => {
                let (_, _, open) = BUILTIN.iter().find(|(n, _, _)| n == name).expect("names come from BUILTIN");
                open(options, device)
            }
            DetectorSpec::TorchScript(path) => {
                let path = match &options.base_dir {
                    Some(dir) => dir.join(path),
                    None => path.clone(),
                };
                let proxy = path.file_name().is_none_or(|n| n != INCEPTION_FILE);
                Ok(Box::new(TorchScriptDetector::load(&path, device, proxy)?))
            }
        }
    }
}

impl FromStr for DetectorSpec {
    type Err = InvalidValue;

    fn from_str(text: &str) -> std::result::Result<Self, InvalidValue> {
        if let Some((name, _, _)) = BUILTIN.iter().find(|(name, _, _)| *name == text) {
            return Ok(DetectorSpec::Builtin(name));
        }
        let looks_like_path = text.contains(['/', '.']);
        if !looks_like_path {
            let names: Vec<&str> = BUILTIN.iter().map(|(name, _, _)| *name).collect();
            return Err(InvalidValue(format!(
                "`{text}` is neither a detector ({}) nor the path of a TorchScript file",
                names.join(", ")
            )));
        }
        Ok(DetectorSpec::TorchScript(PathBuf::from(text)))
    }
}

impl fmt::Display for DetectorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetectorSpec::Builtin(name) => f.write_str(name),
            DetectorSpec::TorchScript(path) => write!(f, "{}", path.display()),
        }
    }
}

// By hand rather than `#[serde(try_from)]`: the derive would demand that
// the deserializer's lifetime outlive the `&'static str` of `Builtin`.
impl Serialize for DetectorSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DetectorSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|err: InvalidValue| serde::de::Error::custom(err))
    }
}

fn open_inception(options: &DetectorOptions, device: Device) -> Result<Box<dyn FeatureDetector>> {
    let path =
        options.inception_path.clone().or_else(|| std::env::var_os("DIFI_INCEPTION").map(PathBuf::from)).ok_or_else(
            || {
                Error::config(
                    "detector",
                    format!(
                        "no Inception-v3 weights: download {INCEPTION_FILE} ({INCEPTION_URL}) and pass its path \
                         (--inception PATH, metrics.inception_path) or set DIFI_INCEPTION"
                    ),
                )
            },
        )?;
    Ok(Box::new(TorchScriptDetector::load(&path, device, false)?))
}

fn open_fmnist_classifier(_options: &DetectorOptions, device: Device) -> Result<Box<dyn FeatureDetector>> {
    let origin = Path::new("fmnist-classifier (built in)");
    Ok(Box::new(FmnistClassifier::from_bytes(FMNIST_CLASSIFIER, origin, device)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_names_and_paths_and_refuse_typos() {
        assert_eq!("inception".parse::<DetectorSpec>().unwrap(), DetectorSpec::Builtin("inception"));
        assert_eq!("fmnist-classifier".parse::<DetectorSpec>().unwrap().to_string(), "fmnist-classifier");
        assert_eq!(
            "nets/inception-2015-12-05.pt".parse::<DetectorSpec>().unwrap(),
            DetectorSpec::TorchScript("nets/inception-2015-12-05.pt".into())
        );
        let err = "inceptoin".parse::<DetectorSpec>().unwrap_err().to_string();
        assert!(err.contains("inceptoin") && err.contains("fmnist-classifier"), "{err}");
    }
}
