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
                eprintln!("\ninterrupted again: exiting without a snapshot");
                std::process::exit(STOPPED_EXIT_CODE as i32);
            }
            eprintln!("\ninterrupt: writing a snapshot after this iteration (Ctrl-C again to exit at once)");
        })
        .map_err(|e| e.to_string())?;
        Ok(flag)
    })
    .clone()
    .map_err(|message| Error::Plugin { plugin: "signal handler".into(), message })
}
