//! The layout of a run directory:
//!
//! ```text
//! RUN/config.ron                      the resolved config the run used
//! RUN/stats.jsonl                     one JSON object per tick
//! RUN/metrics.jsonl                   one JSON object per metric and snapshot
//! RUN/snapshots/snapshot-ITERATION/   weights (safetensors) + training state
//! ```
//!
//! Snapshots are written into a hidden temporary directory and renamed into
//! place, so a crash never leaves a half-written snapshot that looks complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};
use difi_formats::atomic::write_atomically;

/// A run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

const SNAPSHOT_PREFIX: &str = "snapshot-";

impl RunDir {
    /// Creates a new run directory; an existing non-empty directory is refused
    /// so no earlier run is overwritten.
    pub fn create(root: &Path) -> Result<Self> {
        if root.exists() {
            let mut entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
            if entries.next().is_some() {
                let hint = if root.join("config.ron").exists() {
                    format!("it holds a run; continue it with --resume {}", root.display())
                } else {
                    "choose an empty or new directory".to_string()
                };
                return Err(Error::io(
                    root,
                    std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("not empty ({hint})")),
                ));
            }
        }
        std::fs::create_dir_all(root.join("snapshots")).map_err(|e| Error::io(root, e))?;
        Ok(RunDir { root: root.to_path_buf() })
    }

    /// Opens an existing run directory.
    pub fn open(root: &Path) -> Result<Self> {
        let run = RunDir { root: root.to_path_buf() };
        if !run.config_path().is_file() {
            return Err(Error::checkpoint(root, "not a run directory (no config.ron)"));
        }
        Ok(run)
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `RUN/config.ron`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.ron")
    }

    /// `RUN/stats.jsonl`.
    pub fn stats_path(&self) -> PathBuf {
        self.root.join("stats.jsonl")
    }

    /// `RUN/snapshots`.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Writes the resolved config (atomically).
    pub fn write_config(&self, text: &str) -> Result<()> {
        write_atomically(&self.config_path(), text.as_bytes())
    }

    /// `RUN/metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// `RUN/metrics-reference.npz`: reference statistics computed from the
    /// dataset once and kept for later snapshots and resumed sessions.
    pub fn metrics_reference_path(&self) -> PathBuf {
        self.root.join("metrics-reference.npz")
    }

    /// Appends one JSON object as a line of `stats.jsonl`.
    pub fn append_stats(&self, line: &serde_json::Value) -> Result<()> {
        append_line(&self.stats_path(), line)
    }

    /// Appends one JSON object as a line of `metrics.jsonl`.
    pub fn append_metrics(&self, line: &serde_json::Value) -> Result<()> {
        append_line(&self.metrics_path(), line)
    }

    /// Complete snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<PathBuf>> {
        let dir = self.snapshots_dir();
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(iteration) = name.strip_prefix(SNAPSHOT_PREFIX).and_then(|n| n.parse().ok()) {
                found.push((iteration, entry.path()));
            }
        }
        found.sort();
        Ok(found.into_iter().map(|(_, p)| p).collect())
    }

    /// The newest complete snapshot, if any.
    pub fn latest_snapshot(&self) -> Result<Option<PathBuf>> {
        Ok(self.snapshots()?.pop())
    }

    /// Writes a snapshot for `iteration`: `fill` writes its files into a
    /// temporary directory, which then replaces `snapshot-ITERATION`.
    pub fn write_snapshot(&self, iteration: u64, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let dir = self.snapshots_dir();
        let name = format!("{SNAPSHOT_PREFIX}{iteration:09}");
        let tmp = dir.join(format!(".{name}.tmp"));
        let target = dir.join(&name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        fill(&tmp)?;
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        }
        std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
        Ok(target)
    }
}

fn append_line(path: &Path, line: &serde_json::Value) -> Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(file, "{line}").map_err(|e| Error::io(path, e))
}
