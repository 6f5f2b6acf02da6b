//! `fmnist-classifier`: a compact CNN trained by difi on the Fashion-MNIST
//! training set (32×32, padded as EDM pads it), whose penultimate 128
//! features serve as a feature detector where no Inception-v3 weights are
//! available. Distances in its feature space are a proxy (reported as
//! `proxy-FID`), never FID. As a detector it also takes 16×16 and 8×8
//! images, upsampled to its 32×32.

use std::collections::HashMap;
use std::path::Path;

use crate::detector::FeatureDetector;
use difi_core::error::{Error, Result, TorchContext};
use difi_formats::weights;
use tch::nn::{self, Module, ModuleT, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

/// Side of the images the classifier takes.
pub const RESOLUTION: i64 = 32;
/// Number of classes.
pub const CLASSES: i64 = 10;
/// Width of the feature vector.
pub const FEATURES: i64 = 128;

/// The classifier: five 3×3 convolutions with batch norm (16, 16, 32, 32, 64
/// channels, two 2×2 max-pools), global average pooling, a 128-wide feature
/// layer and a 10-way head.
pub struct FmnistClassifier {
    vs: VarStore,
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    features: nn::Linear,
    head: nn::Linear,
}

impl FmnistClassifier {
    /// A freshly initialised classifier on `device`.
    pub fn new(device: Device) -> Self {
        let vs = VarStore::new(device);
        let root = vs.root();
        let config = nn::ConvConfig { padding: 1, ..Default::default() };
        let widths = [(1, 16), (16, 16), (16, 32), (32, 32), (32, 64)];
        let convs = widths
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| {
                let conv = nn::conv2d(&root / format!("conv{i}"), a, b, 3, config);
                let norm = nn::batch_norm2d(&root / format!("norm{i}"), b, Default::default());
                (conv, norm)
            })
            .collect();
        let features = nn::linear(&root / "features", 64, FEATURES, Default::default());
        let head = nn::linear(&root / "head", FEATURES, CLASSES, Default::default());
        FmnistClassifier { vs, convs, features, head }
    }

    /// The classifier with weights from a safetensors file's bytes.
    pub fn from_bytes(bytes: &[u8], origin: &Path, device: Device) -> Result<Self> {
        let mut classifier = Self::new(device);
        let tensors: HashMap<String, Tensor> = weights::parse(bytes, origin)?.into_map();
        weights::copy_into(&mut classifier.vs, &tensors, origin)?;
        Ok(classifier)
    }

    /// Penultimate features `[N, 128]` of uint8 images `[N, 1, 32, 32]`
    /// (batch statistics in eval mode).
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        self.features_t(images, false)
    }

    fn features_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let size = images.size();
        if size.len() != 4 || size[1] != 1 || size[2] != RESOLUTION || size[3] != RESOLUTION {
            return Err(Error::Shape {
                what: "fmnist-classifier input (grayscale 32×32)".into(),
                expected: vec![-1, 1, RESOLUTION, RESOLUTION],
                actual: size,
            });
        }
        let mut x = images.f_to_device(self.vs.device()).ctx("classifier")?.f_to_kind(Kind::Float).ctx("classifier")?
            / 127.5
            - 1.0;
        for (i, (conv, norm)) in self.convs.iter().enumerate() {
            x = norm.forward_t(&conv.forward(&x), train).f_relu().ctx("classifier")?;
            if i == 1 || i == 3 {
                x = x.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false).ctx("classifier")?;
            }
        }
        let pooled = x.f_mean_dim([2, 3].as_slice(), false, Kind::Float).ctx("classifier")?;
        self.features.forward(&pooled).f_relu().ctx("classifier")
    }

    /// Class logits `[N, 10]`.
    pub fn logits(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&self.features_t(images, false)?))
    }

    /// Share of `images` `[N, 1, 32, 32]` (uint8) classified as `labels` `[N]`.
    pub fn accuracy(&self, images: &Tensor, labels: &Tensor) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        let n = images.size()[0];
        let mut correct = 0i64;
        let mut start = 0;
        while start < n {
            let len = 1000.min(n - start);
            let predicted = self.logits(&images.narrow(0, start, len))?.f_argmax(1, false).ctx("classifier")?;
            let truth = labels.narrow(0, start, len).f_to_device(predicted.device()).ctx("labels")?;
            correct +=
                predicted.f_eq_tensor(&truth).ctx("accuracy")?.f_sum(Kind::Int64).ctx("accuracy")?.int64_value(&[]);
            start += len;
        }
        Ok(correct as f64 / n as f64)
    }

    /// Trains on `images` `[N, 1, 32, 32]` (uint8) and `labels` `[N]` with
    /// Adam, random x-flips and a cosine learning rate; `report(epoch, loss)`
    /// after each epoch.
    pub fn train(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        epochs: usize,
        seed: i64,
        mut report: impl FnMut(usize, f64),
    ) -> Result<()> {
        tch::manual_seed(seed);
        let mut optimizer = nn::Adam::default().build(&self.vs, 1e-3).ctx("optimizer")?;
        let n = images.size()[0];
        let batch = 128;
        let steps_per_epoch = n / batch;
        let total = (epochs as i64 * steps_per_epoch) as f64;
        let mut step = 0;
        for epoch in 0..epochs {
            let order = Tensor::f_randperm(n, (Kind::Int64, Device::Cpu)).ctx("shuffle")?;
            let mut epoch_loss = 0.0;
            for k in 0..steps_per_epoch {
                let index = order.narrow(0, k * batch, batch);
                let mut x = images.f_index_select(0, &index).ctx("batch")?;
                let flip = Tensor::f_rand([batch], (Kind::Float, Device::Cpu)).ctx("flip")?.f_lt(0.5).ctx("flip")?;
                x = x.f_flip([3]).ctx("flip")?.f_where_self(&flip.view([-1, 1, 1, 1]), &x).ctx("flip")?;
                let y = labels.f_index_select(0, &index).ctx("batch")?.f_to_device(self.vs.device()).ctx("batch")?;
                let lr = 1e-3 * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total).cos());
                optimizer.set_lr(lr);
                let loss = self.head.forward(&self.features_t(&x, true)?).cross_entropy_for_logits(&y);
                optimizer.backward_step(&loss);
                epoch_loss += loss.double_value(&[]);
                step += 1;
            }
            report(epoch, epoch_loss / steps_per_epoch as f64);
        }
        Ok(())
    }

    /// Writes the weights with `metadata`.
    pub fn save(&self, path: &Path, metadata: &HashMap<String, String>) -> Result<()> {
        weights::save_var_store(&self.vs, path, metadata)
    }
}

