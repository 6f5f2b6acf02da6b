//! difi's own C++ extensions to libtorch, for what tch does not wrap.
//!
//! The C++ lives in `csrc/` and is compiled by this crate's build script
//! against the libtorch that torch-sys links, so both always agree on
//! libtorch's version and ABI. Rust sees only plain `extern "C"` functions:
//! nothing here depends on C++ name mangling. Each C++ entry point catches
//! every exception and reports failure as a status code plus a message, which
//! the wrappers below turn into [`Error`] values.
//!
//! It holds libtorch's global-context flags and the multi-tensor updates
//! ([`multi_tensor`]: fused Adam, foreach lerp) and c10d's stores, process
//! groups and collectives ([`distributed`]), activation checkpointing
//! ([`checkpoint`]), the CUDA allocator's statistics ([`device_memory`]) and
//! CUDA graph capture and replay ([`cuda_graph`]).

use std::ffi::{CStr, c_char, c_int};
use std::fmt;

pub mod autocast;
pub mod checkpoint;
pub mod cuda_graph;
pub mod device_memory;
pub mod distributed;
pub mod multi_tensor;

/// libtorch's generator is global and tests run in parallel threads: every
/// test that draws random numbers holds this.
#[cfg(test)]
pub(crate) static TEST_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Status codes of the shim, mirrored from `csrc/difi_ext.cpp`.
const STATUS_OK: c_int = 0;
const STATUS_TORCH_ERROR: c_int = 1;
const STATUS_STD_ERROR: c_int = 2;

/// Room for a C++ error message; longer ones arrive truncated, which is
/// preferable to a second round trip for what is only ever read by a person.
const ERROR_BUFFER_LEN: usize = 1024;

unsafe extern "C" {
    fn difi_ext_set_allow_tf32(allow: bool, error: *mut c_char, error_len: usize) -> c_int;
    fn difi_ext_allow_tf32(cudnn: *mut bool, cublas: *mut bool, error: *mut c_char, error_len: usize) -> c_int;
}

/// A C++ exception that the shim caught, with libtorch's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    operation: &'static str,
    kind: ErrorKind,
    message: String,
}

/// What kind of C++ exception the shim caught, for callers that want to tell
/// libtorch's own checks apart from, say, allocation failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A `c10::Error`: a failed libtorch check (`TORCH_CHECK` and friends).
    Torch,
    /// Another `std::exception`, such as `std::bad_alloc`.
    Std,
    /// Something that is not a `std::exception`, or a status this crate does
    /// not know (a shim newer than its Rust side).
    Unknown,
}

impl Error {
    /// A call refused on the Rust side, before reaching C++.
    fn invalid(operation: &'static str, message: String) -> Self {
        Error { operation, kind: ErrorKind::Unknown, message }
    }

    /// The Rust function whose C++ side failed.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// What kind of exception it was.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The exception's message, without libtorch's C++ backtrace.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "libtorch call {} failed: {}", self.operation, self.message)
    }
}

impl std::error::Error for Error {}

/// Calls one shim function with a fresh error buffer and turns its status into
/// a `Result`. `call` receives the buffer and its length, to pass straight on.
fn checked(operation: &'static str, call: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), Error> {
    let mut buffer = [0 as c_char; ERROR_BUFFER_LEN];
    let status = call(buffer.as_mut_ptr(), buffer.len());
    if status == STATUS_OK {
        return Ok(());
    }
    // The shim always NUL-terminates, but a zeroed last byte makes that hold
    // even if it did not.
    buffer[ERROR_BUFFER_LEN - 1] = 0;
    // SAFETY: `buffer` is NUL-terminated (set just above) and outlives `text`.
    let text = unsafe { CStr::from_ptr(buffer.as_ptr()) };
    let kind = match status {
        STATUS_TORCH_ERROR => ErrorKind::Torch,
        STATUS_STD_ERROR => ErrorKind::Std,
        _ => ErrorKind::Unknown,
    };
    Err(Error { operation, kind, message: text.to_string_lossy().into_owned() })
}

