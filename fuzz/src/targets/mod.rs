//! The fuzz targets: each feeds raw bytes to one reader of untrusted files
//! and says how it went. A clean refusal is the expected answer to most
//! mutated inputs; a panic (caught by the campaign) or a libtorch error
//! (a reader's checks let the input reach libtorch) is a finding.

mod dataset_archive;
mod npy;
mod npz;
mod pickle;
mod ron_config;
mod safetensors;
mod torch_legacy;
mod torch_persistence;

use std::path::{Path, PathBuf};

/// How one input went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The reader accepted the input.
    Accepted,
    /// The reader refused it with an error: what it should do.
    Refused(String),
    /// The reader returned an error it should not have (a finding).
    Suspicious(String),
}

impl Verdict {
    /// Judges a difi result: a libtorch error means a check is missing.
    pub fn of<T>(result: difi_core::error::Result<T>) -> Self {
        match result {
            Ok(_) => Verdict::Accepted,
            Err(err @ difi_core::error::Error::Torch { .. }) => {
                Verdict::Suspicious(format!("libtorch refused what the reader let through: {err}"))
            }
            Err(err) => Verdict::Refused(err.to_string()),
        }
    }

    /// Judges a result whose error is a plain message.
    pub fn of_message<T, E: std::fmt::Display>(result: Result<T, E>) -> Self {
        match result {
            Ok(_) => Verdict::Accepted,
            Err(err) => Verdict::Refused(err.to_string()),
        }
    }

    /// The worse of two verdicts (an input may be tried several ways).
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (s @ Verdict::Suspicious(_), _) | (_, s @ Verdict::Suspicious(_)) => s,
            (Verdict::Accepted, _) | (_, Verdict::Accepted) => Verdict::Accepted,
            (refused, _) => refused,
        }
    }
}

/// A fuzz target.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&[u8]) -> Verdict,
}

impl Target {
    /// `fuzz/corpus/<name>/`: small valid inputs to start from.
    pub fn corpus_dir(&self) -> PathBuf {
        crate::crate_dir().join("corpus").join(self.name)
    }

    /// `fuzz/regressions/<name>/`: inputs that once crashed or were hostile, replayed by the tests.
    pub fn regressions_dir(&self) -> PathBuf {
        crate::crate_dir().join("regressions").join(self.name)
    }
}

/// Every target, in the order `--list` shows them.
pub const TARGETS: &[Target] = &[
    Target { name: "pickle", about: "formats::pickle::parse on raw bytes", run: pickle::run },
    Target {
        name: "torch_legacy",
        about: "torch legacy storages, and tensors rebuilt from a pickle",
        run: torch_legacy::run,
    },
    Target {
        name: "torch_persistence",
        about: "a network pickle read as EDM's `convert edm` reads it",
        run: torch_persistence::run,
    },
    Target { name: "npy", about: "formats::npy::parse of an .npy file", run: npy::run },
    Target { name: "npz", about: "formats::npz::parse_npz of an .npz archive", run: npz::run },
    Target { name: "safetensors", about: "formats::weights::load of a teacher/weights file", run: safetensors::run },
    Target { name: "ron_config", about: "a run config parsed and resolved as `difi check` does", run: ron_config::run },
    Target {
        name: "dataset_archive",
        about: "a dataset ZIP opened and decoded, or one PNG image (difi-datasets)",
        run: dataset_archive::run,
    },
];

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// A private scratch directory of this process, for targets that read files.
pub(crate) fn scratch_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("difi-fuzz-{}", std::process::id()));
        // A failure here shows up as an I/O refusal of every input, which the seed check reports.
        let _ = std::fs::create_dir_all(&dir);
        dir
    })
}

/// Removes this process's scratch directory (best effort: it only holds the last input).
pub fn remove_scratch_dir() {
    let _ = std::fs::remove_dir_all(scratch_dir());
}

/// The origin reported in errors of in-memory targets.
pub(crate) fn origin() -> &'static Path {
    Path::new("fuzz-input")
}
