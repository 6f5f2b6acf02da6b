//! The metrics a run computes at every snapshot (`metrics.list` in the
//! config), appended to `RUN/metrics.jsonl`. With a detector other than
//! Inception-v3 the values are reported as proxies (`proxy-FID`).

use std::path::Path;
use std::time::Instant;

use difi_core::error::{Error, Result};
use difi_core::traits::{Dataset, Generator};
use difi_formats::image::to_uint8;
use difi_metrics::Metric;
use difi_metrics::detector::{FeatureDetector, batch_features, dataset_features};
use difi_metrics::detectors::DetectorOptions;
use difi_metrics::fid::{FeatureStats, frechet_distance};
use difi_metrics::precision_recall::precision_recall;
use tch::{Device, Tensor};

use crate::config::MetricsConfig;
use crate::generate::sample_batches;
use crate::run_dir::RunDir;

/// Computes the configured metrics of a generator.
pub struct SnapshotMetrics {
    metrics: Vec<Metric>,
    detector: Box<dyn FeatureDetector>,
    reference: FeatureStats,
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
        let options = DetectorOptions {
            inception_path: config.inception_path.as_ref().map(|p| base_dir.join(p)),
            base_dir: Some(base_dir.to_path_buf()),
        };
        let detector = config.detector.open(&options, device)?;
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
            reference,
            real_features,
            batch: config.batch_size.max(1),
            seed,
            device,
        })
    }

    /// Evaluates every metric; one JSON object per metric.
    pub fn evaluate(&self, generator: &dyn Generator) -> Result<Vec<serde_json::Value>> {
        let Some(num) = self.metrics.iter().map(Metric::num_images).max() else { return Ok(Vec::new()) };
        let started = Instant::now();
        let features = generator_features(generator, self.detector.as_ref(), num, self.batch, self.seed, self.device)?;
        let generation_s = started.elapsed().as_secs_f64();
        let label = if self.detector.is_proxy() { "proxy-FID" } else { "FID" };
        let mut results = Vec::new();
        for metric in &self.metrics {
            let started = Instant::now();
            let value = match *metric {
                Metric::Fid { num } => {
                    let stats = FeatureStats::from_features(&features.narrow(0, 0, num as i64))?;
                    serde_json::json!({ label: frechet_distance(&stats, &self.reference)? })
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
