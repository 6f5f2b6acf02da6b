//! Seeded random streams.
//!
//! Randomness comes from libtorch's global generators, reseeded before each
//! unit of work from `(seed, stream, index)`. A run is then reproducible from
//! its seed, and a resumed run draws exactly what the uninterrupted run would
//! have drawn, without saving any generator state.

/// Independent random streams of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RngStream {
    /// Warm-up updates before the first iteration (the fake score's, in Diff-Instruct).
    Warmup = 1,
    /// The training iterations.
    Iteration = 2,
    /// Initialisation of network weights.
    Init = 3,
    /// Sampling outside training.
    Sampling = 4,
}

/// A 63-bit seed derived from the run seed, a stream and an index
/// (splitmix64 over the three), so that nearby indices are unrelated.
pub fn derive_seed(seed: u64, stream: RngStream, index: u64) -> i64 {
    let mut x = seed;
    for word in [stream as u64, index] {
        x = splitmix64(x ^ splitmix64(word));
    }
    (x >> 1) as i64
}

/// A 63-bit seed derived from `seed` and `salt`, unrelated to either
/// (per-rank streams, for instance).
pub fn mix_seed(seed: i64, salt: u64) -> i64 {
    (splitmix64(splitmix64(seed as u64) ^ splitmix64(salt)) >> 1) as i64
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Reseeds libtorch's CPU and CUDA generators for `(seed, stream, index)`.
pub fn reseed(seed: u64, stream: RngStream, index: u64) {
    tch::manual_seed(derive_seed(seed, stream, index));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_stream_and_index() {
        let a = derive_seed(0, RngStream::Iteration, 0);
        assert_ne!(a, derive_seed(0, RngStream::Iteration, 1));
        assert_ne!(a, derive_seed(0, RngStream::Warmup, 0));
        assert_ne!(a, derive_seed(1, RngStream::Iteration, 0));
        assert_eq!(a, derive_seed(0, RngStream::Iteration, 0));
        assert!(a >= 0);
    }
}
