//! The metrics a run computes at every snapshot (`metrics.list` in the
//! config), appended to `RUN/metrics.jsonl`. With a detector other than
//! Inception-v3 the values are reported as proxies (`proxy-FID`).

use std::path::Path;
use std::time::Instant;

use difi_core::error::{Error, Result, TorchContext};
use difi_core::shard::Shard;
use difi_core::traits::{Dataset, Generator};
use difi_formats::image::to_uint8;
use difi_metrics::Metric;
use difi_metrics::detector::{FeatureDetector, batch_features, dataset_features};
use difi_metrics::detectors::DetectorOptions;
use difi_metrics::fid::{FeatureStats, frechet_distance};
use difi_metrics::precision_recall::precision_recall;
use tch::{Device, Tensor};

use crate::config::MetricsConfig;
use crate::distributed::Distributed;
use crate::generate::{sample_batch, sample_batches};
use crate::run_dir::RunDir;

/// Computes the configured metrics of a generator.
pub struct SnapshotMetrics {
    metrics: Vec<Metric>,
    detector: Box<dyn FeatureDetector>,
    /// Reference statistics; `None` on ranks other than 0, which only
    /// compute their share of the generated features.
    reference: Option<FeatureStats>,
    /// Real features, for precision/recall.
    real_features: Option<Tensor>,
    batch: usize,
    seed: u64,
    device: Device,
}

impl SnapshotMetrics {
    /// The metrics `config` lists: the detector, the reference statistics
    /// (given, or computed from `dataset` once and kept in the run directory)
    /// and, for precision/recall, the dataset's features.
    pub fn new(
        config: &MetricsConfig,
        base_dir: &Path,
        dataset: Option<&dyn Dataset>,
        run: &RunDir,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        let detector = open_detector(config, base_dir, device)?;
        let reference = match &config.reference {
            Some(path) => FeatureStats::load(&base_dir.join(path))?,
            None => {
                let cached = run.metrics_reference_path();
                if cached.is_file() {
                    FeatureStats::load(&cached)?
                } else {
                    let dataset = dataset.ok_or_else(|| {
                        Error::config("metrics.reference", "metrics need reference statistics or a dataset")
                    })?;
                    tracing::info!("computing reference statistics of the dataset with {}", detector.name());
                    let features = dataset_features(dataset, detector.as_ref(), config.batch_size, None)?;
                    let stats = FeatureStats::from_features(&features)?;
                    stats.save(&cached)?;
                    stats
                }
            }
        };
        let largest_real = config.list.iter().filter(|m| m.needs_real_images()).map(Metric::num_images).max();
        let real_features = match (largest_real, dataset) {
            (Some(n), Some(dataset)) => Some(dataset_features(dataset, detector.as_ref(), config.batch_size, Some(n))?),
            (Some(_), None) => {
                return Err(Error::config(
                    "metrics.list",
                    "precision/recall needs real images: give the config a dataset",
                ));
            }
            (None, _) => None,
        };
        Ok(SnapshotMetrics {
            metrics: config.list.clone(),
            detector,
            reference: Some(reference),
            real_features,
            batch: config.batch_size.max(1),
            seed,
            device,
        })
    }

    /// What a rank other than 0 of a data-parallel run needs: the detector,
    /// to compute its share of the generated images' features.
    pub fn for_other_rank(config: &MetricsConfig, base_dir: &Path, seed: u64, device: Device) -> Result<Self> {
        Ok(SnapshotMetrics {
            metrics: config.list.clone(),
            detector: open_detector(config, base_dir, device)?,
            reference: None,
            real_features: None,
            batch: config.batch_size.max(1),
            seed,
            device,
        })
    }

    /// The most generated images any metric needs.
    fn num_images(&self) -> Option<usize> {
        self.metrics.iter().map(Metric::num_images).max()
    }

    /// Evaluates every metric; one JSON object per metric.
    pub fn evaluate(&self, generator: &dyn Generator) -> Result<Vec<serde_json::Value>> {
        let Some(num) = self.num_images() else { return Ok(Vec::new()) };
        let started = Instant::now();
        let features = generator_features(generator, self.detector.as_ref(), num, self.batch, self.seed, self.device)?;
        self.results(&features, started.elapsed().as_secs_f64())
    }

