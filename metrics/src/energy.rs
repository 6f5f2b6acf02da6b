//! Energy distance (Székely & Rizzo) between two sample sets of vectors:
//! `2 E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖`, zero only for equal distributions.
//! Used to compare a distilled generator with exact teacher samples.

use tch::{Kind, Tensor};

use difi_core::error::{Error, Result, TorchContext};

const CHUNK: i64 = 1024;

/// Energy distance between `a` `[N, D]` and `b` `[M, D]`, with V-statistics
/// (every pair, the zero self-distances included), in float64.
pub fn energy_distance(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (sa, sb) = (a.size(), b.size());
    if sa.len() != 2 || sb.len() != 2 || sa[1] != sb[1] {
        return Err(Error::Shape { what: "energy distance inputs [N, D] and [M, D]".into(), expected: sa, actual: sb });
    }
    let a = a.f_to_kind(Kind::Double).ctx("energy distance")?;
    let b = b.f_to_kind(Kind::Double).ctx("energy distance")?;
    Ok(2.0 * mean_distance(&a, &b)? - mean_distance(&a, &a)? - mean_distance(&b, &b)?)
}

/// Mean Euclidean distance `E‖X − Y‖` over all pairs of rows of `a` `[N, D]`
/// and `b` `[M, D]`, a chunk of rows at a time (the scale of an energy distance).
pub fn mean_distance(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.f_to_kind(Kind::Double).ctx("mean distance")?;
    let b = b.f_to_kind(Kind::Double).ctx("mean distance")?;
    let (a, b) = (&a, &b);
    let n = a.size()[0];
    let mut total = 0.0;
    let mut start = 0;
    while start < n {
        let len = CHUNK.min(n - start);
        let rows = a.f_narrow(0, start, len).ctx("energy distance")?;
        let distances =
            Tensor::f_cdist(&rows.unsqueeze(0), &b.unsqueeze(0), 2.0, None::<i64>).ctx("energy distance")?;
        total += distances.f_sum(Kind::Double).ctx("energy distance")?.f_double_value(&[]).ctx("energy distance")?;
        start += len;
    }
    Ok(total / (n as f64 * b.size()[0] as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn matches_a_hand_computed_value() {
        // a = {0, 2}, b = {1} on a line: 2·1 − (0+2+2+0)/4 − 0 = 1.
        let a = Tensor::from_slice(&[0.0f64, 2.0]).reshape([2, 1]);
        let b = Tensor::from_slice(&[1.0f64]).reshape([1, 1]);
        assert!((energy_distance(&a, &b).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn separates_shifted_distributions() {
        tch::manual_seed(0);
        let x = Tensor::randn([3000, 2], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([3000, 2], (Kind::Float, Device::Cpu));
        let same = energy_distance(&x, &y).unwrap();
        let shifted = energy_distance(&x, &(y + 0.5)).unwrap();
        assert!(same < 0.01 && shifted > 0.1, "{same} {shifted}");
    }
}
