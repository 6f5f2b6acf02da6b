//! Loading runtime plugin libraries into the registry.
//!
//! A library is checked before anything it provides is used: its
//! declaration must exist, start with the magic bytes and ABI version, and
//! carry the host's difi-core, tch and libtorch versions. Loaded libraries
//! are never unloaded (their code may still be referenced).

use std::ffi::{CStr, c_char, c_void};
use std::path::Path;

use tch::Tensor;
use torch_sys::C_tensor;

use crate::abi::{self, Declaration, DivergenceVTable, LossCall};
use crate::error::{Error, Result};
use crate::params::Params;
use crate::registry::{Builder, Entry, Registry};
use crate::traits::{Divergence, ScoreModel};

/// The fingerprint a library declares, read after its magic and ABI checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub difi_core: String,
    pub tch: String,
    pub libtorch: String,
    pub rustc: String,
}

impl Fingerprint {
    /// This binary's fingerprint.
    pub fn host() -> Self {
        Fingerprint {
            difi_core: abi::DIFI_CORE_VERSION.into(),
            tch: abi::TCH_VERSION.into(),
            libtorch: abi::LIBTORCH_VERSION.into(),
            rustc: abi::RUSTC_VERSION.into(),
        }
    }

    /// Why a library with this fingerprint cannot be used, if it cannot.
    pub fn mismatch(&self, host: &Fingerprint) -> Option<String> {
        let mut problems = Vec::new();
        for (what, theirs, ours) in [
            ("difi-core", &self.difi_core, &host.difi_core),
            ("tch", &self.tch, &host.tch),
            ("libtorch", &self.libtorch, &host.libtorch),
        ] {
            if theirs != ours {
                problems.push(format!("{what} {theirs} (this difi has {ours})"));
            }
        }
        if problems.is_empty() {
            None
        } else {
            Some(format!("built against {}; rebuild the plugin against this difi", problems.join(", ")))
        }
    }
}

/// Reads a C string field of a declaration.
///
/// # Safety
/// `ptr` must be null or point to a NUL-terminated string.
unsafe fn read_c_string(ptr: *const c_char, field: &str) -> std::result::Result<String, String> {
    if ptr.is_null() {
        return Err(format!("declaration field `{field}` is null"));
    }
    Ok(unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned())
}

/// Checks a declaration and returns its fingerprint, or why it is refused.
///
/// # Safety
/// `declaration` must point to at least the 12 bytes of magic and ABI
/// version; the rest is read only when those match.
pub unsafe fn check_declaration(declaration: *const Declaration) -> std::result::Result<Fingerprint, String> {
    if declaration.is_null() {
        return Err("the declaration symbol is null".into());
    }
    let magic: [u8; 8] = unsafe { std::ptr::read_unaligned(declaration as *const [u8; 8]) };
    if magic != abi::MAGIC {
        return Err(format!("`{}` is not a difi plugin declaration (bad magic bytes)", abi::DECLARATION_SYMBOL));
    }
    let version: u32 = unsafe { std::ptr::read_unaligned((declaration as *const u8).add(8) as *const u32) };
    if version != abi::ABI_VERSION {
        return Err(format!(
            "built for plugin ABI version {version}, this difi speaks version {}; rebuild the plugin against this difi",
            abi::ABI_VERSION
        ));
    }
    let d = unsafe { &*declaration };
    let fingerprint = unsafe {
        Fingerprint {
            difi_core: read_c_string(d.difi_core_version, "difi_core_version")?,
            tch: read_c_string(d.tch_version, "tch_version")?,
            libtorch: read_c_string(d.libtorch_version, "libtorch_version")?,
            rustc: read_c_string(d.rustc_version, "rustc_version")?,
        }
    };
    match fingerprint.mismatch(&Fingerprint::host()) {
        Some(problem) => Err(problem),
        None => Ok(fingerprint),
    }
}