    /// [`evaluate`](Self::evaluate) shared by the ranks of `group`: each
    /// generates and measures the batches `rank, rank + N, …` (every batch
    /// is drawn from its own seed, so they are the batches one process
    /// makes), the features are summed into place on every rank, and rank 0
    /// computes the metrics (`None` elsewhere).
    pub fn evaluate_shared(
        &self,
        generator: &dyn Generator,
        group: &Distributed,
    ) -> Result<Option<Vec<serde_json::Value>>> {
        let Some(num) = self.num_images() else { return Ok(Some(Vec::new())) };
        let started = Instant::now();
        let features =
            shard_features(generator, self.detector.as_ref(), num, self.batch, self.seed, self.device, group.shard())?;
        group.sum(&features)?;
        if !group.is_writer() {
            return Ok(None);
        }
        self.results(&features, started.elapsed().as_secs_f64()).map(Some)
    }

    /// The metrics of generated `features` `[num, D]`.
    fn results(&self, features: &Tensor, generation_s: f64) -> Result<Vec<serde_json::Value>> {
        let reference = self
            .reference
            .as_ref()
            .ok_or_else(|| Error::config("metrics", "only rank 0 holds the reference statistics"))?;
        let label = if self.detector.is_proxy() { "proxy-FID" } else { "FID" };
        let mut results = Vec::new();
        for metric in &self.metrics {
            let started = Instant::now();
            let value = match *metric {
                Metric::Fid { num } => {
                    let stats = FeatureStats::from_features(&features.narrow(0, 0, num as i64))?;
                    serde_json::json!({ label: frechet_distance(&stats, reference)? })
                }
                Metric::PrecisionRecall { num, k } => {
                    let real = self.real_features.as_ref().expect("checked in new");
                    let n_real = (num as i64).min(real.size()[0]);
                    let (precision, recall) =
                        precision_recall(&real.narrow(0, 0, n_real), &features.narrow(0, 0, num as i64), k)?;
                    serde_json::json!({ "precision": precision, "recall": recall })
                }
            };
            results.push(serde_json::json!({
                "metric": metric.to_string(),
                "results": value,
                "detector": self.detector.name(),
                "seconds": generation_s + started.elapsed().as_secs_f64(),
            }));
        }
        Ok(results)
    }
}

fn open_detector(config: &MetricsConfig, base_dir: &Path, device: Device) -> Result<Box<dyn FeatureDetector>> {
    let options = DetectorOptions {
        inception_path: config.inception_path.as_ref().map(|p| base_dir.join(p)),
        base_dir: Some(base_dir.to_path_buf()),
    };
    config.detector.open(&options, device)
}

/// This rank's share of [`generator_features`]: `[n, D]`, holding the
/// features of batches `shard.rank, shard.rank + world_size, …` in their
/// rows and zeros elsewhere, so that summing every rank's gives the whole.
fn shard_features(
    generator: &dyn Generator,
    detector: &dyn FeatureDetector,
    n: usize,
    batch: usize,
    seed: u64,
    device: Device,
    shard: Shard,
) -> Result<Tensor> {
    let (n, batch) = (n as i64, batch.max(1) as i64);
    let measure = |index: i64, b: i64| -> Result<Tensor> {
        let (images, _) = sample_batch(generator, index as u64, b, seed, device)?;
        detector.features(&to_uint8(&images)?)
    };
    let zeros_like = |part: &Tensor| Tensor::f_zeros([n, part.size()[1]], (part.kind(), part.device())).ctx("features");
    let mut features: Option<Tensor> = None;
    let batches = (n + batch - 1) / batch;
    for index in (shard.rank..batches).step_by(shard.world_size.max(1) as usize) {
        let (start, b) = (index * batch, batch.min(n - index * batch));
        let part = measure(index, b)?;
        let all = match &features {
            Some(all) => all,
            None => features.insert(zeros_like(&part)?),
        };
        all.f_narrow(0, start, b).ctx("features")?.f_copy_(&part).ctx("features")?;
    }
    match features {
        Some(features) => Ok(features),
        // A rank with no batch still joins the sum, with zeros of the width
        // one sample's features have.
        None => zeros_like(&measure(0, 1)?),
    }
}

/// Features `[n, D]` of `n` generator samples: latents and labels from
/// `seed`, images converted to uint8 as EDM's `generate.py` does.
pub fn generator_features(
    generator: &dyn Generator,
    detector: &dyn FeatureDetector,
    n: usize,
    batch: usize,
    seed: u64,
    device: Device,
) -> Result<Tensor> {
    let images = sample_batches(generator, n as i64, batch as i64, seed, device).map(|batch| {
        let (images, _) = batch?;
        if images.dim() != 4 {
            return Err(Error::Shape {
                what: "generated images [N, C, H, W]".into(),
                expected: vec![-1, -1, -1, -1],
                actual: images.size(),
            });
        }
        to_uint8(&images)
    });
    batch_features(detector, n, images)
}
