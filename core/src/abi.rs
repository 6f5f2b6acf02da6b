//! The C ABI between difi and runtime plugin libraries.
//!
//! Rust has no stable ABI, so nothing Rust-specific crosses the boundary: a
//! plugin exports one `#[repr(C)]` [`Declaration`] under the symbol
//! `difi_plugin_declaration`, made of fixed-layout structs, C strings and
//! `extern "C"` function pointers. Its first fields (magic and ABI version) never
//! change, so the host can refuse a library built for another layout before
//! reading anything else; then the fingerprint (difi-core, tch and libtorch
//! versions) must match the host's. Tensors cross as raw libtorch handles,
//! which is sound only because both sides use the same libtorch. Parameters
//! cross as JSON text; errors as text written through a host-provided sink.
//! Every exported function catches panics.
//!
//! Plugin authors do not touch this module directly: they implement
//! [`ForeignDivergence`] and call [`export_plugin!`](crate::export_plugin).

use std::ffi::{CStr, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::{Error, Result};
use crate::traits::{Divergence, ScoreModel};

/// First bytes of every declaration.
pub const MAGIC: [u8; 8] = *b"DIFIPLUG";
/// Layout version of [`Declaration`] and everything it points to.
pub const ABI_VERSION: u32 = 1;
/// The symbol a plugin library exports.
pub const DECLARATION_SYMBOL: &str = "difi_plugin_declaration";

/// difi-core's version, as compiled into this binary.
pub const DIFI_CORE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The tch version difi-core pins (`tch = "=0.24.0"`; a test checks Cargo.lock).
pub const TCH_VERSION: &str = "0.24.0";
/// The libtorch this binary was built against.
pub const LIBTORCH_VERSION: &str = env!("DIFI_LIBTORCH_VERSION");
/// The compiler that built this binary (reported, not required to match: no
/// Rust type crosses the boundary).
pub const RUSTC_VERSION: &str = env!("DIFI_RUSTC_VERSION");

const fn c_string(with_nul: &'static str) -> *const c_char {
    with_nul.as_ptr() as *const c_char
}

/// Status codes of exported functions.
pub const STATUS_OK: i32 = 0;
/// The function failed and wrote a message to its error sink.
pub const STATUS_ERROR: i32 = 1;
/// The function panicked; the message was written to its error sink.
pub const STATUS_PANIC: i32 = 2;

/// What a plugin library exports.
#[repr(C)]
pub struct Declaration {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// Always [`ABI_VERSION`] of the difi-core the plugin was built with.
    pub abi_version: u32,
    /// NUL-terminated versions the plugin was built against.
    pub difi_core_version: *const c_char,
    pub tch_version: *const c_char,
    pub libtorch_version: *const c_char,
    pub rustc_version: *const c_char,
    /// NUL-terminated name of the plugin library, for messages.
    pub plugin_name: *const c_char,
    /// Divergences the plugin provides.
    pub divergences: *const DivergenceVTable,
    pub divergence_count: usize,
}

// SAFETY: a declaration only holds pointers to immutable statics.
unsafe impl Sync for Declaration {}

impl Declaration {
    /// A declaration with this build's fingerprint.
    pub const fn new(plugin_name: &'static CStr, divergences: &'static [DivergenceVTable]) -> Self {
        Declaration {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            difi_core_version: c_string(concat!(env!("CARGO_PKG_VERSION"), "\0")),
            tch_version: c_string("0.24.0\0"),
            libtorch_version: c_string(concat!(env!("DIFI_LIBTORCH_VERSION"), "\0")),
            rustc_version: c_string(concat!(env!("DIFI_RUSTC_VERSION"), "\0")),
            plugin_name: plugin_name.as_ptr(),
            divergences: divergences.as_ptr(),
            divergence_count: divergences.len(),
        }
    }
}

/// Borrowed bytes (UTF-8 JSON).
#[repr(C)]
pub struct Bytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl Bytes {
    fn of(text: &str) -> Self {
        Bytes { ptr: text.as_ptr(), len: text.len() }
    }

    /// # Safety
    /// `ptr` must point to `len` readable bytes.
    unsafe fn as_str<'a>(&self) -> std::result::Result<&'a str, std::str::Utf8Error> {
        if self.ptr.is_null() {
            return Ok("");
        }
        std::str::from_utf8(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }
}

/// Receives text from the other side (a result or an error message).
#[repr(C)]
pub struct Sink {
    pub target: *mut c_void,
    pub write: unsafe extern "C" fn(target: *mut c_void, ptr: *const u8, len: usize),
}

unsafe extern "C" fn write_to_string(target: *mut c_void, ptr: *const u8, len: usize) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `target` is the `&mut String` given to `Sink::to_string`, alive for the call.
        let out = unsafe { &mut *(target as *mut String) };
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        out.push_str(&String::from_utf8_lossy(bytes));
    }));
}

