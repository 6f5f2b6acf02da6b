//! Device selection and seeding.
//!
//! Randomness comes from libtorch's global generators, reseeded at every
//! iteration from `(seed, stream, index)`. A run is then reproducible from its
//! seed, and a resumed run draws exactly what the uninterrupted run would have
//! drawn without saving any generator state.

use tch::Device;

use crate::error::{Error, Result};

/// Parses a device name: `auto` (CUDA 0 when available, else CPU), `cpu`,
/// `cuda` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    let bad = || Error::config("device", format!("`{name}` is not a device; use auto, cpu, cuda or cuda:N"));
    let device = match name.trim() {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => {
            let index = other.strip_prefix("cuda:").ok_or_else(bad)?;
            Device::Cuda(index.parse().map_err(|_| bad())?)
        }
    };
    if let Device::Cuda(index) = device {
        let available = tch::Cuda::device_count();
        if index as i64 >= available {
            return Err(Error::config(
                "device",
                format!("`{name}` asked for CUDA device {index}, but {available} are available"),
            ));
        }
    }
    Ok(device)
}

/// Independent random streams of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Fake-score warm-up updates before the first generator update.
    FakeWarmup = 1,
    /// The alternating Diff-Instruct iterations.
    Iteration = 2,
    /// Initialisation of network weights.
    Init = 3,
    /// Sampling outside training.
    Sampling = 4,
}

/// A 63-bit seed derived from the run seed, a stream and an index
/// (splitmix64 over the three), so that nearby indices are unrelated.
pub fn derive_seed(seed: u64, stream: Stream, index: u64) -> i64 {
    let mut x = seed;
    for word in [stream as u64, index] {
        x = splitmix64(x ^ splitmix64(word));
    }
    (x >> 1) as i64
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Reseeds libtorch's CPU and CUDA generators for `(seed, stream, index)`.
pub fn reseed(seed: u64, stream: Stream, index: u64) {
    tch::manual_seed(derive_seed(seed, stream, index));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        if tch::Cuda::device_count() == 0 {
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
            let err = parse_device("cuda:0").unwrap_err().to_string();
            assert!(err.contains("0 are available"), "{err}");
        }
    }

    #[test]
    fn derived_seeds_differ_by_stream_and_index() {
        let a = derive_seed(0, Stream::Iteration, 0);
        assert_ne!(a, derive_seed(0, Stream::Iteration, 1));
        assert_ne!(a, derive_seed(0, Stream::FakeWarmup, 0));
        assert_ne!(a, derive_seed(1, Stream::Iteration, 0));
        assert_eq!(a, derive_seed(0, Stream::Iteration, 0));
        assert!(a >= 0);
    }
}

/// Memory in use on CUDA device `index`, in MiB, from NVIDIA's management
/// library (device-wide: libtorch's caching allocator holds what it has
/// reserved, so after some iterations this is the run's peak). `None` where
/// there is no NVML or no such device.
pub fn gpu_memory_used_mib(index: usize) -> Option<f64> {
    use std::ffi::c_void;
    #[repr(C)]
    struct Memory {
        total: u64,
        free: u64,
        used: u64,
    }
    type Init = unsafe extern "C" fn() -> i32;
    type Handle = unsafe extern "C" fn(u32, *mut *mut c_void) -> i32;
    type MemoryInfo = unsafe extern "C" fn(*mut c_void, *mut Memory) -> i32;
    static NVML: std::sync::OnceLock<Option<libloading::Library>> = std::sync::OnceLock::new();
    // SAFETY: NVML's documented C entry points with their documented
    // signatures; the library stays loaded for the process.
    unsafe {
        let library = NVML.get_or_init(|| libloading::Library::new("libnvidia-ml.so.1").ok()).as_ref()?;
        let init: libloading::Symbol<Init> = library.get(b"nvmlInit_v2\0").ok()?;
        if init() != 0 {
            return None;
        }
        let handle_of: libloading::Symbol<Handle> = library.get(b"nvmlDeviceGetHandleByIndex_v2\0").ok()?;
        let mut handle = std::ptr::null_mut();
        if handle_of(index as u32, &mut handle) != 0 {
            return None;
        }
        let memory_of: libloading::Symbol<MemoryInfo> = library.get(b"nvmlDeviceGetMemoryInfo\0").ok()?;
        let mut memory = Memory { total: 0, free: 0, used: 0 };
        if memory_of(handle, &mut memory) != 0 {
            return None;
        }
        Some(memory.used as f64 / (1024.0 * 1024.0))
    }
}

// libtorch's global context, which tch does not wrap. These are the C++
// symbols of `at::globalContext()` and two `at::Context` setters; on x86-64
// and aarch64 a member function taking `bool` is called like a C function
// whose first argument is `this`.
unsafe extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut std::ffi::c_void;
    #[link_name = "_ZN2at7Context17setAllowTF32CuDNNEb"]
    fn at_context_set_allow_tf32_cudnn(context: *mut std::ffi::c_void, allow: bool);
    #[link_name = "_ZN2at7Context18setAllowTF32CuBLASEb"]
    fn at_context_set_allow_tf32_cublas(context: *mut std::ffi::c_void, allow: bool);
}

/// Sets how CUDA runs float32 work, as EDM's training does: TF32 off (full
/// float32 precision in convolutions and matrix products) unless
/// `allow_tf32`, and cuDNN's autotuner on (the shapes of a run never change).
pub fn configure_cuda(allow_tf32: bool) {
    // SAFETY: libtorch's own global setters, callable at any time.
    unsafe {
        let context = at_global_context();
        at_context_set_allow_tf32_cudnn(context, allow_tf32);
        at_context_set_allow_tf32_cublas(context, allow_tf32);
    }
    tch::Cuda::cudnn_set_benchmark(true);
}
