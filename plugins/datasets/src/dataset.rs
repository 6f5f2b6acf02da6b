//! The dataset plugins: `zip` and `folder` open the EDM format for training
//! and metrics, with EDM's options (x-flip, labels on or off, a subset).

use std::path::PathBuf;

use difi_core::error::{Error, Result, TorchContext};
use difi_core::params::{Params, decode_params};
use difi_core::registry::ResolveContext;
use difi_core::traits::Dataset;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::archive::ImageArchive;
use crate::limits::MAX_CLASSES;
use crate::loader::epoch_order;

/// Parameters of the `zip` and `folder` dataset plugins.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageDatasetParams {
    /// The dataset: a `.zip` archive or a folder in the EDM format.
    pub path: PathBuf,
    /// Add a mirrored copy of every image (the dataset doubles, as EDM's `xflip`).
    pub xflip: bool,
    /// Use the labels of `dataset.json` (false: treat as unlabelled).
    pub use_labels: Option<bool>,
    /// Use a seeded random subset of at most this many images.
    pub max_size: Option<usize>,
    /// Number of classes the labels must fit (e.g. the teacher's), at most
    /// [`MAX_CLASSES`]; default: largest label + 1.
    pub label_dim: Option<i64>,
}

/// An EDM-format dataset with EDM's options applied.
pub struct ImageDataset {
    archive: ImageArchive,
    /// Raw image index of each dataset index before flipping.
    raw: Vec<usize>,
    xflip: bool,
    use_labels: bool,
    label_dim: i64,
}

impl ImageDataset {
    /// Opens `params.path` (relative to `base`).
    pub fn open(params: &ImageDatasetParams, base: &std::path::Path) -> Result<Self> {
        if params.path.as_os_str().is_empty() {
            return Err(Error::config("path", "required: the dataset's .zip or folder"));
        }
        let archive = ImageArchive::open(&base.join(&params.path))?;
        let mut raw: Vec<usize> = (0..archive.len()).collect();
        if let Some(max) = params.max_size.filter(|m| *m < raw.len()) {
            raw = epoch_order(archive.len(), 0, u64::MAX);
            raw.truncate(max);
            raw.sort();
        }
        let use_labels = params.use_labels.unwrap_or(true) && archive.labels().is_some();
        let mut label_dim = if use_labels { archive.label_dim() } else { 0 };
        if let Some(expected) = params.label_dim
            && !(0..=MAX_CLASSES).contains(&expected)
        {
            return Err(Error::config("label_dim", format!("must be in 0..={MAX_CLASSES}, got {expected}")));
        }
        if let (Some(expected), true) = (params.label_dim, use_labels) {
            let labels = archive.labels().unwrap_or_default();
            if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l >= expected) {
                return Err(Error::checkpoint(
                    archive.path(),
                    format!("the label {l} of {} is out of range for {expected} classes", archive.names()[i]),
                ));
            }
            label_dim = expected;
        }
        Ok(ImageDataset { archive, raw, xflip: params.xflip, use_labels, label_dim })
    }

    /// The underlying archive.
    pub fn archive(&self) -> &ImageArchive {
        &self.archive
    }
}

impl Dataset for ImageDataset {
    fn len(&self) -> usize {
        self.raw.len() * if self.xflip { 2 } else { 1 }
    }

    fn image_shape(&self) -> [i64; 3] {
        self.archive.shape().map(|d| d as i64)
    }

    fn label_dim(&self) -> i64 {
        self.label_dim
    }

    fn label(&self, index: usize) -> Result<Option<i64>> {
        if index >= self.len() {
            return Err(Error::config("index", format!("{index} is past the end of {} images", self.len())));
        }
        let raw = self.raw[index % self.raw.len()];
        Ok(if self.use_labels { self.archive.labels().map(|l| l[raw]) } else { None })
    }

    fn get(&self, index: usize) -> Result<(Tensor, Option<i64>)> {
        let n = self.raw.len();
        if index >= self.len() {
            return Err(Error::config("index", format!("{index} is past the end of {} images", self.len())));
        }
        let raw = self.raw[index % n];
        let mut image = self.archive.pixels(raw)?.to_tensor()?;
        if index >= n {
            image = image.f_flip([2]).ctx("x-flip")?;
        }
        let label = if self.use_labels { self.archive.labels().map(|l| l[raw]) } else { None };
        Ok((image, label))
    }
}

fn resolve(params: &Params, _ctx: &ResolveContext<'_>) -> Result<Params> {
    let typed: ImageDatasetParams = decode_params(params)?;
    if typed.path.as_os_str().is_empty() {
        return Err(Error::config("path", "required: the dataset's .zip or folder"));
    }
    serde_json::to_value(&typed).map_err(|e| Error::config("", e.to_string()))
}

difi_core::register_plugin!(
    Dataset,
    "zip",
    ImageDatasetParams,
    |params, ctx| Ok(Box::new(ImageDataset::open(&params, ctx.base_dir)?)),
    resolve = resolve
);
difi_core::register_plugin!(
    Dataset,
    "folder",
    ImageDatasetParams,
    |params, ctx| Ok(Box::new(ImageDataset::open(&params, ctx.base_dir)?)),
    resolve = resolve
);