impl Sink {
    /// A sink appending to `out`; valid while `out` is.
    pub fn to_string(out: &mut String) -> Self {
        Sink { target: out as *mut String as *mut c_void, write: write_to_string }
    }

    fn send(&self, text: &str) {
        // SAFETY: the sink was made by the other side for this call.
        unsafe { (self.write)(self.target, text.as_ptr(), text.len()) }
    }
}

/// A score model lent by the host for one call.
#[repr(C)]
pub struct ScoreHandle {
    /// Opaque host pointer passed back to `denoise`.
    pub model: *const c_void,
    /// `D(x; σ)`: writes a new tensor handle (owned by the caller) to `out`.
    pub denoise: unsafe extern "C" fn(
        model: *const c_void,
        x: *mut C_tensor,
        sigma: *mut C_tensor,
        labels: *mut C_tensor,
        out: *mut *mut C_tensor,
        error: Sink,
    ) -> i32,
    pub sigma_data: f64,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub label_dim: i64,
    pub sample_shape: *const i64,
    pub sample_rank: usize,
}

/// Arguments of [`DivergenceVTable::generator_loss`]; tensors are borrowed.
#[repr(C)]
pub struct LossCall {
    pub x_g: *mut C_tensor,
    /// Null when unconditional.
    pub labels: *mut C_tensor,
    pub teacher: ScoreHandle,
    pub fake: ScoreHandle,
}

/// A divergence provided by a plugin.
#[repr(C)]
pub struct DivergenceVTable {
    /// NUL-terminated name used in configs.
    pub name: *const c_char,
    /// Decodes params (JSON) and writes them back with defaults filled in.
    pub resolve: unsafe extern "C" fn(params: Bytes, out: Sink) -> i32,
    /// Builds an instance from params (JSON).
    pub create: unsafe extern "C" fn(params: Bytes, state: *mut *mut c_void, error: Sink) -> i32,
    /// The generator loss; writes a new tensor handle (owned by the caller) to `loss`.
    pub generator_loss:
        unsafe extern "C" fn(state: *mut c_void, call: *const LossCall, loss: *mut *mut C_tensor, error: Sink) -> i32,
    /// Frees an instance.
    pub destroy: unsafe extern "C" fn(state: *mut c_void),
}

// SAFETY: a vtable only holds a pointer to a static string and function pointers.
unsafe impl Sync for DivergenceVTable {}

/// A divergence that a plugin library exports.
pub trait ForeignDivergence: Divergence + Sized + 'static {
    /// Name used in configs.
    const NAME: &'static CStr;
    /// Typed parameters, with defaults.
    type Params: DeserializeOwned + Serialize;
    /// Builds the divergence.
    fn new(params: Self::Params) -> Result<Self>;
}

/// The vtable exporting divergence `T`.
pub const fn divergence_vtable<T: ForeignDivergence>() -> DivergenceVTable {
    DivergenceVTable {
        name: T::NAME.as_ptr(),
        resolve: resolve_trampoline::<T>,
        create: create_trampoline::<T>,
        generator_loss: loss_trampoline::<T>,
        destroy: destroy_trampoline::<T>,
    }
}

/// Runs `body`, turning errors and panics into a status and a message.
fn guarded(error: &Sink, body: impl FnOnce() -> Result<()>) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(err)) => {
            error.send(&err.to_string());
            STATUS_ERROR
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            error.send(&format!("panicked: {message}"));
            STATUS_PANIC
        }
    }
}

