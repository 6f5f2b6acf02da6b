//! Runs a campaign in a child process of this binary and watches it: a
//! child killed by a signal (an abort on a failed allocation, a stack
//! overflow, a segfault in native code) or one that outlives its time (a
//! hang) leaves its last input in the `current` file, which becomes a
//! finding here.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::campaign::read_current;
use crate::findings;

/// How long past its planned time a campaign may run before it is taken for hung.
pub const HANG_GRACE: Duration = Duration::from_secs(60);

/// What happened to the child.
pub enum Ending {
    /// The campaign finished; its exit code (1: it recorded findings).
    Finished(i32),
    /// It crashed or hung; the finding written for its last input.
    Crashed(PathBuf),
}

/// Runs `args` (a worker command line of this binary) and watches it.
pub fn supervise(
    args: &[String],
    target: &str,
    seconds: u64,
    current: &Path,
    findings_dir: &Path,
) -> std::io::Result<Ending> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe).args(args).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(seconds) + HANG_GRACE;
    let status: Option<ExitStatus> = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let description = match status {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code @ (0 | 1)), _) => return Ok(Ending::Finished(code)),
            (Some(code), _) => format!("the worker exited with code {code}"),
            (None, Some(signal)) => format!(
                "the worker was killed by signal {signal} (an abort: failed allocation, stack overflow or a native crash)"
            ),
            (None, None) => "the worker ended without a status".into(),
        },
        None => format!("the worker hung: still running {} s past its planned time", HANG_GRACE.as_secs()),
    };
    let input = read_current(current)?;
    let path = findings::record(findings_dir, target, &input, &description)?;
    eprintln!("finding: {} ({description})", path.display());
    Ok(Ending::Crashed(path))
}
