//! The layout of a run directory:
//!
//! ```text
//! RUN/config.ron                      the resolved config the run used
//! RUN/stats.jsonl                     one JSON object per tick
//! RUN/metrics.jsonl                   one JSON object per metric and snapshot
//! RUN/snapshots/snapshot-ITERATION/   weights (safetensors) + training state
//! RUN/.lock                           held by the process training the run
//! ```
//!
//! Snapshots are written into a hidden temporary directory and renamed into
//! place, so a crash never leaves a half-written snapshot that looks complete.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};
use difi_formats::atomic::write_atomically;

/// A run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

const SNAPSHOT_PREFIX: &str = "snapshot-";
const LOCK_FILE: &str = ".lock";

/// Held while a process writes to a run directory; see [`RunDir::lock`].
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunDir {
    /// Creates a new run directory; an existing non-empty directory is refused
    /// so no earlier run is overwritten.
    pub fn create(root: &Path) -> Result<Self> {
        refuse_non_empty(root)?;
        std::fs::create_dir_all(root.join("snapshots")).map_err(|e| Error::io(root, e))?;
        Ok(RunDir { root: root.to_path_buf() })
    }

    /// Claims the directory for this process until the lock is dropped (or
    /// the process ends, however it ends): a second `--resume` of the same
    /// run, or a second run into it, is refused instead of corrupting its
    /// snapshots.
    pub fn lock(&self) -> Result<RunLock> {
        let path = self.root.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let by = if holder.is_empty() { String::new() } else { format!(" (process {holder})") };
                return Err(Error::io(
                    &self.root,
                    std::io::Error::new(
                        std::io::ErrorKind::ResourceBusy,
                        format!("in use by another difi process{by}; wait for it to finish or stop it first"),
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        file.set_len(0).and_then(|()| write!(file, "{}", std::process::id())).map_err(|e| Error::io(&path, e))?;
        Ok(RunLock { _file: file })
    }

    /// Names the run directory that rank 0 of a data-parallel run writes,
    /// from another rank, which never writes it (and so neither creates nor
    /// checks it).
    pub fn of_rank0(root: &Path) -> Self {
        RunDir { root: root.to_path_buf() }
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
    /// temporary directory, which then replaces `snapshot-ITERATION`. An
    /// earlier snapshot of the same iteration is moved aside before the
    /// rename and deleted after it, so at every instant one complete copy
    /// exists under a name [`snapshots`](Self::snapshots) or
    /// [`discard_incomplete`](Self::discard_incomplete) knows.
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
        let replaced = dir.join(format!(".{name}.old"));
        if target.exists() {
            if replaced.exists() {
                std::fs::remove_dir_all(&replaced).map_err(|e| Error::io(&replaced, e))?;
            }
            std::fs::rename(&target, &replaced).map_err(|e| Error::io(&target, e))?;
        }
        std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
        if replaced.exists() {
            std::fs::remove_dir_all(&replaced).map_err(|e| Error::io(&replaced, e))?;
        }
        Ok(target)
    }

    /// Tidies a run that is about to continue from the snapshot at
    /// `iteration` after `tick` ticks (`None`: from the beginning): removes
    /// half-written snapshots left by a crash (restoring a moved-aside one
    /// whose replacement never landed) and drops the lines of `stats.jsonl`
    /// and `metrics.jsonl` written after that snapshot, which the resumed
    /// run writes again.
    pub fn discard_incomplete(&self, resumed_from: Option<(u64, u64)>) -> Result<()> {
        let dir = self.snapshots_dir();
        if dir.exists() {
            for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(hidden) = name.strip_prefix('.') else { continue };
                if let Some(original) = hidden.strip_suffix(".old") {
                    let target = dir.join(original);
                    if !target.exists() {
                        std::fs::rename(entry.path(), &target).map_err(|e| Error::io(&target, e))?;
                        continue;
                    }
                } else if hidden.strip_suffix(".tmp").is_none() {
                    continue;
                }
                tracing::info!("removing the incomplete snapshot {}", entry.path().display());
                std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
        let (iteration, ticks) = resumed_from.unwrap_or((0, 0));
        keep_lines(&self.stats_path(), |line| line["tick"].as_u64().is_some_and(|tick| tick < ticks))?;
        keep_lines(&self.metrics_path(), |line| {
            resumed_from.is_some() && line["iteration"].as_u64().is_some_and(|i| i <= iteration)
        })
    }

    /// Removes what [`create`](Self::create) and the run wrote, for a run
    /// that failed before its first snapshot (nothing in it could be
    /// resumed, and its directory would block the same command). The
    /// directory itself is removed when `remove_root`.
    pub fn remove_unfinished(&self, remove_root: bool) -> Result<()> {
        if remove_root {
            return std::fs::remove_dir_all(&self.root).map_err(|e| Error::io(&self.root, e));
        }
        let dir = self.snapshots_dir();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        for path in [
            self.config_path(),
            self.stats_path(),
            self.metrics_path(),
            self.metrics_reference_path(),
            self.root.join(LOCK_FILE),
        ] {
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }
}

fn refuse_non_empty(root: &Path) -> Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    if entries.next().is_none() {
        return Ok(());
    }
    let hint = if root.join("config.ron").exists() {
        format!("it holds a run; continue it with --resume {}", root.display())
    } else {
        "choose an empty or new directory".to_string()
    };
    Err(Error::io(root, std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("not empty ({hint})"))))
}

/// Rewrites a JSON-lines log with only the lines `keep` accepts (a torn last
/// line from a crash is dropped too).
fn keep_lines(path: &Path, keep: impl Fn(&serde_json::Value) -> bool) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut kept = String::new();
    for line in text.lines() {
        if serde_json::from_str::<serde_json::Value>(line).is_ok_and(|value| keep(&value)) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if kept.len() != text.len() {
        write_atomically(path, kept.as_bytes())?;
    }
    Ok(())
}

fn append_line(path: &Path, line: &serde_json::Value) -> Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(file, "{line}").map_err(|e| Error::io(path, e))
}