fn parse_params(params: &Bytes) -> Result<serde_json::Value> {
    // SAFETY: the host passes a valid (ptr, len) for the call.
    let text = unsafe { params.as_str() }.map_err(|e| Error::config("", format!("params are not UTF-8: {e}")))?;
    serde_json::from_str(text).map_err(|e| Error::config("", format!("params are not JSON: {e}")))
}

/// Gives ownership of a tensor to the other side as a raw handle.
pub fn into_raw(tensor: Tensor) -> *mut C_tensor {
    let mut tensor = std::mem::ManuallyDrop::new(tensor);
    tensor.as_mut_ptr()
}

/// A new reference to a borrowed handle (null → `None`).
///
/// # Safety
/// `ptr` must be null or a live tensor handle of the same libtorch.
pub unsafe fn borrow_handle(ptr: *mut C_tensor) -> Option<Tensor> {
    if ptr.is_null() { None } else { Some(unsafe { Tensor::clone_from_ptr(ptr) }) }
}

unsafe extern "C" fn resolve_trampoline<T: ForeignDivergence>(params: Bytes, out: Sink) -> i32 {
    let mut result = String::new();
    let status = guarded(&out, || {
        let resolved = crate::params::resolve_params::<T::Params>(&parse_params(&params)?)?;
        result = resolved.to_string();
        Ok(())
    });
    if status == STATUS_OK {
        out.send(&result);
    }
    status
}

unsafe extern "C" fn create_trampoline<T: ForeignDivergence>(
    params: Bytes,
    state: *mut *mut c_void,
    error: Sink,
) -> i32 {
    guarded(&error, || {
        let typed: T::Params = crate::params::decode_params(&parse_params(&params)?)?;
        let instance = Box::new(T::new(typed)?);
        // SAFETY: the host passes a valid out-pointer.
        unsafe { *state = Box::into_raw(instance) as *mut c_void };
        Ok(())
    })
}

unsafe extern "C" fn loss_trampoline<T: ForeignDivergence>(
    state: *mut c_void,
    call: *const LossCall,
    loss: *mut *mut C_tensor,
    error: Sink,
) -> i32 {
    guarded(&error, || {
        // SAFETY: `state` came from `create_trampoline::<T>`; `call` and its handles are valid for this call.
        let divergence = unsafe { &*(state as *const T) };
        let call = unsafe { &*call };
        let x_g = unsafe { borrow_handle(call.x_g) }.ok_or_else(|| Error::config("x_g", "null tensor"))?;
        let labels = unsafe { borrow_handle(call.labels) };
        let teacher = ForeignScore(&call.teacher);
        let fake = ForeignScore(&call.fake);
        let value = divergence.generator_loss(&x_g, labels.as_ref(), &teacher, &fake)?;
        unsafe { *loss = into_raw(value) };
        Ok(())
    })
}

unsafe extern "C" fn destroy_trampoline<T: ForeignDivergence>(state: *mut c_void) {
    if !state.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `state` came from `create_trampoline::<T>` and is destroyed once.
            drop(unsafe { Box::from_raw(state as *mut T) });
        }));
    }
}

/// The plugin-side view of a score model lent by the host.
struct ForeignScore<'a>(&'a ScoreHandle);