impl FeatureDetector for FmnistClassifier {
    fn name(&self) -> String {
        "fmnist-classifier".into()
    }

    fn is_proxy(&self) -> bool {
        true
    }

    /// Smaller images whose side divides 32 (16×16, 8×8) are first
    /// upsampled bilinearly to 32×32 and rounded back to uint8, so images
    /// of any such resolution are measured on the classifier's own scale.
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let size = images.size();
        let images = match size[..] {
            [_, 1, h, w] if h == w && h < RESOLUTION && RESOLUTION % h == 0 => upsample(images)?,
            _ => images.shallow_clone(),
        };
        FmnistClassifier::features(self, &images)?.f_to_device(Device::Cpu).ctx("features")
    }
}

/// uint8 `[N, 1, h, h]` → uint8 `[N, 1, 32, 32]`, bilinear (half-pixel centres).
fn upsample(images: &Tensor) -> Result<Tensor> {
    images
        .f_to_kind(Kind::Float)
        .ctx("upsample")?
        .f_upsample_bilinear2d([RESOLUTION, RESOLUTION], false, None, None)
        .ctx("upsample")?
        .f_round()
        .ctx("upsample")?
        .f_clamp(0.0, 255.0)
        .ctx("upsample")?
        .f_to_kind(Kind::Uint8)
        .ctx("upsample")
}