/// Lets (or forbids) CUDA run float32 convolutions and matrix products in
/// TF32, as `torch.backends.cudnn.allow_tf32 = allow` together with
/// `torch.backends.cuda.matmul.allow_tf32 = allow` do in PyTorch; it calls
/// the very libtorch setters those Python flags call.
///
/// TF32 trades mantissa bits for speed on Ampere and later GPUs. Training
/// recipes such as EDM's turn it off for full float32 precision, which
/// libtorch's defaults do not give (cuDNN defaults to TF32 on). The flags live
/// on libtorch's global context, so this needs no GPU and affects every
/// thread; set it once at start-up, before CUDA work is queued.
pub fn set_allow_tf32(allow: bool) -> Result<(), Error> {
    // SAFETY: the shim only touches libtorch's global context; the buffer
    // pointer and length come from `checked` and are valid for the call.
    checked("set_allow_tf32", |error, len| unsafe { difi_ext_set_allow_tf32(allow, error, len) })
}

/// Reads back the flags [`set_allow_tf32`] sets, as `(cudnn, cublas)`: whether
/// cuDNN convolutions and whether cuBLAS float32 matmuls may use TF32.
///
/// Fails when the legacy flags and PyTorch's newer per-op `fp32_precision`
/// settings were mixed into a state the two booleans cannot describe
/// (libtorch refuses to guess); difi itself only uses the legacy flags.
pub fn allow_tf32() -> Result<(bool, bool), Error> {
    let mut cudnn = false;
    let mut cublas = false;
    // SAFETY: both out-pointers point at live locals; the buffer comes from
    // `checked`.
    checked("allow_tf32", |error, len| unsafe { difi_ext_allow_tf32(&mut cudnn, &mut cublas, error, len) })?;
    Ok((cudnn, cublas))
}

/// EDM's CUDA settings for training: TF32 as given (EDM keeps it off for
/// full float32 precision), and cuDNN's autotuner on, since the shapes of a
/// run never change.
pub fn configure_cuda(allow_tf32: bool) -> Result<(), Error> {
    set_allow_tf32(allow_tf32)?;
    tch::Cuda::cudnn_set_benchmark(true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The flags are process-wide, so one test owns them: parallel tests
    // flipping them would race.
    #[test]
    fn tf32_flags_round_trip() {
        let original = allow_tf32().expect("read the initial flags");
        set_allow_tf32(false).expect("turn TF32 off");
        assert_eq!(allow_tf32().expect("read after turning off"), (false, false));
        set_allow_tf32(true).expect("turn TF32 on");
        assert_eq!(allow_tf32().expect("read after turning on"), (true, true));
        set_allow_tf32(false).expect("turn TF32 off again");
        assert_eq!(allow_tf32().expect("read after turning off again"), (false, false));
        // Leave the process as we found it, as far as one flag for both allows.
        if original.0 == original.1 {
            set_allow_tf32(original.0).expect("restore");
        }
    }

    #[test]
    fn failures_become_error_values() {
        let message = b"Expected something, got nothing\0";
        let result = checked("fake", |error, len| {
            assert_eq!(len, ERROR_BUFFER_LEN);
            // SAFETY: `error` has room for `len` bytes and the message fits.
            unsafe { std::ptr::copy_nonoverlapping(message.as_ptr().cast::<c_char>(), error, message.len()) };
            STATUS_TORCH_ERROR
        });
        let error = result.expect_err("a non-zero status is an error");
        assert_eq!(error.operation(), "fake");
        assert_eq!(error.kind(), ErrorKind::Torch);
        assert_eq!(error.message(), "Expected something, got nothing");
        assert_eq!(checked("fake", |_, _| 42).expect_err("unknown status").kind(), ErrorKind::Unknown);
        assert!(checked("fake", |_, _| STATUS_OK).is_ok());
    }
}
