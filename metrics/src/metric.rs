//! The metrics a run or `difi fid` computes, by their StyleGAN2-ADA/EDM
//! names: `fid50k_full` is the FID of 50,000 generated images against the
//! statistics of the full dataset; `pr50k3_full` precision and recall with
//! k = 3 over 50,000 generated and up to 50,000 real images. Parsed once,
//! where the name is read.

use std::fmt;
use std::str::FromStr;

use difi_core::error::InvalidValue;
use serde::{Deserialize, Serialize};

/// One metric; written by its name in configs and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Metric {
    /// FID of `num` generated images against the reference statistics.
    Fid { num: usize },
    /// Precision and recall with `k` neighbours over `num` images of each side.
    PrecisionRecall { num: usize, k: i64 },
}

impl Metric {
    /// Generated images the metric needs.
    pub fn num_images(&self) -> usize {
        match self {
            Metric::Fid { num } | Metric::PrecisionRecall { num, .. } => *num,
        }
    }

    /// Whether the metric needs real images (not only reference statistics).
    pub fn needs_real_images(&self) -> bool {
        matches!(self, Metric::PrecisionRecall { .. })
    }
}

impl FromStr for Metric {
    type Err = InvalidValue;

    /// Parses `fid{N}k_full` or `pr{N}k{K}_full` (N in thousands).
    fn from_str(name: &str) -> Result<Self, InvalidValue> {
        let bad = || InvalidValue(format!("unknown metric `{name}` (fid50k_full, fid10k_full, pr50k3_full, …)"));
        let body = name.strip_suffix("_full").ok_or_else(bad)?;
        if let Some(rest) = body.strip_prefix("fid") {
            let thousands: usize = rest.strip_suffix('k').and_then(|n| n.parse().ok()).ok_or_else(bad)?;
            return Ok(Metric::Fid { num: samples(thousands).ok_or_else(bad)? });
        }
        if let Some(rest) = body.strip_prefix("pr") {
            let (n, k) = rest.split_once('k').ok_or_else(bad)?;
            let (thousands, k): (usize, i64) = (n.parse().map_err(|_| bad())?, k.parse().map_err(|_| bad())?);
            if k < 1 {
                return Err(bad());
            }
            return Ok(Metric::PrecisionRecall { num: samples(thousands).ok_or_else(bad)?, k });
        }
        Err(bad())
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Fid { num } => write!(f, "fid{}k_full", num / 1000),
            Metric::PrecisionRecall { num, k } => write!(f, "pr{}k{k}_full", num / 1000),
        }
    }
}

impl TryFrom<String> for Metric {
    type Error = InvalidValue;

    fn try_from(text: String) -> Result<Self, InvalidValue> {
        text.parse()
    }
}

impl From<Metric> for String {
    fn from(value: Metric) -> String {
        value.to_string()
    }
}

/// Most samples a metric may ask for (EDM's largest is 50k).
pub const MAX_METRIC_SAMPLES: usize = 10_000_000;

/// `thousands × 1000` when that is a sample count a metric can use.
fn samples(thousands: usize) -> Option<usize> {
    thousands.checked_mul(1000).filter(|&n| n > 0 && n <= MAX_METRIC_SAMPLES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_metric_names() {
        assert_eq!("fid50k_full".parse::<Metric>().unwrap(), Metric::Fid { num: 50000 });
        assert_eq!("pr10k3_full".parse::<Metric>().unwrap(), Metric::PrecisionRecall { num: 10000, k: 3 });
        assert_eq!(Metric::PrecisionRecall { num: 10000, k: 3 }.to_string(), "pr10k3_full");
        assert!("fid50k".parse::<Metric>().unwrap_err().to_string().contains("fid50k"));
        assert!("is50k_full".parse::<Metric>().is_err());
        assert!("fid0k_full".parse::<Metric>().is_err());
        assert!("fid4294967296294967296k_full".parse::<Metric>().is_err(), "thousands × 1000 overflows");
        assert!("pr10001k3_full".parse::<Metric>().is_err(), "more than MAX_METRIC_SAMPLES");
    }
}
