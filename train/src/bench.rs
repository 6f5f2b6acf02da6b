//! The speed and memory of training iterations for a config, timed after a
//! warm-up with the GPU synchronised before every clock reading.

use std::time::Instant;

use difi_core::error::Result;
use difi_core::registry::Registry;
use difi_core::rng::{RngStream, reseed};
use serde::Serialize;
use tch::Device;

use crate::algorithm::Algorithm;
use crate::config::RunConfig;
use crate::session::build_runner;
use crate::stats::{gpu_memory_used_mib, resident_memory_mib};

/// What `difi bench` reports.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub device: String,
    pub batch_size: i64,
    pub sec_per_iteration: f64,
    /// Samples per second through one iteration.
    pub images_per_s: f64,
    pub sec_per_kimg: f64,
    pub gpu_mem_mib: Option<f64>,
    pub rss_mib: Option<f64>,
}

fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// Runs `warmup` untimed iterations (allocator, cuDNN autotuning), then
/// times `iterations`.
pub fn bench<A: Algorithm>(
    config: &RunConfig<A>,
    registry: &Registry,
    iterations: u64,
    warmup: u64,
) -> Result<BenchReport> {
    let device = config.run.resolve_device()?;
    let mut runner = build_runner(config, registry)?;
    for i in 0..warmup {
        reseed(config.run.seed, RngStream::Iteration, i);
        runner.iteration()?;
    }
    synchronize(device);
    let started = Instant::now();
    for i in 0..iterations {
        reseed(config.run.seed, RngStream::Iteration, warmup + i);
        runner.iteration()?;
    }
    synchronize(device);
    let seconds = started.elapsed().as_secs_f64() / iterations.max(1) as f64;
    let batch = config.run.schedule.batch_size;
    Ok(BenchReport {
        device: format!("{device:?}"),
        batch_size: batch,
        sec_per_iteration: seconds,
        images_per_s: batch as f64 / seconds,
        sec_per_kimg: seconds * 1000.0 / batch as f64,
        gpu_mem_mib: match device {
            Device::Cuda(index) => gpu_memory_used_mib(index),
            _ => None,
        },
        rss_mib: resident_memory_mib(),
    })
}
