//! How close samples are to a Gaussian-mixture teacher, measured against the
//! teacher's exact samples: mode shares, per-mode spread and energy distance.

use difi_core::error::{Result, TorchContext};
use difi_metrics::{energy_distance, mean_distance};
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::toy::gmm::Gmm;

/// Quality of samples from a distilled generator against its `gmm` teacher.
#[derive(Clone, Debug, Serialize)]
pub struct GmmReport {
    /// Number of samples compared.
    pub samples: i64,
    /// Fraction of samples whose most likely component is k.
    pub shares: Vec<f64>,
    /// The teacher's (normalised) weights.
    pub weights: Vec<f64>,
    /// Largest `|share − weight| / weight` over the modes.
    pub max_share_error: f64,
    /// Robust spread of each mode's samples: 1.4826 × median absolute
    /// deviation per coordinate, averaged (insensitive to the few samples
    /// between modes).
    pub spreads: Vec<f64>,
    /// The teacher's std per mode.
    pub stds: Vec<f64>,
    /// Energy distance between the samples and exact teacher samples.
    pub energy_distance: f64,
    /// Energy distance between two independent exact sample sets of the same size.
    pub energy_distance_teacher: f64,
    /// E‖X − X′‖ over exact samples, the scale of the energy distances.
    pub teacher_scale: f64,
    /// `(energy_distance − energy_distance_teacher) / teacher_scale`.
    pub energy_excess: f64,
}

impl GmmReport {
    /// Measures `samples` `[N, d]` against `gmm`, drawing 2N exact samples
    /// from libtorch's generator (seed it first for a reproducible report).
    pub fn measure(gmm: &Gmm, stds: &[f64], samples: &Tensor) -> Result<Self> {
        let n = samples.size()[0];
        let samples = samples.f_to_kind(Kind::Float).ctx("samples")?;
        let assigned = gmm.assign(&samples)?;
        let k = gmm.components() as i64;
        let counts = assigned.f_bincount(None::<Tensor>, k).ctx("mode counts")?;
        let mut shares = Vec::new();
        let mut spreads = Vec::new();
        for mode in 0..k {
            shares.push(counts.f_int64_value(&[mode]).ctx("mode counts")? as f64 / n as f64);
            let index = assigned.f_eq(mode).ctx("assign")?.f_nonzero().ctx("assign")?.f_squeeze_dim(1).ctx("assign")?;
            spreads.push(if index.size()[0] < 2 {
                0.0
            } else {
                let mine = samples.f_index_select(0, &index).ctx("mode samples")?;
                let (median, _) = mine.f_median_dim(0, true).ctx("median")?;
                let (mad, _) = (mine - median).f_abs().ctx("mad")?.f_median_dim(0, false).ctx("mad")?;
                1.4826 * mad.f_mean(Kind::Double).ctx("mad")?.f_double_value(&[]).ctx("mad")?
            });
        }
        let weights = gmm.weights().to_vec();
        let max_share_error = shares.iter().zip(&weights).map(|(s, w)| (s - w).abs() / w).fold(0.0, f64::max);
        let exact_a = gmm.sample(n)?;
        let exact_b = gmm.sample(n)?;
        let energy = energy_distance(&samples, &exact_a)?;
        let energy_teacher = energy_distance(&exact_b, &exact_a)?;
        let teacher_scale = mean_distance(&exact_a, &exact_b)?;
        Ok(GmmReport {
            samples: n,
            shares,
            weights,
            max_share_error,
            spreads,
            stds: stds.to_vec(),
            energy_distance: energy,
            energy_distance_teacher: energy_teacher,
            teacher_scale,
            energy_excess: (energy - energy_teacher) / teacher_scale,
        })
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let round = |v: &[f64]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(" ");
        format!(
            "mode shares   {}\nteacher       {}\nmax share error {:.1}%\nmode spreads  {}\nteacher stds  {}\n\
             energy distance {:.5} (two exact sample sets: {:.5}; excess {:.3}% of E|X-X'| = {:.3})",
            round(&self.shares),
            round(&self.weights),
            100.0 * self.max_share_error,
            round(&self.spreads),
            round(&self.stds),
            self.energy_distance,
            self.energy_distance_teacher,
            100.0 * self.energy_excess,
            self.teacher_scale,
        )
    }
}
