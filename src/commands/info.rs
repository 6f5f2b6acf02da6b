//! `difi info`: versions, devices, and whether CUDA support is linked in.

use std::process::ExitCode;

use anyhow::Result;
use difi_core::abi;

#[derive(clap::Args)]
pub struct Args {}

/// Whether `libtorch_cuda.so` is mapped into this process: it is only when
/// the linker kept it (see build-support/link_torch.rs).
pub fn libtorch_cuda_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|maps| maps.contains("libtorch_cuda.so"))
}

pub fn run(_args: Args) -> Result<ExitCode> {
    println!("difi {}", env!("CARGO_PKG_VERSION"));
    println!("difi-core {} (plugin ABI {})", abi::DIFI_CORE_VERSION, abi::ABI_VERSION);
    println!("tch {}", abi::TCH_VERSION);
    println!("libtorch {}", abi::LIBTORCH_VERSION);
    println!("rustc {}", abi::RUSTC_VERSION);
    println!("libtorch_cuda {}", if libtorch_cuda_loaded() { "linked" } else { "NOT linked" });
    println!("cuda available {}", tch::Cuda::is_available());
    println!("cuda devices {}", tch::Cuda::device_count());
    println!("cudnn available {}", tch::Cuda::cudnn_is_available());
    Ok(ExitCode::SUCCESS)
}
