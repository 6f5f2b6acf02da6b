//! Fréchet distance between feature distributions (FID when the features are
//! Inception-v3's), as EDM's `fid.py` computes it: statistics in float64 with
//! the unbiased covariance (`np.cov(rowvar=False)`), stored as `.npz` with
//! `mu` and `sigma`, and `|μ₁−μ₂|² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½)`.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use difi_core::error::{Error, Result, TorchContext};

/// Mean `[D]` and covariance `[D, D]` of features, float64 on the CPU.
pub struct FeatureStats {
    pub mu: Tensor,
    pub sigma: Tensor,
}

const CHUNK: i64 = 4096;

impl FeatureStats {
    /// Statistics of features `[N, D]` (N ≥ 2): the mean and the unbiased
    /// covariance, accumulated over centred chunks in float64.
    pub fn from_features(features: &Tensor) -> Result<Self> {
        let size = features.size();
        let [n, d] = size[..] else {
            return Err(Error::Shape { what: "features [N, D]".into(), expected: vec![-1, -1], actual: size });
        };
        if n < 2 {
            return Err(Error::config("features", format!("statistics need at least 2 samples, got {n}")));
        }
        let features = features.f_to_device(Device::Cpu).ctx("features")?.f_to_kind(Kind::Double).ctx("features")?;
        let mu = features.f_mean_dim(0, false, Kind::Double).ctx("mean")?;
        let mut sigma = Tensor::f_zeros([d, d], (Kind::Double, Device::Cpu)).ctx("covariance")?;
        let mut start = 0;
        while start < n {
            let len = CHUNK.min(n - start);
            let centred = features.f_narrow(0, start, len).ctx("covariance")? - &mu;
            sigma += centred.f_transpose(0, 1).ctx("covariance")?.f_matmul(&centred).ctx("covariance")?;
            start += len;
        }
        Ok(FeatureStats { mu, sigma: sigma / (n - 1) as f64 })
    }

    /// Reads an `.npz` with `mu` `[D]` and `sigma` `[D, D]` (EDM's reference files).
    pub fn load(path: &Path) -> Result<Self> {
        let arrays = difi_formats::npz::read_npz(path)?;
        let get = |name: &str| -> Result<Tensor> {
            let array = arrays.iter().find(|(n, _)| n == name).map(|(_, t)| t);
            let array = array.ok_or_else(|| {
                Error::checkpoint(path, format!("no `{name}` array (FID statistics hold mu and sigma)"))
            })?;
            array.f_to_kind(Kind::Double).ctx(name)
        };
        let (mu, sigma) = (get("mu")?, get("sigma")?);
        let d = mu.size().first().copied().unwrap_or(0);
        if mu.dim() != 1 || sigma.size() != [d, d] {
            return Err(Error::checkpoint(
                path,
                format!("`mu` {:?} and `sigma` {:?} are not [D] and [D, D]", mu.size(), sigma.size()),
            ));
        }
        Ok(FeatureStats { mu, sigma })
    }

    /// Writes `mu` and `sigma` as float64 `.npz` (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        difi_formats::npz::write_npz(path, &[("mu", &self.mu), ("sigma", &self.sigma)])
    }

    /// Feature dimension D.
    pub fn dim(&self) -> i64 {
        self.mu.size()[0]
    }
}

/// Eigenvalues below this are rounding noise (numpy's `matrix_rank`
/// tolerance: largest × dimension × machine epsilon) and count as zero, so a
/// rank-deficient covariance adds nothing along its null space.
fn noise_floor(values: &Tensor) -> Result<f64> {
    let largest =
        values.f_abs().ctx("eigenvalues")?.f_max().ctx("eigenvalues")?.f_double_value(&[]).ctx("eigenvalues")?;
    Ok(largest * values.size()[0] as f64 * f64::EPSILON)
}

/// Square roots of eigenvalues, those within the noise floor set to zero.
fn roots_of(values: &Tensor) -> Result<Tensor> {
    let floor = noise_floor(values)?;
    let kept = values.f_gt(floor).ctx("eigenvalues")?;
    values.f_clamp_min(0.0).ctx("sqrt")?.f_sqrt().ctx("sqrt")?.f_mul(&kept).ctx("sqrt")
}

/// `Σ^½` of a symmetric positive semi-definite matrix.
fn psd_sqrt(matrix: &Tensor) -> Result<Tensor> {
    let (values, vectors) = matrix.f_linalg_eigh("L").ctx("eigendecomposition")?;
    let roots = roots_of(&values)?;
    (&vectors * roots.unsqueeze(0)).f_matmul(&vectors.f_transpose(0, 1).ctx("sqrt")?).ctx("sqrt")
}

/// `|μ₁−μ₂|² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½)`. The trace of `(Σ₁Σ₂)^½` is taken as
/// `Σᵢ √λᵢ(Σ₁^½ Σ₂ Σ₁^½)`, which equals scipy's `sqrtm` result and stays real
/// and stable when covariances are rank-deficient or nearly equal.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim() != b.dim() {
        return Err(Error::Shape { what: "feature statistics".into(), expected: vec![a.dim()], actual: vec![b.dim()] });
    }
    let mean_term =
        (&a.mu - &b.mu).f_square().ctx("fid")?.f_sum(Kind::Double).ctx("fid")?.f_double_value(&[]).ctx("fid")?;
    let root_a = psd_sqrt(&a.sigma)?;
    let inner = root_a.f_matmul(&b.sigma).ctx("fid")?.f_matmul(&root_a).ctx("fid")?;
    let inner = (&inner + inner.f_transpose(0, 1).ctx("fid")?) * 0.5;
    let eigenvalues = inner.f_linalg_eigvalsh("L").ctx("eigenvalues")?;
    let trace_sqrt = roots_of(&eigenvalues)?.f_sum(Kind::Double).ctx("fid")?.f_double_value(&[]).ctx("fid")?;
    let trace = |s: &Tensor| s.f_trace().ctx("fid")?.f_double_value(&[]).ctx("fid");
    Ok(mean_term + trace(&a.sigma)? + trace(&b.sigma)? - 2.0 * trace_sqrt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_statistics_are_at_distance_zero_even_when_singular() {
        tch::manual_seed(0);
        // 5 samples in 20 dimensions: a rank-4 covariance.
        let x = Tensor::randn([5, 20], (Kind::Double, Device::Cpu));
        let stats = FeatureStats::from_features(&x).unwrap();
        let fid = frechet_distance(&stats, &stats).unwrap();
        assert!(fid.abs() < 1e-9, "{fid}");
    }

    #[test]
    fn gaussians_give_the_closed_form() {
        // N(0, I) vs N(m, 4I) in D dims: |m|² + D(1 + 4 − 2·2) = |m|² + D.
        let d = 8;
        let a = FeatureStats {
            mu: Tensor::zeros([d], (Kind::Double, Device::Cpu)),
            sigma: Tensor::eye(d, (Kind::Double, Device::Cpu)),
        };
        let b = FeatureStats {
            mu: Tensor::ones([d], (Kind::Double, Device::Cpu)),
            sigma: Tensor::eye(d, (Kind::Double, Device::Cpu)) * 4.0,
        };
        let fid = frechet_distance(&a, &b).unwrap();
        assert!((fid - (d as f64 + d as f64)).abs() < 1e-9, "{fid}");
    }
}
