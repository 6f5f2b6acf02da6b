//! difi-fuzz: a mutation fuzzer on stable Rust for the readers of files that
//! users download from strangers (pickles, torch storages, npy/npz,
//! safetensors, RON configs, dataset archives and PNGs).
//!
//! | module | role |
//! | --- | --- |
//! | [`targets`] | one reader per target, and how its results are judged |
//! | [`rng`] | the deterministic generator behind every choice |
//! | [`mutate`] | byte-level mutations |
//! | [`campaign`] | the loop: mutate, run under `catch_unwind`, record findings |
//! | [`supervisor`] | runs a campaign in a child process, so crashes and hangs are caught too |
//! | [`memory_limit`] | `RLIMIT_AS`, so a huge allocation fails the run |
//! | [`findings`] | where inputs that crash or panic are written |

pub mod campaign;
pub mod findings;
pub mod memory_limit;
pub mod mutate;
pub mod rng;
pub mod supervisor;
pub mod targets;

use std::path::PathBuf;

/// `fuzz/` in the source tree: its corpus, regressions and findings live here.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
