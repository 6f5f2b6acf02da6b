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
