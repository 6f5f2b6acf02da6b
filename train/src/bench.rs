//! The speed and memory of training iterations for a config, timed after a
//! warm-up with the GPU synchronised before every clock reading.

use std::collections::BTreeMap;
use std::time::Instant;

use difi_core::error::Result;
use difi_core::registry::Registry;
use difi_core::rng::{RngStream, reseed};
use serde::Serialize;
use tch::Device;

use crate::algorithm::Algorithm;
use crate::config::RunConfig;
use crate::session::build_runner;
use crate::stats::{gpu_memory_used_mib, peak_resident_memory_mib, resident_memory_mib};

/// What `difi bench` reports.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub device: String,
    /// libtorch's intra-op threads.
    pub threads: i32,
    pub batch_size: i64,
    /// Timed iterations.
    pub iterations: u64,
    /// Whether the timed iterations were replays of a CUDA graph (`cuda_graph: true`).
    pub cuda_graph: bool,
    /// Mean over the timed iterations.
    pub sec_per_iteration: f64,
    /// Median of the timed iterations, each clocked on its own.
    pub sec_per_iteration_median: f64,
    /// Samples per second through one iteration (from the median).
    pub images_per_s: f64,
    /// Seconds per thousand samples (from the median).
    pub sec_per_kimg: f64,
    /// Device-wide memory in use on the GPU after the timed iterations (NVML).
    pub gpu_mem_mib: Option<f64>,
    /// Resident memory after the timed iterations.
    pub rss_mib: Option<f64>,
    /// Peak resident memory of the process.
    pub peak_rss_mib: Option<f64>,
    /// The most CUDA memory tensors held during the timed iterations (the
    /// caching allocator's peak, as `torch.cuda.max_memory_allocated`).
    pub gpu_max_allocated_mib: Option<f64>,
    /// The same for each trained part's update (its forward, backward and
    /// optimiser step, from the end of the previous update), by part name.
    pub gpu_max_allocated_mib_by_part: Option<BTreeMap<String, f64>>,
}

fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// The median of `values` (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Runs `warmup` untimed iterations (allocator, cuDNN autotuning; with a
/// CUDA graph at least its eager warm-up and its capture), then times
/// `iterations`, each on its own clock (the GPU synchronised after each).
pub fn bench<A: Algorithm>(
    config: &RunConfig<A>,
    registry: &Registry,
    iterations: u64,
    warmup: u64,
) -> Result<BenchReport> {
    let device = config.run.resolve_device()?;
    let mut runner = build_runner(config, registry)?;
    let warmup = match runner.uses_cuda_graph() {
        true => warmup.max(u64::from(crate::runner::GRAPH_WARMUP_ITERATIONS) + 1),
        false => warmup,
    };
    for i in 0..warmup {
        reseed(config.run.seed, RngStream::Iteration, i);
        runner.iteration()?;
    }
    synchronize(device);
    if let Device::Cuda(index) = device {
        // Replays record no per-part peaks: the overall one starts here.
        let _ = difi_torch_ext::device_memory::reset_cuda_peak(index);
    }
    runner.measure_part_peaks();
    let mut times = Vec::with_capacity(iterations as usize);
    let started = Instant::now();
    for i in 0..iterations {
        reseed(config.run.seed, RngStream::Iteration, warmup + i);
        let clock = Instant::now();
        runner.iteration()?;
        synchronize(device);
        times.push(clock.elapsed().as_secs_f64());
    }
    let seconds = started.elapsed().as_secs_f64() / iterations.max(1) as f64;
    let median = median(&times);
    let batch = config.run.schedule.batch_size;
    let by_part = runner.part_peaks().cloned();
    // The window after the last update (the EMAs) counts too.
    let after = match device {
        Device::Cuda(index) => difi_torch_ext::device_memory::cuda_memory(index).ok(),
        _ => None,
    };
    let gpu_max_allocated_mib = by_part
        .iter()
        .flat_map(|peaks| peaks.values().copied())
        .chain(after.map(|m| m.peak_allocated as f64 / (1024.0 * 1024.0)))
        .reduce(f64::max);
    Ok(BenchReport {
        device: format!("{device:?}"),
        threads: tch::get_num_threads(),
        batch_size: batch,
        iterations,
        cuda_graph: runner.cuda_graph_captured(),
        sec_per_iteration: seconds,
        sec_per_iteration_median: median,
        images_per_s: batch as f64 / median,
        sec_per_kimg: median * 1000.0 / batch as f64,
        gpu_mem_mib: match device {
            Device::Cuda(index) => gpu_memory_used_mib(index),
            _ => None,
        },
        rss_mib: resident_memory_mib(),
        peak_rss_mib: peak_resident_memory_mib(),
        gpu_max_allocated_mib,
        gpu_max_allocated_mib_by_part: by_part,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
