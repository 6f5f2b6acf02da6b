//! `--nproc-per-node N`: runs a training command as N local ranks, the way
//! `torchrun --standalone --nproc-per-node N` would: this process becomes
//! the launcher, and each child is this same command (without the flag)
//! with `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT`
//! set. The children do the work; the launcher waits, and when one rank
//! fails it gives the others a grace period to notice, then stops them.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use difi_train::stop::STOPPED_EXIT_CODE;

/// The flag this module handles.
pub const FLAG: &str = "--nproc-per-node";

/// How long the other ranks get to exit on their own once one has failed
/// (they notice the broken connection at their next collective).
const GRACE: Duration = Duration::from_secs(30);

/// Runs the current command as `nproc` local ranks and waits for them.
pub fn run_local_ranks(nproc: u32) -> Result<ExitCode> {
    if std::env::var_os("WORLD_SIZE").is_some() {
        bail!("{FLAG} starts its own ranks; it cannot be combined with WORLD_SIZE from torchrun or Slurm");
    }
    let program = std::env::current_exe().context("finding the difi executable")?;
    let args = without_flag(std::env::args_os().skip(1));
    let port = free_port()?;
    // The ranks get their own process group, so a Ctrl-C at the terminal
    // reaches only the launcher, which passes each one on to every rank
    // exactly once: the first asks them to snapshot and stop, a second to
    // exit at once, as for a single process.
    let interrupts = Arc::new(AtomicUsize::new(0));
    let counter = interrupts.clone();
    ctrlc::set_handler(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })
    .context("installing the Ctrl-C handler")?;
    eprintln!("launching {nproc} ranks on 127.0.0.1:{port}");
    let mut children = Vec::new();
    for rank in 0..nproc {
        let child = Command::new(&program)
            .args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting rank {rank}"));
        match child {
            Ok(child) => children.push(Some(child)),
            Err(err) => {
                stop_all(&mut children);
                return Err(err);
            }
        }
    }
    wait_for_ranks(children, &interrupts)
}

/// Waits for every rank, passing on interrupts; the first failure decides
/// the outcome.
fn wait_for_ranks(mut children: Vec<Option<Child>>, interrupts: &AtomicUsize) -> Result<ExitCode> {
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut first_failure: Option<(usize, ExitStatus, Instant)> = None;
    let mut forwarded = 0;
    while statuses.iter().any(Option::is_none) {
        let received = interrupts.load(Ordering::SeqCst);
        while forwarded < received {
            for child in children.iter().flatten() {
                // SAFETY: kill(2) with a child's pid and SIGINT has no memory effects.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            }
            forwarded += 1;
        }
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Some(status) = child.try_wait().with_context(|| format!("waiting for rank {rank}"))? {
                statuses[rank] = Some(status);
                *slot = None;
                if !status.success() && first_failure.is_none() {
                    first_failure = Some((rank, status, Instant::now()));
                }
            }
        }
        if let Some((rank, status, since)) = first_failure
            && since.elapsed() > GRACE
            && children.iter().any(Option::is_some)
        {
            eprintln!("rank {rank} {}; stopping the ranks still running", describe(status));
            stop_all(&mut children);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match first_failure {
        None => Ok(ExitCode::SUCCESS),
        Some((_, status, _)) if status.code() == Some(STOPPED_EXIT_CODE as i32) => {
            Ok(ExitCode::from(STOPPED_EXIT_CODE))
        }
        Some((rank, status, _)) => bail!("rank {rank} {}", describe(status)),
    }
}

fn stop_all(children: &mut [Option<Child>]) {
    for child in children.iter_mut().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_string(),
    }
}

/// The command line without `--nproc-per-node N` (or `--nproc-per-node=N`).
fn without_flag(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        match arg.to_str() {
            Some(text) if text == FLAG => skip_value = true,
            Some(text) if text.starts_with(&format!("{FLAG}=")) => {}
            _ => out.push(arg),
        }
    }
    out
}

/// A port free on the loopback interface now, for rank 0's store. Another
/// process could take it before rank 0 binds it; rank 0 then fails to start
/// and says so.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port for the ranks' store")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_and_its_value_are_removed() {
        let args = ["distill", "c.ron", "--nproc-per-node", "2", "--outdir", "r"].map(OsString::from);
        assert_eq!(without_flag(args.into_iter()), ["distill", "c.ron", "--outdir", "r"].map(OsString::from));
        let args = ["distill", "--nproc-per-node=4", "c.ron"].map(OsString::from);
        assert_eq!(without_flag(args.into_iter()), ["distill", "c.ron"].map(OsString::from));
    }
}
