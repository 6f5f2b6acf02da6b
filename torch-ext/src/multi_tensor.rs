//! Updates of whole tensor lists in one libtorch call: fused Adam and the
//! EMA's lerp. Per tensor, the equivalent tch code launches a dozen kernels
//! and allocates as many temporaries; these launch one fused kernel (CUDA)
//! or one vectorised loop (CPU) per list.

use std::ffi::c_char;
use std::os::raw::c_int;

use tch::Tensor;
use torch_sys::C_tensor;

use crate::{Error, checked};

unsafe extern "C" {
    fn difi_ext_fused_adam(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        steps: *const *mut C_tensor,
        count: usize,
        lr: f64,
        lr_tensor: *const C_tensor,
        found_inf: *const C_tensor,
        beta1: f64,
        beta2: f64,
        eps: f64,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn difi_ext_foreach_lerp(
        targets: *const *mut C_tensor,
        sources: *const *mut C_tensor,
        count: usize,
        weight: f64,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
}

fn handles(tensors: &[Tensor]) -> Vec<*mut C_tensor> {
    tensors.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

fn same_lengths(operation: &'static str, lengths: &[usize]) -> Result<(), Error> {
    if lengths.windows(2).all(|pair| pair[0] == pair[1]) {
        Ok(())
    } else {
        Err(Error::invalid(operation, format!("tensor lists of different lengths {lengths:?}")))
    }
}

/// The learning rate of a fused step.
#[derive(Clone, Copy, Debug)]
pub enum LearningRate<'a> {
    /// A number known on the host.
    Scalar(f64),
    /// A float32 scalar on the parameters' device (float64 also on the
    /// CPU), which the kernel reads there: a rate computed on the device
    /// needs no host read.
    Tensor(&'a Tensor),
}

/// One Adam step (PyTorch's `Adam(fused=True)`, no weight decay, no
/// AMSGrad) over parallel lists: `params` (updated in place), their `grads`,
/// the moments `exp_avgs` and `exp_avg_sqs` (updated), and `steps`, one
/// float32 scalar per parameter that the step increments and takes the bias
/// corrections from. All tensors share a device and dtype.
///
/// With `found_inf` (a float32 scalar on that device), the step is skipped
/// on the device where it holds 1: parameters, moments and steps stay as
/// they were, and the host never reads the flag (PyTorch's GradScaler path).
#[allow(clippy::too_many_arguments)]
pub fn fused_adam(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    steps: &[Tensor],
    lr: LearningRate<'_>,
    found_inf: Option<&Tensor>,
    betas: (f64, f64),
    eps: f64,
) -> Result<(), Error> {
    let lengths = [params.len(), grads.len(), exp_avgs.len(), exp_avg_sqs.len(), steps.len()];
    same_lengths("fused_adam", &lengths)?;
    let (p, g, m, v, t) = (handles(params), handles(grads), handles(exp_avgs), handles(exp_avg_sqs), handles(steps));
    let (lr_value, lr_tensor) = match lr {
        LearningRate::Scalar(value) => (value, std::ptr::null()),
        LearningRate::Tensor(tensor) => (0.0, tensor.as_ptr()),
    };
    let found_inf = found_inf.map_or(std::ptr::null(), |flag| flag.as_ptr());
    // SAFETY: every handle is a live tensor borrowed for the call (the
    // optional ones null or borrowed too); the arrays have `params.len()`
    // entries each (checked above).
    checked("fused_adam", |error, len| unsafe {
        difi_ext_fused_adam(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            t.as_ptr(),
            params.len(),
            lr_value,
            lr_tensor,
            found_inf,
            betas.0,
            betas.1,
            eps,
            error,
            len,
        )
    })
}

/// `targets[i] ← targets[i] + weight · (sources[i] − targets[i])` for every
/// `i`, in place (`torch._foreach_lerp_`).
pub fn foreach_lerp(targets: &[Tensor], sources: &[Tensor], weight: f64) -> Result<(), Error> {
    same_lengths("foreach_lerp", &[targets.len(), sources.len()])?;
    let (to, from) = (handles(targets), handles(sources));
    // SAFETY: live tensors borrowed for the call, equal counts (checked above).
    checked("foreach_lerp", |error, len| unsafe {
        difi_ext_foreach_lerp(to.as_ptr(), from.as_ptr(), targets.len(), weight, error, len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn randn(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn fused_adam_matches_the_adam_formula() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(0);
        let params = vec![randn(&[3, 4]), randn(&[7])];
        let grads = vec![randn(&[3, 4]), randn(&[7])];
        let reference: Vec<Tensor> = params.iter().map(|p| p.copy()).collect();
        let zeros = |ts: &[Tensor]| ts.iter().map(|t| t.zeros_like()).collect::<Vec<_>>();
        let (m, v) = (zeros(&params), zeros(&params));
        let steps: Vec<Tensor> = params.iter().map(|_| Tensor::zeros([], (Kind::Float, Device::Cpu))).collect();
        let (lr, b1, b2, eps) = (0.01, 0.9, 0.999, 1e-8);
        for _ in 0..3 {
            fused_adam(&params, &grads, &m, &v, &steps, LearningRate::Scalar(lr), None, (b1, b2), eps).unwrap();
        }
        for (i, p) in reference.iter().enumerate() {
            let (mut m, mut v, mut p) = (p.zeros_like(), p.zeros_like(), p.copy());
            for t in 1..=3 {
                m = &m * b1 + &grads[i] * (1.0 - b1);
                v = &v * b2 + grads[i].square() * (1.0 - b2);
                let denom = v.sqrt() / (1.0 - b2.powi(t)).sqrt() + eps;
                p = &p - (&m / denom) * (lr / (1.0 - b1.powi(t)));
            }
            let error = (&params[i] - &p).abs().max().double_value(&[]);
            assert!(error < 1e-6, "parameter {i}: {error}");
            assert_eq!(steps[i].double_value(&[]), 3.0);
        }
    }

    #[test]
    fn found_inf_skips_the_step_on_the_device_and_a_tensor_learning_rate_is_read_there() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(1);
        let fresh = || {
            let params = vec![randn(&[5]), randn(&[2, 3])];
            let zeros = |ts: &[Tensor]| ts.iter().map(|t| t.zeros_like()).collect::<Vec<_>>();
            let (m, v) = (zeros(&params), zeros(&params));
            let steps: Vec<Tensor> = params.iter().map(|_| Tensor::zeros([], (Kind::Float, Device::Cpu))).collect();
            (params, m, v, steps)
        };
        let grads = vec![randn(&[5]), randn(&[2, 3])];
        let flag = |value: f64| Tensor::from(value as f32);
        let (params, m, v, steps) = fresh();
        let before: Vec<Tensor> = params.iter().map(Tensor::copy).collect();
        fused_adam(&params, &grads, &m, &v, &steps, LearningRate::Scalar(0.1), Some(&flag(1.0)), (0.9, 0.99), 1e-8)
            .unwrap();
        for i in 0..2 {
            assert!(params[i].equal(&before[i]), "a flagged step changed parameter {i}");
            assert_eq!(m[i].abs().sum(Kind::Float).double_value(&[]), 0.0);
            assert_eq!(steps[i].double_value(&[]), 0.0, "a flagged step is not counted");
        }
        // Unflagged, with the rate as a tensor: the same as a plain step at that rate.
        let lr = 0.25_f32;
        fused_adam(
            &params,
            &grads,
            &m,
            &v,
            &steps,
            LearningRate::Tensor(&Tensor::from(lr)),
            Some(&flag(0.0)),
            (0.9, 0.99),
            1e-8,
        )
        .unwrap();
        let (plain, pm, pv, ps) = fresh();
        for (dst, src) in plain.iter().zip(&before) {
            dst.shallow_clone().copy_(src);
        }
        fused_adam(&plain, &grads, &pm, &pv, &ps, LearningRate::Scalar(f64::from(lr)), None, (0.9, 0.99), 1e-8)
            .unwrap();
        for i in 0..2 {
            assert!(params[i].equal(&plain[i]), "parameter {i} differs from the plain step");
            assert_eq!(steps[i].double_value(&[]), 1.0);
        }
        let wrong = Tensor::from(1.0_f64);
        let err =
            fused_adam(&params, &grads, &m, &v, &steps, LearningRate::Scalar(0.1), Some(&wrong), (0.9, 0.99), 1e-8)
                .unwrap_err();
        assert!(err.message().contains("found_inf"), "{err}");
    }

    #[test]
    fn foreach_lerp_moves_each_target_towards_its_source() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let targets =
            vec![Tensor::zeros([2], (Kind::Float, Device::Cpu)), Tensor::ones([3], (Kind::Float, Device::Cpu))];
        let sources =
            vec![Tensor::ones([2], (Kind::Float, Device::Cpu)), Tensor::zeros([3], (Kind::Float, Device::Cpu))];
        foreach_lerp(&targets, &sources, 0.25).unwrap();
        assert_eq!(targets[0].sum(Kind::Float).double_value(&[]), 0.5);
        assert_eq!(targets[1].sum(Kind::Float).double_value(&[]), 2.25);
    }

    #[test]
    fn mismatched_lists_and_devices_are_errors() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let one = vec![randn(&[2])];
        let err = foreach_lerp(&one, &[], 0.5).unwrap_err();
        assert!(err.message().contains("different lengths"), "{err}");
        let other_shape = vec![randn(&[3])];
        assert!(foreach_lerp(&one, &other_shape, 0.5).is_err());
    }
}
