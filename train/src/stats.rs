//! What a tick reports in `stats.jsonl`: mean losses, time and memory.

use std::time::Instant;

use tch::Device;

use crate::step::LossValues;

/// Sums over one tick for its `stats.jsonl` line.
pub struct TickStats {
    started: Instant,
    start_nimg: u64,
    sums: Vec<(&'static str, f64)>,
    count: u64,
}

impl TickStats {
    /// A tick starting at `start_nimg` samples.
    pub fn new(start_nimg: u64) -> Self {
        TickStats { started: Instant::now(), start_nimg, sums: Vec::new(), count: 0 }
    }

    /// Adds an iteration's losses; iterations with a non-finite loss are left out.
    pub fn add(&mut self, losses: &LossValues) {
        if losses.first_non_finite().is_some() {
            return;
        }
        for (name, value) in &losses.0 {
            match self.sums.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => *sum += value,
                None => self.sums.push((name, *value)),
            }
        }
        self.count += 1;
    }

    /// The names of the losses added so far, in their order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sums.iter().map(|(name, _)| *name)
    }

    /// Mean of loss `name` over the tick, if any iteration was finite.
    pub fn mean(&self, name: &str) -> Option<f64> {
        let (_, sum) = self.sums.iter().find(|(n, _)| *n == name)?;
        (self.count > 0).then(|| sum / self.count as f64)
    }

    /// The tick's line: `tick`, `iteration`, `kimg`, `loss_<name>` for each
    /// loss, timing, and memory.
    pub fn line(&self, tick: u64, iteration: u64, nimg: u64, total_time_s: f64, device: Device) -> serde_json::Value {
        let seconds = self.started.elapsed().as_secs_f64();
        let kimg_done = (nimg - self.start_nimg) as f64 / 1000.0;
        let mut line = serde_json::json!({
            "tick": tick,
            "iteration": iteration,
            "kimg": nimg as f64 / 1000.0,
        });
        for (name, _) in &self.sums {
            line[format!("loss_{name}")] = serde_json::json!(self.mean(name));
        }
        line["sec_per_tick"] = serde_json::json!(seconds);
        line["sec_per_kimg"] = serde_json::json!(if kimg_done > 0.0 { seconds / kimg_done } else { 0.0 });
        line["total_time_s"] = serde_json::json!(total_time_s);
        line["rss_mib"] = serde_json::json!(resident_memory_mib());
        line["gpu_mem_mib"] = serde_json::json!(match device {
            Device::Cuda(index) => gpu_memory_used_mib(index),
            _ => None,
        });
        line
    }
}

/// Resident memory of this process in MiB (Linux), for the stats.
pub fn resident_memory_mib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

/// The process's peak resident set size (`VmHWM`), in MiB; `None` where
/// `/proc` does not say.
pub fn peak_resident_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Memory in use on CUDA device `index`, in MiB, from NVIDIA's management
/// library (device-wide: libtorch's caching allocator holds what it has
/// reserved, so after some iterations this is the run's peak). `None` where
/// there is no NVML or no such device.
pub fn gpu_memory_used_mib(index: usize) -> Option<f64> {
    use std::ffi::c_void;
    #[repr(C)]
    struct Memory {
        total: u64,
        free: u64,
        used: u64,
    }
    type Init = unsafe extern "C" fn() -> i32;
    type Handle = unsafe extern "C" fn(u32, *mut *mut c_void) -> i32;
    type MemoryInfo = unsafe extern "C" fn(*mut c_void, *mut Memory) -> i32;
    static NVML: std::sync::OnceLock<Option<libloading::Library>> = std::sync::OnceLock::new();
    // SAFETY: NVML's documented C entry points with their documented
    // signatures; the library stays loaded for the process.
    unsafe {
        let library = NVML.get_or_init(|| libloading::Library::new("libnvidia-ml.so.1").ok()).as_ref()?;
        let init: libloading::Symbol<Init> = library.get(b"nvmlInit_v2\0").ok()?;
        if init() != 0 {
            return None;
        }
        let handle_of: libloading::Symbol<Handle> = library.get(b"nvmlDeviceGetHandleByIndex_v2\0").ok()?;
        let mut handle = std::ptr::null_mut();
        if handle_of(index as u32, &mut handle) != 0 {
            return None;
        }
        let memory_of: libloading::Symbol<MemoryInfo> = library.get(b"nvmlDeviceGetMemoryInfo\0").ok()?;
        let mut memory = Memory { total: 0, free: 0, used: 0 };
        if memory_of(handle, &mut memory) != 0 {
            return None;
        }
        Some(memory.used as f64 / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_skip_non_finite_iterations_and_name_each_loss() {
        let mut tick = TickStats::new(0);
        tick.add(&LossValues(vec![("fake_score", 1.0), ("generator", -2.0)]));
        tick.add(&LossValues(vec![("fake_score", f64::NAN), ("generator", 5.0)]));
        tick.add(&LossValues(vec![("fake_score", 3.0), ("generator", 0.0)]));
        assert_eq!(tick.mean("fake_score"), Some(2.0));
        assert_eq!(tick.mean("generator"), Some(-1.0));
        let line = tick.line(0, 3, 300, 1.0, Device::Cpu);
        assert_eq!(line["loss_fake_score"], serde_json::json!(2.0));
        assert_eq!(line["kimg"], serde_json::json!(0.3));
    }
}
