//! Build script shared by every difi crate that produces binaries, tests or
//! plugins. It makes those binaries find libtorch and keep CUDA:
//!
//! - an rpath to the libtorch that torch-sys linked against, so nothing needs
//!   `LD_LIBRARY_PATH`;
//! - `--no-as-needed` around `libtorch_cuda`/`libtorch`, because the linker
//!   otherwise drops `libtorch_cuda.so` (nothing references it by symbol) and
//!   tch then silently runs on the CPU of a GPU machine;
//! - the libtorch and rustc versions, which `difi_core::abi` bakes into the
//!   runtime-plugin fingerprint.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib_dir = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => panic!(
            "torch-sys did not report its libtorch directory; \
             this crate must depend on torch-sys directly"
        ),
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");

    println!("cargo:rustc-env=DIFI_LIBTORCH_VERSION={}", libtorch_version(&lib_dir));
    println!("cargo:rustc-env=DIFI_RUSTC_VERSION={}", rustc_version());
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
