//! The CUDA caching allocator's statistics (`torch.cuda.max_memory_allocated`
//! and friends): what tensors hold, not what the driver reports for the
//! whole device, so peaks can be attributed to parts of an iteration.

use std::ffi::{c_char, c_int};

use crate::{Error, checked};

unsafe extern "C" {
    fn difi_ext_cuda_memory(
        device: c_int,
        allocated: *mut i64,
        peak_allocated: *mut i64,
        reserved: *mut i64,
        peak_reserved: *mut i64,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn difi_ext_cuda_reset_peak(device: c_int, error: *mut c_char, error_len: usize) -> c_int;
}

/// One CUDA device's allocator statistics, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CudaMemory {
    /// Held by tensors now.
    pub allocated: i64,
    /// The most held by tensors since the last [`reset_cuda_peak`].
    pub peak_allocated: i64,
    /// Reserved from the driver by the caching allocator now.
    pub reserved: i64,
    /// The most reserved since the last reset.
    pub peak_reserved: i64,
}

/// The statistics of CUDA device `index`; all zero before its first
/// allocation. Fails where libtorch has no CUDA allocator (no CUDA build or
/// no driver).
pub fn cuda_memory(index: usize) -> Result<CudaMemory, Error> {
    let mut m = CudaMemory::default();
    // SAFETY: the four out-pointers point at fields of a live local.
    checked("cuda_memory", |error, len| unsafe {
        difi_ext_cuda_memory(
            index as c_int,
            &mut m.allocated,
            &mut m.peak_allocated,
            &mut m.reserved,
            &mut m.peak_reserved,
            error,
            len,
        )
    })?;
    Ok(m)
}

/// Starts the peaks of [`cuda_memory`] afresh from the current values.
pub fn reset_cuda_peak(index: usize) -> Result<(), Error> {
    // SAFETY: no pointers but the error buffer from `checked`.
    checked("reset_cuda_peak", |error, len| unsafe { difi_ext_cuda_reset_peak(index as c_int, error, len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_read_or_fail_cleanly() {
        match cuda_memory(0) {
            Ok(m) if tch::Cuda::is_available() => {
                let t = tch::Tensor::zeros([1 << 20], (tch::Kind::Float, tch::Device::Cuda(0)));
                let after = cuda_memory(0).unwrap();
                assert!(after.allocated >= m.allocated + (4 << 20), "{m:?} then {after:?}");
                assert!(after.peak_allocated >= after.allocated);
                drop(t);
                reset_cuda_peak(0).unwrap();
                let reset = cuda_memory(0).unwrap();
                assert_eq!(reset.peak_allocated, reset.allocated);
            }
            Ok(m) => assert_eq!(m, CudaMemory::default(), "no CUDA: nothing allocated"),
            Err(e) => assert!(!tch::Cuda::is_available(), "CUDA is available but: {e}"),
        }
    }
}
