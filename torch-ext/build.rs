//! Compiles `csrc/` into a static library against the same libtorch that
//! torch-sys links, then does what every difi crate's build script does
//! (`build-support/link_torch.rs`) so this crate's tests find libtorch at run
//! time.

use std::env;
use std::error::Error;
use std::path::PathBuf;

#[path = "../build-support/link_torch.rs"]
mod link_torch;

/// Every C++ source of the shim; add new files here as the crate grows.
const SOURCES: &[&str] = &[
    "csrc/difi_ext.cpp",
    "csrc/multi_tensor.cpp",
    "csrc/autocast.cpp",
    "csrc/checkpoint.cpp",
    "csrc/device_memory.cpp",
    "csrc/distributed.cpp",
    "csrc/distributed_nccl.cpp",
    "csrc/cuda_graph.cpp",
];

fn main() -> Result<(), Box<dyn Error>> {
    let lib_dir = libtorch_lib_dir()?;
    let root = lib_dir.parent().ok_or_else(|| format!("libtorch lib dir {} has no parent", lib_dir.display()))?;
    let include = root.join("include");
    let api_include = include.join("torch/csrc/api/include");
    if !include.join("ATen/Context.h").exists() {
        return Err(format!("no libtorch headers under {}", include.display()).into());
    }

    // The shim must use the same std::string layout as libtorch, or calls that
    // pass strings (error messages, precision names) silently corrupt memory.
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let cxx11_abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());

    println!("cargo:rerun-if-changed=csrc/guarded.h");
    println!("cargo:rerun-if-changed=csrc/distributed.h");
    println!("cargo:rerun-if-changed=csrc/gloo_declarations");
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .warnings(false)
        .include(&include)
        .include(&api_include)
        // c10d's Gloo header names Gloo types the wheel has no headers for.
        .include("csrc/gloo_declarations")
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi.as_str())
        .files(SOURCES);
    match cuda_include(&lib_dir) {
        Some(cuda) => {
            build.define("DIFI_EXT_CUDA", None).include(cuda);
            // CUDA graphs and ProcessGroupNCCL live in libtorch_cuda, CUDA
            // streams and events in libc10_cuda.
            println!("cargo:rustc-link-lib=dylib=torch_cuda");
            println!("cargo:rustc-link-lib=dylib=c10_cuda");
            match nccl_include(&lib_dir) {
                Some(nccl) => {
                    build.define("USE_C10D_NCCL", None).define("USE_CUDA", None).define("DIFI_EXT_NCCL", None);
                    build.include(nccl);
                }
                None => println!("cargo:warning=no NCCL headers next to libtorch: difi's NCCL backend is left out"),
            }
        }
        None => println!(
            "cargo:warning=no CUDA runtime headers next to libtorch: CUDA graphs and difi's NCCL backend are left out"
        ),
    }
    build.try_compile("difi_ext")?;

    // torch-sys links these too, but naming them after the static shim keeps
    // its undefined symbols (at::globalContext, c10::Error) resolvable even
    // if the linker sees the shim after torch-sys's libraries.
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");

    // rpath, `--no-as-needed` libtorch_cuda, version variables: shared with
    // every other difi crate. It reads DEP_TCH_LIBTORCH_LIB itself, which
    // torch-sys always sets for a direct dependent on Linux and macOS.
    link_torch::link_torch();
    Ok(())
}

/// The `site-packages/nvidia` directory beside a pip-installed torch with
/// CUDA (`site-packages/torch/lib`), when it has `libtorch_cuda`.
fn nvidia_dir(lib_dir: &std::path::Path) -> Option<PathBuf> {
    if !lib_dir.join("libtorch_cuda.so").exists() {
        return None;
    }
    // `.libtorch` is a link into the virtualenv: look beside its target.
    let lib_dir = lib_dir.canonicalize().ok()?;
    Some(lib_dir.parent()?.parent()?.join("nvidia"))
}

/// NCCL's include directory (`nvidia/nccl/include`), for c10d's NCCL header.
fn nccl_include(lib_dir: &std::path::Path) -> Option<PathBuf> {
    let nccl = nvidia_dir(lib_dir)?.join("nccl/include");
    nccl.join("nccl.h").exists().then_some(nccl)
}

/// The CUDA runtime's include directory (`nvidia/cu13/include`), when it
/// has every header libtorch's CUDA headers pull in.
fn cuda_include(lib_dir: &std::path::Path) -> Option<PathBuf> {
    let nvidia = nvidia_dir(lib_dir)?;
    let cuda = std::fs::read_dir(&nvidia)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("include")))
        .find(|dir| dir.join("cuda_runtime_api.h").exists())?;
    // The runtime wheel alone lacks these (nvidia-cuda-crt, nvidia-cuda-cccl).
    if !cuda.join("crt/host_config.h").exists() || !cuda.join("nv/target").exists() {
        return None;
    }
    Some(cuda)
}

/// The libtorch library directory: the one torch-sys reports to dependents
/// (so the shim and tch can never disagree on libtorch), else `$LIBTORCH/lib`.
fn libtorch_lib_dir() -> Result<PathBuf, Box<dyn Error>> {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = env::var("DEP_TCH_LIBTORCH_LIB") {
        return Ok(PathBuf::from(dir));
    }
    match env::var("LIBTORCH") {
        Ok(root) => Ok(PathBuf::from(root).join("lib")),
        Err(_) => Err("neither torch-sys's DEP_TCH_LIBTORCH_LIB nor LIBTORCH is set".into()),
    }
}
