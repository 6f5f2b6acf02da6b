//! Stopping on request: the first Ctrl-C (or SIGTERM) asks the runner to
//! write a snapshot after the current iteration and return; a second one
//! exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use difi_core::error::{Error, Result};

/// Exit status of a run stopped by the user (128 + SIGINT).
pub const STOPPED_EXIT_CODE: u8 = 130;

/// The process-wide stop flag, with the signal handler installed on first use.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<std::result::Result<Arc<AtomicBool>, String>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let handler_flag = flag.clone();
        ctrlc::set_handler(move || {
            if handler_flag.swap(true, Ordering::SeqCst) {
                exit_now();
            }
            eprintln!("\ninterrupt: writing a snapshot after this iteration (Ctrl-C again to exit at once)");
        })
        .map_err(|e| e.to_string())?;
        Ok(flag)
    })
    .clone()
    .map_err(|message| Error::Plugin { plugin: "signal handler".into(), message })
}

/// Ends the process from the signal thread while the main thread may be
/// inside libtorch. `std::process::exit` would run C++ static destructors
/// under libtorch's feet (heap corruption in most trials), and `eprintln!`
/// could wait forever on a stderr lock held by the progress bar; `_exit`
/// and a raw `write` touch neither. Snapshots are renamed into place whole,
/// so the last complete one survives (a half-written one stays a hidden
/// temporary directory that the next resume removes).
fn exit_now() -> ! {
    const MESSAGE: &[u8] = b"\ninterrupted again: exiting without a snapshot\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe and take no locks;
    // MESSAGE outlives the call.
    unsafe {
        libc::write(libc::STDERR_FILENO, MESSAGE.as_ptr().cast(), MESSAGE.len());
        libc::_exit(STOPPED_EXIT_CODE as i32)
    }
}