impl ScoreModel for ForeignScore<'_> {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let mut message = String::new();
        let mut out: *mut C_tensor = std::ptr::null_mut();
        let labels_ptr = labels.map_or(std::ptr::null_mut(), |l| l.as_ptr() as *mut C_tensor);
        // SAFETY: the handle is valid for the enclosing call; the tensors outlive it.
        let status = unsafe {
            (self.0.denoise)(
                self.0.model,
                x.as_ptr() as *mut C_tensor,
                sigma.as_ptr() as *mut C_tensor,
                labels_ptr,
                &mut out,
                Sink::to_string(&mut message),
            )
        };
        if status != STATUS_OK || out.is_null() {
            return Err(Error::Plugin { plugin: "host score model".into(), message });
        }
        // SAFETY: the host handed over ownership of `out`.
        Ok(unsafe { Tensor::from_ptr(out) })
    }
    fn sigma_data(&self) -> f64 {
        self.0.sigma_data
    }
    fn sigma_range(&self) -> (f64, f64) {
        (self.0.sigma_min, self.0.sigma_max)
    }
    fn sample_shape(&self) -> Vec<i64> {
        if self.0.sample_shape.is_null() {
            return Vec::new();
        }
        // SAFETY: the host passes `sample_rank` readable values.
        unsafe { std::slice::from_raw_parts(self.0.sample_shape, self.0.sample_rank) }.to_vec()
    }
    fn label_dim(&self) -> i64 {
        self.0.label_dim
    }
    fn var_store(&self) -> Option<&tch::nn::VarStore> {
        None
    }
    fn var_store_mut(&mut self) -> Option<&mut tch::nn::VarStore> {
        None
    }
}

/// Host side: a score model lent through a [`ScoreHandle`]. `model` must
/// point to a `&dyn ScoreModel` that outlives the handle.
pub(crate) fn score_handle(model: &&dyn ScoreModel, shape: &[i64]) -> ScoreHandle {
    let (sigma_min, sigma_max) = model.sigma_range();
    ScoreHandle {
        model: model as *const &dyn ScoreModel as *const c_void,
        denoise: host_denoise,
        sigma_data: model.sigma_data(),
        sigma_min,
        sigma_max,
        label_dim: model.label_dim(),
        sample_shape: shape.as_ptr(),
        sample_rank: shape.len(),
    }
}

unsafe extern "C" fn host_denoise(
    model: *const c_void,
    x: *mut C_tensor,
    sigma: *mut C_tensor,
    labels: *mut C_tensor,
    out: *mut *mut C_tensor,
    error: Sink,
) -> i32 {
    guarded(&error, || {
        // SAFETY: `model` was made by `score_handle` and the tensors are borrowed for this call.
        let model: &dyn ScoreModel = unsafe { *(model as *const &dyn ScoreModel) };
        let x = unsafe { borrow_handle(x) }.ok_or_else(|| Error::config("x", "null tensor"))?;
        let sigma = unsafe { borrow_handle(sigma) }.ok_or_else(|| Error::config("sigma", "null tensor"))?;
        let labels = unsafe { borrow_handle(labels) };
        let denoised = model.denoise(&x, &sigma, labels.as_ref())?;
        unsafe { *out = into_raw(denoised) };
        Ok(())
    })
}

/// Host side: calls a plugin function that reports through an error sink.
pub(crate) fn call_with_error(plugin: &str, f: impl FnOnce(Sink) -> i32) -> Result<()> {
    let mut message = String::new();
    let status = f(Sink::to_string(&mut message));
    match status {
        STATUS_OK => Ok(()),
        _ => Err(Error::Plugin { plugin: plugin.to_string(), message }),
    }
}

pub(crate) fn bytes(text: &str) -> Bytes {
    Bytes::of(text)
}

/// Exports a plugin library's declaration:
///
/// ```text
/// difi_core::export_plugin!(name: c"difi-plugin-sds", divergences: [Sds]);
/// ```
///
/// Each listed type implements [`ForeignDivergence`]. Build the crate as a
/// `cdylib` against the same difi-core, tch and libtorch as the host.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, divergences: [$($divergence:ty),* $(,)?] $(,)?) => {
        static __DIFI_DIVERGENCES: &[$crate::abi::DivergenceVTable] =
            &[$($crate::abi::divergence_vtable::<$divergence>()),*];

        /// The declaration the difi host reads.
        #[unsafe(no_mangle)]
        #[allow(non_upper_case_globals)]
        pub static difi_plugin_declaration: $crate::abi::Declaration =
            $crate::abi::Declaration::new($name, __DIFI_DIVERGENCES);
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn pinned_tch_version_matches_cargo_lock() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        let entry = lock.split("[[package]]").find(|p| p.contains("name = \"tch\"")).expect("tch in Cargo.lock");
        assert!(entry.contains(&format!("version = \"{}\"", super::TCH_VERSION)), "{entry}");
    }
}
