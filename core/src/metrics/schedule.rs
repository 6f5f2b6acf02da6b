//! Metrics a run computes at every snapshot (`metrics.list` in the config),
//! appended to `RUN/metrics.jsonl`. Names follow StyleGAN2-ADA and EDM:
//! `fid50k_full` is the FID of 50,000 generated images against the statistics
//! of the full dataset; `pr50k3_full` precision and recall with k = 3 over
//! 50,000 generated and up to 50,000 real images. With a detector other than
//! Inception-v3 the values are reported as proxies (`proxy-FID`).

use std::time::Instant;

use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::metrics::detector::{FeatureDetector, generator_features};
use crate::metrics::fid::{FeatureStats, frechet_distance};
use crate::metrics::precision_recall::precision_recall;
use crate::traits::Generator;

/// One metric of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Metric {
    /// FID of `num` generated images against the reference statistics.
    Fid { num: usize },
    /// Precision and recall with `k` neighbours over `num` images of each side.
    PrecisionRecall { num: usize, k: i64 },
}

impl Metric {
    /// Parses `fid{N}k_full` or `pr{N}k{K}_full` (N in thousands).
    pub fn parse(name: &str) -> Result<Self> {
        let bad = || {
            Error::config("metrics.list", format!("unknown metric `{name}` (fid50k_full, fid10k_full, pr50k3_full, …)"))
        };
        let body = name.strip_suffix("_full").ok_or_else(bad)?;
        if let Some(rest) = body.strip_prefix("fid") {
            let thousands: usize = rest.strip_suffix('k').and_then(|n| n.parse().ok()).ok_or_else(bad)?;
            return Ok(Metric::Fid { num: thousands * 1000 });
        }
        if let Some(rest) = body.strip_prefix("pr") {
            let (n, k) = rest.split_once('k').ok_or_else(bad)?;
            let (thousands, k): (usize, i64) = (n.parse().map_err(|_| bad())?, k.parse().map_err(|_| bad())?);
            return Ok(Metric::PrecisionRecall { num: thousands * 1000, k });
        }
        Err(bad())
    }
}

/// Computes the configured metrics of a generator.
pub struct MetricsRunner {
    metrics: Vec<(String, Metric)>,
    detector: Box<dyn FeatureDetector>,
    reference: FeatureStats,
    /// Real features, for precision/recall.
    real_features: Option<Tensor>,
    batch: usize,
    seed: u64,
    device: Device,
}

impl MetricsRunner {
    /// A runner for `names` with `detector`, the reference statistics and,
    /// when a precision/recall metric is listed, real features.
    pub fn new(
        names: &[String],
        detector: Box<dyn FeatureDetector>,
        reference: FeatureStats,
        real_features: Option<Tensor>,
        batch: usize,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        let metrics = names.iter().map(|n| Metric::parse(n).map(|m| (n.clone(), m))).collect::<Result<Vec<_>>>()?;
        if metrics.iter().any(|(_, m)| matches!(m, Metric::PrecisionRecall { .. })) && real_features.is_none() {
            return Err(Error::config("metrics.list", "precision/recall needs real images: give the config a dataset"));
        }
        Ok(MetricsRunner { metrics, detector, reference, real_features, batch, seed, device })
    }

    /// Whether any metric is configured.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// Evaluates every metric; one JSON object per metric.
    pub fn evaluate(&self, generator: &dyn Generator) -> Result<Vec<serde_json::Value>> {
        let largest = self.metrics.iter().map(|(_, m)| match m {
            Metric::Fid { num } | Metric::PrecisionRecall { num, .. } => *num,
        });
        let Some(num) = largest.max() else { return Ok(Vec::new()) };
        let started = Instant::now();
        let features = generator_features(generator, self.detector.as_ref(), num, self.batch, self.seed, self.device)?;
        let generation_s = started.elapsed().as_secs_f64();
        let label = if self.detector.is_proxy() { "proxy-FID" } else { "FID" };
        let mut results = Vec::new();
        for (name, metric) in &self.metrics {
            let started = Instant::now();
            let value = match metric {
                Metric::Fid { num } => {
                    let stats = FeatureStats::from_features(&features.narrow(0, 0, *num as i64))?;
                    serde_json::json!({ label: frechet_distance(&stats, &self.reference)? })
                }
                Metric::PrecisionRecall { num, k } => {
                    let real = self.real_features.as_ref().expect("checked in new");
                    let n_real = (*num as i64).min(real.size()[0]);
                    let (precision, recall) =
                        precision_recall(&real.narrow(0, 0, n_real), &features.narrow(0, 0, *num as i64), *k)?;
                    serde_json::json!({ "precision": precision, "recall": recall })
                }
            };
            results.push(serde_json::json!({
                "metric": name,
                "results": value,
                "detector": self.detector.name(),
                "seconds": generation_s + started.elapsed().as_secs_f64(),
            }));
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metric_names() {
        assert_eq!(Metric::parse("fid50k_full").unwrap(), Metric::Fid { num: 50000 });
        assert_eq!(Metric::parse("pr10k3_full").unwrap(), Metric::PrecisionRecall { num: 10000, k: 3 });
        assert!(Metric::parse("fid50k").unwrap_err().to_string().contains("fid50k"));
        assert!(Metric::parse("is50k_full").is_err());
    }
}
