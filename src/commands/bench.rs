//! `difi bench CONFIG`: the speed and memory of Diff-Instruct iterations for
//! a config, timed after a warm-up with the GPU synchronised before every
//! clock reading.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use difi_core::components::build_trainer;
use difi_core::device::{Stream, gpu_memory_used_mib, parse_device, reseed};
use difi_core::run_dir::resident_memory_mib;
use tch::Device;

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

fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let (config, registry) = super::load_resolved(&args.config, &args.config_args)?;
    let device = parse_device(&config.device)?;
    let mut trainer = build_trainer(&config, &registry).context("building the networks")?;
    for i in 0..args.warmup {
        reseed(config.seed, Stream::Iteration, i);
        trainer.iteration()?;
    }
    synchronize(device);
    let started = Instant::now();
    for i in 0..args.iterations {
        reseed(config.seed, Stream::Iteration, args.warmup + i);
        trainer.iteration()?;
    }
    synchronize(device);
    let seconds = started.elapsed().as_secs_f64() / args.iterations.max(1) as f64;
    let batch = config.schedule.batch_size as f64;
    let fake_updates = config.schedule.fake_updates_per_iter as f64;
    let report = serde_json::json!({
        "config": args.config,
        "device": format!("{device:?}"),
        "batch_size": config.schedule.batch_size,
        "fake_updates_per_iter": config.schedule.fake_updates_per_iter,
        "sec_per_iteration": seconds,
        "generator_images_per_s": batch / seconds,
        "fake_score_images_per_s": batch * fake_updates / seconds,
        "sec_per_kimg": seconds * 1000.0 / batch,
        "gpu_mem_mib": match device { Device::Cuda(index) => gpu_memory_used_mib(index), _ => None },
        "rss_mib": resident_memory_mib(),
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{} on {device:?}, batch {}", args.config.display(), config.schedule.batch_size);
        println!(
            "  {:.4} s per iteration ({} fake-score + 1 generator update)",
            seconds, config.schedule.fake_updates_per_iter
        );
        println!("  {:.1} generator images/s, {:.1} s per kimg", batch / seconds, seconds * 1000.0 / batch);
        if let Some(mib) = report["gpu_mem_mib"].as_f64() {
            println!("  GPU memory in use {mib:.0} MiB");
        }
        println!("  resident memory {:.0} MiB", report["rss_mib"].as_f64().unwrap_or(f64::NAN));
    }
    Ok(ExitCode::SUCCESS)
}
