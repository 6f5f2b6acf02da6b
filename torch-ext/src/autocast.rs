//! Automatic mixed precision, as `torch.autocast(device_type, dtype)`:
//! inside a region, matrix products and convolutions run in a lower
//! precision (their inputs cast on the fly, weights' casts cached for the
//! region) while precision-sensitive ops stay in float32. The state is
//! libtorch's and per thread: a guard covers the thread that creates it.

use std::ffi::{c_char, c_int};

use tch::{Device, Kind};

use crate::{Error, checked};

unsafe extern "C" {
    fn difi_ext_autocast_state(
        device: c_int,
        enabled: *mut bool,
        dtype: *mut c_int,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn difi_ext_autocast_enter(device: c_int, enabled: bool, dtype: c_int, error: *mut c_char, len: usize) -> c_int;
    fn difi_ext_autocast_exit(
        device: c_int,
        was_enabled: bool,
        was_dtype: c_int,
        error: *mut c_char,
        len: usize,
    ) -> c_int;
    fn difi_ext_autocast_clear_cache(error: *mut c_char, len: usize) -> c_int;
}

fn device_code(device: Device) -> c_int {
    if device.is_cuda() { 1 } else { 0 }
}

fn dtype_code(operation: &'static str, kind: Kind) -> Result<c_int, Error> {
    match kind {
        Kind::BFloat16 => Ok(0),
        Kind::Half => Ok(1),
        other => Err(Error::invalid(operation, format!("autocast runs in bfloat16 or float16, not {other:?}"))),
    }
}

/// Whether autocast is on for `device`'s type on this thread, and its dtype
/// (`None` when it is neither bfloat16 nor float16).
pub fn state(device: Device) -> Result<(bool, Option<Kind>), Error> {
    let (mut enabled, mut dtype) = (false, 0);
    // SAFETY: both out-pointers point at live locals.
    checked("autocast_state", |error, len| unsafe {
        difi_ext_autocast_state(device_code(device), &mut enabled, &mut dtype, error, len)
    })?;
    let kind = match dtype {
        0 => Some(Kind::BFloat16),
        1 => Some(Kind::Half),
        _ => None,
    };
    Ok((enabled, kind))
}

/// Forgets the casts of weights that autocast cached on this thread. A
/// region keeps the lower-precision copy of each weight it cast (a leaf
/// that requires grad) until the outermost region ends, so when weights
/// change in place inside one region (an optimiser step between two
/// forward passes), call this before the next forward, or it would run on
/// the copy of the old weights.
pub fn clear_cache() -> Result<(), Error> {
    // SAFETY: no arguments besides the buffer from `checked`.
    checked("autocast_clear_cache", |error, len| unsafe { difi_ext_autocast_clear_cache(error, len) })
}

/// An autocast region on this thread; leaving it (dropping the guard)
/// restores what was in effect before. Guards nest.
#[must_use = "autocast ends when the guard is dropped"]
pub struct AutocastGuard {
    device: c_int,
    was_enabled: bool,
    was_dtype: c_int,
}

impl AutocastGuard {
    /// Autocast to `kind` (bfloat16 or float16) for `device`'s type.
    pub fn enable(device: Device, kind: Kind) -> Result<Self, Error> {
        Self::enter(device, true, dtype_code("autocast", kind)?)
    }

    /// Autocast off for `device`'s type (inside an enabled region: the
    /// backward pass, which PyTorch advises running outside autocast).
    pub fn suspend(device: Device) -> Result<Self, Error> {
        let (_, kind) = state(device)?;
        Self::enter(device, false, kind.map_or(0, |k| dtype_code("autocast", k).unwrap_or(0)))
    }

    fn enter(device: Device, enabled: bool, dtype: c_int) -> Result<Self, Error> {
        let (was_enabled, was_kind) = state(device)?;
        let was_dtype = match was_kind {
            Some(Kind::BFloat16) => 0,
            Some(_) => 1,
            None => 2,
        };
        let device = device_code(device);
        // SAFETY: plain values; the buffer comes from `checked`.
        checked("autocast_enter", |error, len| unsafe { difi_ext_autocast_enter(device, enabled, dtype, error, len) })?;
        Ok(AutocastGuard { device, was_enabled, was_dtype })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: plain values; the buffer comes from `checked`.
        let restored = checked("autocast_exit", |error, len| unsafe {
            difi_ext_autocast_exit(self.device, self.was_enabled, self.was_dtype, error, len)
        });
        debug_assert!(restored.is_ok(), "{restored:?}");
    }
}

#[cfg(test)]
mod tests {
    use tch::Tensor;

    use super::*;

    #[test]
    fn a_weight_changed_in_place_is_cast_afresh_only_after_the_cache_is_cleared() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let x = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
        let weight = Tensor::randn([8, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let _autocast = AutocastGuard::enable(Device::Cpu, Kind::BFloat16).expect("enter");
        let before = x.matmul(&weight);
        tch::no_grad(|| {
            let mut w = weight.shallow_clone();
            let _ = w.g_add_scalar_(1.0);
        });
        let stale = x.matmul(&weight);
        assert!(stale.equal(&before), "libtorch reuses the cached cast within a region");
        clear_cache().unwrap();
        let fresh = x.matmul(&weight);
        assert!(!fresh.equal(&before), "after clearing, the new weights are cast");
        let expected = x.to_kind(Kind::BFloat16).matmul(&weight.detach().to_kind(Kind::BFloat16));
        assert!(fresh.equal(&expected));
    }

    #[test]
    fn matrix_products_run_in_bfloat16_inside_the_region_only() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        {
            let _autocast = AutocastGuard::enable(Device::Cpu, Kind::BFloat16).expect("enter");
            assert_eq!(state(Device::Cpu).unwrap(), (true, Some(Kind::BFloat16)));
            let product = a.matmul(&b);
            assert_eq!(product.kind(), Kind::BFloat16);
            let exact = a.to_kind(Kind::Double).matmul(&b.to_kind(Kind::Double));
            let error = (product.to_kind(Kind::Double) - &exact).abs().max().double_value(&[]);
            assert!(error < 0.1 * exact.abs().max().double_value(&[]), "bf16 error {error}");
            {
                let _suspended = AutocastGuard::suspend(Device::Cpu).expect("suspend");
                assert!(!state(Device::Cpu).unwrap().0);
                assert_eq!(a.matmul(&b).kind(), Kind::Float);
            }
            assert!(state(Device::Cpu).unwrap().0, "the outer region resumes");
        }
        assert!(!state(Device::Cpu).unwrap().0);
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
    }

    #[test]
    fn only_half_precisions_autocast() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        assert!(AutocastGuard::enable(Device::Cpu, Kind::Float).is_err());
        assert!(!state(Device::Cpu).unwrap().0);
    }
}
