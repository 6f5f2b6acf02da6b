//! Build script shared by every difi crate that produces binaries, tests or
//! plugins. It makes those binaries find libtorch and keep CUDA:
//!
//! - an rpath to the libtorch that torch-sys linked against, so nothing needs
//!   `LD_LIBRARY_PATH`; relative to the binary (`$ORIGIN/…`), so a checkout
//!   moved with its `target/` still runs;
//! - `--no-as-needed` around `libtorch_cuda`/`libtorch`, because the linker
//!   otherwise drops `libtorch_cuda.so` (nothing references it by symbol) and
//!   tch then silently runs on the CPU of a GPU machine;
//! - the libtorch and rustc versions, which `difi_core::abi` bakes into the
//!   runtime-plugin fingerprint.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Entry point when this file is a crate's whole build script
/// (`build = ".../link_torch.rs"`). Unused when another build script pulls the
/// file in as a module to call [`link_torch`] itself.
#[allow(dead_code)]
fn main() {
    link_torch();
}

/// Emits everything listed at the top of this file. Public so that a crate
/// whose build script has more to do (compiling a C++ shim, say) can include
/// this file with `#[path]` and call it, instead of copying the logic.
pub fn link_torch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib_dir = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => panic!(
            "torch-sys did not report its libtorch directory; \
             this crate must depend on torch-sys directly"
        ),
    };
    for rpath in origin_relative_rpaths(&lib_dir) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{rpath}");
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");

    println!("cargo:rustc-env=DIFI_LIBTORCH_VERSION={}", libtorch_version(&lib_dir));
    println!("cargo:rustc-env=DIFI_RUSTC_VERSION={}", rustc_version());
}

/// `$ORIGIN`-relative paths from where cargo puts this crate's binaries to
/// `lib_dir`: `target/<profile>/` (binaries, plugin libraries) and
/// `target/<profile>/deps/` and `examples/` one level down (tests, examples).
/// The profile directory is three levels above `OUT_DIR`. Both ends are
/// canonicalised because the loader resolves `$ORIGIN` from the real path.
/// Falls back to the absolute path when either end cannot be resolved.
fn origin_relative_rpaths(lib_dir: &Path) -> Vec<String> {
    let profile_dir = std::env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .and_then(|out| out.ancestors().nth(3).map(Path::to_path_buf))
        .and_then(|dir| dir.canonicalize().ok());
    let (Some(profile_dir), Ok(lib_dir)) = (profile_dir, lib_dir.canonicalize()) else {
        return vec![lib_dir.display().to_string()];
    };
    let common = profile_dir.components().zip(lib_dir.components()).take_while(|(a, b)| a == b).count();
    let up = profile_dir.components().count() - common;
    let mut relative = PathBuf::new();
    for _ in 0..up {
        relative.push("..");
    }
    relative.extend(lib_dir.components().skip(common));
    vec![format!("$ORIGIN/{}", relative.display()), format!("$ORIGIN/../{}", relative.display())]
}

/// The version of the libtorch in `lib_dir/..`: `build-version` in a libtorch
/// archive, `version.py` in a PyTorch wheel.
fn libtorch_version(lib_dir: &Path) -> String {
    let root = lib_dir.parent().unwrap_or(lib_dir);
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        return text.trim().to_string();
    }
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("__version__") {
                let version = rest.trim_start_matches([' ', '=']).trim();
                return version.trim_matches(['\'', '"']).to_string();
            }
        }
    }
    "unknown".to_string()
}

fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}
