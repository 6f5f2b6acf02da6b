//! `difi zoo`: the model zoo's reference checks and presets.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use difi_core::device::parse_device;
use difi_zoo::edm::config::{EdmNetworkConfig, PRESETS};
use difi_zoo::edm::fixture::verify;
use difi_zoo::edm::network::{EdmNetwork, Precision};

/// Bounds of `zoo verify` (relative L2).
const FORWARD_BOUND: f64 = 1e-4;
const SAMPLER_BOUND: f64 = 1e-3;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Check an EDM network against reference outputs in a safetensors file
    /// (metadata `precond` + `kwargs`; tensors `x`, `sigma`, `expected_f64`, …).
    Verify {
        /// Reference files; each is checked.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Backbone precision: fp32, fp16, bf16 or auto (bounds apply to fp32).
        #[arg(long, default_value = "fp32")]
        precision: String,
        /// Device: auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print one JSON object per file.
        #[arg(long)]
        json: bool,
    },
    /// List the EDM presets with their parameter counts.
    Presets,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Verify { files, precision, device, json } => {
            let precision: Precision = serde_json::from_value(serde_json::Value::String(precision.clone()))
                .with_context(|| format!("--precision {precision}: use fp32, fp16, bf16 or auto"))?;
            let device = parse_device(&device)?;
            let mut failed = false;
            for file in &files {
                let report = verify(file, precision, device)?;
                let forward_ok = report.forward_rel_l2 <= FORWARD_BOUND;
                let sampler_ok = report.sampler_rel_l2.is_none_or(|e| e <= SAMPLER_BOUND);
                let strict = precision == Precision::Fp32 || report.precision == "Float";
                failed |= strict && !(forward_ok && sampler_ok);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"file": file, "report": report, "pass": forward_ok && sampler_ok})
                    );
                    continue;
                }
                println!("{}", file.display());
                println!(
                    "  forward  rel L2 {:.3e} (bound {FORWARD_BOUND:.0e}; the reference's own float32: {}) {}",
                    report.forward_rel_l2,
                    report.reference_f32_rel_l2.map_or("not recorded".into(), |e| format!("{e:.3e}")),
                    if forward_ok { "ok" } else { "FAIL" }
                );
                if let (Some(error), Some(nfe)) = (report.sampler_rel_l2, report.sampler_nfe) {
                    println!(
                        "  sampler  rel L2 {error:.3e} (bound {SAMPLER_BOUND:.0e}, {nfe} NFE) {}",
                        if sampler_ok { "ok" } else { "FAIL" }
                    );
                }
                println!("  {} parameters, backbone in {}", report.parameters, report.precision);
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Presets => {
            println!("{:<26} {:>12}  architecture", "preset", "parameters");
            for name in PRESETS {
                let config = EdmNetworkConfig::preset(name)?;
                let network = EdmNetwork::new(&config, Precision::Fp32, tch::Device::Cpu)?;
                println!(
                    "{name:<26} {:>12}  {:?} + {:?}, {}x{}, {} labels",
                    network.parameter_count(),
                    config.precond,
                    config.model_type,
                    config.img_resolution,
                    config.img_resolution,
                    config.label_dim
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
