//! `difi bench CONFIG`: the speed and memory of Diff-Instruct iterations for
//! a config, timed after a warm-up with the GPU synchronised before every
//! clock reading.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use difi_train::bench::bench;

use crate::ConfigArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The RON config.
    config: PathBuf,
    /// Timed iterations.
    #[arg(long, default_value_t = 20)]
    iterations: u64,
    /// Untimed iterations first (allocator, cuDNN autotuning).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config_args: ConfigArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let (config, registry) = super::load_resolved(&args.config, &args.config_args)?;
    let report = bench(&config, &registry, args.iterations, args.warmup).context("timing iterations")?;
    let fake_updates = config.algorithm.fake_updates_per_iter;
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["config"] = serde_json::json!(args.config);
        json["fake_updates_per_iter"] = serde_json::json!(fake_updates);
        json["generator_images_per_s"] = serde_json::json!(report.images_per_s);
        json["fake_score_images_per_s"] = serde_json::json!(report.images_per_s * fake_updates as f64);
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} on {}, batch {}", args.config.display(), report.device, report.batch_size);
    println!("  {:.4} s per iteration ({fake_updates} fake-score + 1 generator update)", report.sec_per_iteration);
    println!("  {:.1} generator images/s, {:.1} s per kimg", report.images_per_s, report.sec_per_kimg);
    if let Some(mib) = report.gpu_mem_mib {
        println!("  GPU memory in use {mib:.0} MiB");
    }
    println!("  resident memory {:.0} MiB", report.rss_mib.unwrap_or(f64::NAN));
    Ok(ExitCode::SUCCESS)
}
