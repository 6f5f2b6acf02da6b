//! Improved precision and recall (Kynkäänniemi et al. 2019) from features:
//! each set's manifold is the union of balls reaching every sample's k-th
//! nearest neighbour in its own set; precision is the share of generated
//! samples inside the real manifold, recall the share of real samples inside
//! the generated one.

use tch::{Kind, Tensor};

use difi_core::error::{Result, TorchContext};

const ROWS: i64 = 1024;

/// Distance from each row of `a` to its k-th nearest neighbour in `a` (itself excluded).
fn kth_neighbour_radii(a: &Tensor, k: i64) -> Result<Tensor> {
    let n = a.size()[0];
    let mut radii = Vec::new();
    let mut start = 0;
    while start < n {
        let len = ROWS.min(n - start);
        let rows = a.f_narrow(0, start, len).ctx("radii")?;
        let d = Tensor::f_cdist(&rows, a, 2.0, None::<i64>).ctx("radii")?;
        // The zero distance to itself is the first neighbour.
        let (values, _) = d.f_kthvalue(k + 1, 1, false).ctx("radii")?;
        radii.push(values);
        start += len;
    }
    Tensor::f_cat(&radii, 0).ctx("radii")
}

/// Share of `probes` within `radii[i]` of some `manifold[i]`.
fn coverage(probes: &Tensor, manifold: &Tensor, radii: &Tensor) -> Result<f64> {
    let n = probes.size()[0];
    let mut inside = 0i64;
    let mut start = 0;
    while start < n {
        let len = ROWS.min(n - start);
        let rows = probes.f_narrow(0, start, len).ctx("coverage")?;
        let d = Tensor::f_cdist(&rows, manifold, 2.0, None::<i64>).ctx("coverage")?;
        let hit = d.f_le_tensor(&radii.unsqueeze(0)).ctx("coverage")?.f_any_dim(1, false).ctx("coverage")?;
        inside += hit.f_sum(Kind::Int64).ctx("coverage")?.f_int64_value(&[]).ctx("coverage")?;
        start += len;
    }
    Ok(inside as f64 / n as f64)
}

/// `(precision, recall)` of generated features `[M, D]` against real features `[N, D]`.
pub fn precision_recall(real: &Tensor, generated: &Tensor, k: i64) -> Result<(f64, f64)> {
    let real = real.f_to_kind(Kind::Float).ctx("features")?;
    let generated = generated.f_to_kind(Kind::Float).ctx("features")?;
    let real_radii = kth_neighbour_radii(&real, k)?;
    let generated_radii = kth_neighbour_radii(&generated, k)?;
    Ok((coverage(&generated, &real, &real_radii)?, coverage(&real, &generated, &generated_radii)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_collapsed_generator_has_precision_but_no_recall() {
        tch::manual_seed(0);
        let real = Tensor::randn([2000, 4], (Kind::Float, Device::Cpu));
        let same = Tensor::randn([2000, 4], (Kind::Float, Device::Cpu));
        let (p, r) = precision_recall(&real, &same, 3).unwrap();
        assert!(p > 0.9 && r > 0.9, "{p} {r}");
        let collapsed = Tensor::randn([2000, 4], (Kind::Float, Device::Cpu)) * 0.05;
        let (p, r) = precision_recall(&real, &collapsed, 3).unwrap();
        assert!(p > 0.9 && r < 0.2, "{p} {r}");
    }
}
