//! Exponential moving averages of trained parts, as EDM keeps them:
//! `ema ← β·ema + (1−β)·θ` with β from a half-life in kimg and an optional
//! ramp-up that shortens the half-life early in training.

use difi_core::error::{Error, Result, TorchContext};
use tch::Tensor;

/// β for one iteration of `batch` samples after `nimg` samples, given the
/// half-life in kimg and EDM's ramp-up ratio (the half-life is at most
/// `ratio × nimg`).
pub fn ema_beta(halflife_kimg: f64, rampup_ratio: Option<f64>, nimg: u64, batch: i64) -> f64 {
    let mut halflife_nimg = halflife_kimg * 1000.0;
    if let Some(ratio) = rampup_ratio {
        halflife_nimg = halflife_nimg.min(nimg as f64 * ratio);
    }
    if halflife_nimg > 0.0 { 0.5f64.powf(batch as f64 / halflife_nimg) } else { 0.0 }
}

/// The variables of an EMA part and, at the same index, those of its source
/// (kept as two lists, the form the multi-tensor update takes).
pub struct Ema {
    averages: Vec<Tensor>,
    sources: Vec<Tensor>,
}

impl Ema {
    /// Pairs `ema` with `source` by name (both shallow clones of the
    /// networks' variables), and copies the source's values into the EMA.
    /// `what` names the EMA part in errors.
    pub fn new(ema: &[(String, Tensor)], source: &[(String, Tensor)], what: &str) -> Result<Self> {
        let (mut averages, mut sources) = (Vec::with_capacity(ema.len()), Vec::with_capacity(ema.len()));
        for (name, ema_var) in ema {
            let live = source.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or_else(|| {
                Error::config(what, format!("the EMA copy has variable `{name}` that its source lacks"))
            })?;
            averages.push(ema_var.shallow_clone());
            sources.push(live.shallow_clone());
        }
        if averages.len() != source.len() {
            return Err(Error::config(what, "the EMA copy lacks variables of its source"));
        }
        let _guard = tch::no_grad_guard();
        for (average, live) in averages.iter().zip(&sources) {
            average.shallow_clone().f_copy_(live).ctx("initialise the EMA")?;
        }
        Ok(Ema { averages, sources })
    }

    /// `ema ← β·ema + (1−β)·θ`, every tensor in one multi-tensor call.
    pub fn update(&self, beta: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        difi_torch_ext::multi_tensor::foreach_lerp(&self.averages, &self.sources, 1.0 - beta)
            .map_err(|e| difi_core::error::Error::Plugin { plugin: "ema update".into(), message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_follows_the_half_life_and_the_ramp_up() {
        // One half-life's worth of samples halves the weight of the past.
        assert!((ema_beta(1.0, None, 0, 1000) - 0.5).abs() < 1e-12);
        // Ramp-up: after 1000 samples with ratio 0.1 the half-life is 100 samples.
        assert!((ema_beta(10.0, Some(0.1), 1000, 100) - 0.5).abs() < 1e-12);
        assert_eq!(ema_beta(0.0, None, 0, 10), 0.0);
    }
}
