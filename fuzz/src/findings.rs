//! Inputs that crash, panic or hang a target, kept as
//! `fuzz/findings/<target>-<hash>` (the input) and `….txt` (what happened).
//! Once fixed, a finding moves to `fuzz/regressions/<target>/` and is
//! replayed by the tests from then on.

use std::path::{Path, PathBuf};

/// FNV-1a: a stable name for an input's bytes.
pub fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// `fuzz/findings/`.
pub fn default_dir() -> PathBuf {
    crate::crate_dir().join("findings")
}

/// Writes `input` and `description` for `target` under `dir`; returns the input's path.
pub fn record(dir: &Path, target: &str, input: &[u8], description: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{target}-{:016x}", hash(input)));
    std::fs::write(&path, input)?;
    std::fs::write(path.with_extension("txt"), format!("{description}\n"))?;
    Ok(path)
}