impl Registry {
    /// Loads a plugin library and registers what it declares.
    pub fn load_library(&mut self, path: &Path) -> Result<()> {
        let refuse = |message: String| Error::PluginLibrary { path: path.to_path_buf(), message };
        crate::plugin_file::check_library_file(path).map_err(refuse)?;
        // Loading runs the library's code before its declaration can be
        // checked: say which file, every time.
        tracing::info!("loading plugin library {} (its code runs as difi)", path.display());
        // SAFETY: loading runs the library's initialisers; difi plugins are
        // Rust cdylibs whose initialisers only register with their own copy
        // of the registry. The library is never unloaded.
        let library = unsafe { libloading::Library::new(path) }
            .map_err(|e| refuse(format!("cannot load: {}", with_causes(&e))))?;
        let library: &'static libloading::Library = Box::leak(Box::new(library));
        let symbol = format!("{}\0", abi::DECLARATION_SYMBOL);
        // SAFETY: the symbol is read as a pointer to data and checked before use.
        let declaration: *const Declaration = unsafe {
            match library.get::<*const Declaration>(symbol.as_bytes()) {
                Ok(sym) => *sym,
                Err(_) => {
                    return Err(refuse(format!(
                        "not a difi plugin: it exports no `{}` symbol (use difi_core::export_plugin!)",
                        abi::DECLARATION_SYMBOL
                    )));
                }
            }
        };
        let fingerprint = unsafe { check_declaration(declaration) }.map_err(refuse)?;
        if fingerprint.rustc != abi::RUSTC_VERSION {
            tracing::warn!(
                "plugin {} was built by {}, this difi by {}",
                path.display(),
                fingerprint.rustc,
                abi::RUSTC_VERSION
            );
        }
        // SAFETY: checked above; the declaration is a static of the leaked library.
        let declaration: &'static Declaration = unsafe { &*declaration };
        let origin = path.display().to_string();
        let divergences: &'static [DivergenceVTable] = if declaration.divergence_count == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(declaration.divergences, declaration.divergence_count) }
        };
        for vtable in divergences {
            let name = unsafe { read_c_string(vtable.name, "divergence name") }.map_err(refuse)?;
            self.insert(foreign_divergence_entry(name, origin.clone(), vtable))?;
        }
        tracing::info!("plugin {origin}: {} divergence(s)", divergences.len());
        Ok(())
    }
}

/// An error and its sources on one line (libloading keeps dlerror's text,
/// the useful part, in the source).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

fn foreign_divergence_entry(name: String, origin: String, vtable: &'static DivergenceVTable) -> Entry {
    let resolve_name = name.clone();
    let build_name = name.clone();
    Entry {
        name,
        origin,
        resolve: Box::new(move |params: &Params, _ctx| {
            let json = params.to_string();
            let mut out = String::new();
            // SAFETY: the vtable comes from a checked declaration; the strings outlive the call.
            let status = unsafe { (vtable.resolve)(abi::bytes(&json), abi::Sink::to_string(&mut out)) };
            if status != abi::STATUS_OK {
                return Err(Error::config("", out));
            }
            serde_json::from_str(&out).map_err(|e| Error::Plugin {
                plugin: resolve_name.clone(),
                message: format!("resolved params are not JSON: {e}"),
            })
        }),
        builder: Builder::Divergence(Box::new(move |params: &Params, _ctx| {
            let json = params.to_string();
            let mut state: *mut c_void = std::ptr::null_mut();
            let mut message = String::new();
            let status = unsafe { (vtable.create)(abi::bytes(&json), &mut state, abi::Sink::to_string(&mut message)) };
            if status != abi::STATUS_OK || state.is_null() {
                return Err(Error::config("", message));
            }
            Ok(Box::new(ForeignDivergenceInstance { name: build_name.clone(), vtable, state }) as Box<dyn Divergence>)
        })),
    }
}

/// A divergence living in a plugin library.
struct ForeignDivergenceInstance {
    name: String,
    vtable: &'static DivergenceVTable,
    state: *mut c_void,
}

impl Drop for ForeignDivergenceInstance {
    fn drop(&mut self) {
        // SAFETY: `state` came from this vtable's `create` and is destroyed once.
        unsafe { (self.vtable.destroy)(self.state) }
    }
}

impl Divergence for ForeignDivergenceInstance {
    fn generator_loss(
        &self,
        x_g: &Tensor,
        labels: Option<&Tensor>,
        teacher: &dyn ScoreModel,
        fake: &dyn ScoreModel,
    ) -> Result<Tensor> {
        let teacher_shape = teacher.sample_shape();
        let fake_shape = fake.sample_shape();
        let call = LossCall {
            x_g: x_g.as_ptr() as *mut C_tensor,
            labels: labels.map_or(std::ptr::null_mut(), |l| l.as_ptr() as *mut C_tensor),
            teacher: abi::score_handle(&teacher, &teacher_shape),
            fake: abi::score_handle(&fake, &fake_shape),
        };
        let mut loss: *mut C_tensor = std::ptr::null_mut();
        abi::call_with_error(&self.name, |sink| unsafe {
            // SAFETY: `call` and the tensors it borrows live until this returns.
            (self.vtable.generator_loss)(self.state, &call, &mut loss, sink)
        })?;
        if loss.is_null() {
            return Err(Error::Plugin { plugin: self.name.clone(), message: "returned no loss".into() });
        }
        // SAFETY: the plugin handed over ownership of `loss`.
        Ok(unsafe { Tensor::from_ptr(loss) })
    }
}
