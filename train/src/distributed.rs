//! Data parallelism on c10d: how a rank learns its place (the variables
//! `torchrun` and Slurm set), and what the runner asks of the group —
//! averaging gradients, agreeing on a stop, copying rank 0's state.
//!
//! The global batch (`schedule.batch_size`) is split evenly: each rank runs
//! the step on `batch_size / world_size` samples, drawn as its rows of the
//! global batch's random draws ([`difi_core::shard`]), and the runner
//! averages gradients before every optimiser update, so N ranks follow the
//! single-process trajectory. Only rank 0 writes the run directory.

use std::time::Duration;

use difi_core::error::{Error, Result, TorchContext};
use difi_core::shard::Shard;
use difi_torch_ext::distributed::{Backend, ProcessGroup, Store};
use tch::{Device, Kind, Tensor};

/// Where this process stands, from the launcher's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Global rank (`RANK`, or Slurm's `SLURM_PROCID`).
    pub rank: i32,
    /// Number of ranks (`WORLD_SIZE`, or `SLURM_NTASKS`).
    pub world_size: i32,
    /// Rank on this node, the GPU index (`LOCAL_RANK`, or `SLURM_LOCALID`).
    pub local_rank: i32,
    /// Host of rank 0's store (`MASTER_ADDR`).
    pub master_addr: String,
    /// Port of rank 0's store (`MASTER_PORT`).
    pub master_port: u16,
    /// Whether the launcher already serves the store at that address
    /// (torchrun's agent does, and says so with
    /// `TORCHELASTIC_USE_AGENT_STORE=True`); otherwise rank 0 serves it.
    pub launcher_serves_store: bool,
}

/// How long a collective or the rendezvous may wait for the other ranks
/// before failing (`DIFI_DIST_TIMEOUT_S`, default 30 minutes, as PyTorch's).
/// Rank 0 computes metrics alone while the others wait, so keep it above the
/// longest metric evaluation.
pub const TIMEOUT_VARIABLE: &str = "DIFI_DIST_TIMEOUT_S";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl Launch {
    /// The launch described by `var` (the environment, in practice): `None`
    /// for a single process (no `WORLD_SIZE`/`SLURM_NTASKS`, or 1 without
    /// `MASTER_ADDR`). A world of one with a store address is a real group
    /// of one, as `torchrun --nproc-per-node 1` makes.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let first = |names: &[&'static str]| names.iter().find_map(|n| var(n).map(|v| (*n, v)));
        let number = |names: &[&'static str]| -> Result<Option<i64>> {
            match first(names) {
                None => Ok(None),
                Some((name, value)) => value
                    .trim()
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| launch_error(format!("{name}={value:?} is not a whole number"))),
            }
        };
        let world_size = number(&["WORLD_SIZE", "SLURM_NTASKS"])?.unwrap_or(1);
        if world_size == 1 && var("MASTER_ADDR").is_none() {
            return Ok(None);
        }
        if !(1..=65536).contains(&world_size) {
            return Err(launch_error(format!("WORLD_SIZE={world_size} is not in 1..=65536")));
        }
        let rank = number(&["RANK", "SLURM_PROCID"])?
            .ok_or_else(|| launch_error(format!("WORLD_SIZE={world_size} but RANK is not set")))?;
        if !(0..world_size).contains(&rank) {
            return Err(launch_error(format!("RANK={rank} is not in 0..{world_size}")));
        }
        let local_rank = number(&["LOCAL_RANK", "SLURM_LOCALID"])?.unwrap_or(0);
        if !(0..world_size).contains(&local_rank) {
            return Err(launch_error(format!("LOCAL_RANK={local_rank} is not in 0..{world_size}")));
        }
        let master_addr = var("MASTER_ADDR").ok_or_else(|| launch_error("MASTER_ADDR is not set".into()))?;
        let port = var("MASTER_PORT").ok_or_else(|| launch_error("MASTER_PORT is not set".into()))?;
        let master_port = port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| launch_error(format!("MASTER_PORT={port:?} is not a port")))?;
        let launcher_serves_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.trim() == "True");
        Ok(Some(Launch {
            rank: rank as i32,
            world_size: world_size as i32,
            local_rank: local_rank as i32,
            master_addr,
            master_port,
            launcher_serves_store,
        }))
    }

    /// [`from_vars`](Self::from_vars) over this process's environment.
    pub fn from_env() -> Result<Option<Launch>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }
}

fn launch_error(message: String) -> Error {
    Error::config("", format!("distributed launch: {message}"))
}

fn group_error(message: String) -> Error {
    Error::Plugin { plugin: "distributed training".into(), message }
}

/// The collective timeout: `DIFI_DIST_TIMEOUT_S` or 30 minutes.
pub fn timeout_from_env() -> Result<Duration> {
    match std::env::var(TIMEOUT_VARIABLE) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 1.0 && *s <= 7.0 * 86400.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                launch_error(format!("{TIMEOUT_VARIABLE}={text:?} is not a number of seconds in 1..=604800"))
            }),
    }
}

/// This rank's membership of the group.
pub struct Distributed {
    launch: Launch,
    store: Store,
    group: ProcessGroup,
}

impl Distributed {
    /// Joins the group `launch` describes, with NCCL when training on CUDA
    /// (falling back to Gloo when this build has no NCCL) and Gloo on the CPU.
    pub fn join(launch: Launch, device: Device, timeout: Duration) -> Result<Self> {
        let is_server = launch.rank == 0 && !launch.launcher_serves_store;
        tracing::info!(
            "rank {} of {}: joining the group at {}:{} ({})",
            launch.rank,
            launch.world_size,
            launch.master_addr,
            launch.master_port,
            if device.is_cuda() { "NCCL" } else { "Gloo" }
        );
        let store = Store::connect(&launch.master_addr, launch.master_port, is_server, launch.world_size, timeout)
            .map_err(|e| {
                group_error(format!(
                    "rank {} could not reach the store at {}:{}: {}",
                    launch.rank,
                    launch.master_addr,
                    launch.master_port,
                    e.message()
                ))
            })?;
        let backend = if device.is_cuda() { Backend::Nccl } else { Backend::Gloo };
        let group = match ProcessGroup::new(&store, backend, launch.rank, launch.world_size, timeout) {
            Err(e) if backend == Backend::Nccl && e.message().contains("has no NCCL") => {
                tracing::warn!("{}; using Gloo for CUDA tensors", e.message());
                ProcessGroup::new(&store, Backend::Gloo, launch.rank, launch.world_size, timeout)
            }
            other => other,
        }
        .map_err(|e| group_error(format!("rank {} could not join the group: {}", launch.rank, e.message())))?;
        let me = Distributed { launch, store, group };
        me.store
            .set(&pid_key(me.launch.rank), format!("{} {}", hostname(), std::process::id()).as_bytes())
            .map_err(|e| group_error(e.to_string()))?;
        Ok(me)
    }

    /// The launch this rank joined with.
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// This rank's rows of each batch.
    pub fn shard(&self) -> Shard {
        Shard { rank: self.launch.rank as i64, world_size: self.launch.world_size as i64 }
    }

    /// Whether this rank writes the run directory (rank 0).
    pub fn is_writer(&self) -> bool {
        self.launch.rank == 0
    }

    /// Averages `tensors` (gradients, the same list on every rank) and
    /// `values` (loss values) over the ranks, in place and in one
    /// collective: packed into one buffer per call, as a single bucket.
    pub fn average(&self, tensors: &[Tensor], values: &mut [f64]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let device = tensors.first().map(Tensor::device).unwrap_or(Device::Cpu);
        // One dtype for the buffer: the gradients' own when they agree (no
        // rounding beyond the sum's), else float32.
        let kind = match tensors.first().map(Tensor::kind) {
            Some(kind) if tensors.iter().all(|t| t.kind() == kind) => kind,
            _ => Kind::Float,
        };
        let mut pieces: Vec<Tensor> = tensors.iter().map(|t| t.to_kind(kind).reshape([-1])).collect();
        pieces.push(Tensor::from_slice(values).to_kind(kind).to_device(device));
        let flat = Tensor::f_cat(&pieces, 0).ctx("pack gradients")?;
        self.all_reduce_sum(&flat, "averaging gradients")?;
        let flat = flat / self.launch.world_size as f64;
        let mut offset = 0;
        for tensor in tensors {
            let numel = tensor.numel() as i64;
            let part = flat.f_narrow(0, offset, numel).ctx("unpack gradients")?.f_view_as(tensor).ctx("unpack")?;
            tensor.shallow_clone().f_copy_(&part).map(|_| ()).ctx("unpack gradients")?;
            offset += numel;
        }
        let losses = flat.f_narrow(0, offset, values.len() as i64).ctx("unpack losses")?;
        let averaged =
            Vec::<f64>::try_from(losses.f_to_kind(Kind::Double).ctx("unpack losses")?).ctx("unpack losses")?;
        values.copy_from_slice(&averaged);
        Ok(())
    }

    /// `tensor` ← the sum of every rank's `tensor`, in place (it must be
    /// contiguous).
    pub fn sum(&self, tensor: &Tensor) -> Result<()> {
        self.all_reduce_sum(tensor, "gathering metric features")
    }

    /// Whether any rank says `flag` (a stop request, say).
    pub fn any(&self, flag: bool) -> Result<bool> {
        let count = Tensor::from_slice(&[flag as i32]);
        self.all_reduce_sum(&count, "agreeing to stop")?;
        Ok(count.int64_value(&[0]) > 0)
    }

    /// Overwrites `tensors` with rank 0's, in place, one collective per
    /// tensor (this runs at start and on resume only).
    pub fn broadcast_from_rank0(&self, tensors: &[Tensor]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for tensor in tensors {
            let buffer = tensor.f_contiguous().ctx("broadcast")?;
            self.group.broadcast(&buffer, 0).map_err(|e| self.collective_error("copying rank 0's weights", e))?;
            if buffer.data_ptr() != tensor.data_ptr() {
                tensor.shallow_clone().f_copy_(&buffer).map(|_| ()).ctx("broadcast")?;
            }
        }
        Ok(())
    }

    /// Rank 0's `bytes` on every rank (the training state, say).
    pub fn broadcast_bytes(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let len = Tensor::from_slice(&[bytes.len() as i64]);
        self.group.broadcast(&len, 0).map_err(|e| self.collective_error("copying rank 0's state", e))?;
        let len = usize::try_from(len.int64_value(&[0])).map_err(|_| group_error("negative state length".into()))?;
        let data = if self.is_writer() {
            Tensor::from_slice(bytes)
        } else {
            Tensor::zeros([len as i64], (Kind::Uint8, Device::Cpu))
        };
        self.group.broadcast(&data, 0).map_err(|e| self.collective_error("copying rank 0's state", e))?;
        Vec::<u8>::try_from(data).ctx("state bytes")
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<()> {
        self.group.barrier().map_err(|e| self.collective_error("waiting for the other ranks", e))
    }

    fn all_reduce_sum(&self, tensor: &Tensor, doing: &str) -> Result<()> {
        self.group.all_reduce_sum(tensor).map_err(|e| self.collective_error(doing, e))
    }

    /// A failed collective, with the ranks that are gone named where this
    /// rank can tell (those on its own host whose process has exited; rank
    /// 0, when the store it serves cannot be reached).
    fn collective_error(&self, doing: &str, error: difi_torch_ext::Error) -> Error {
        // A killed peer's sockets close while the kernel is still tearing the
        // process down, so it may look alive for a moment: look again briefly.
        let mut gone = self.gone_ranks();
        for _ in 0..20 {
            if gone.as_ref().is_none_or(|ranks| !ranks.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            gone = self.gone_ranks();
        }
        let who = match gone {
            Some(ranks) if !ranks.is_empty() => {
                let names: Vec<String> = ranks.iter().map(|r| format!("rank {r}")).collect();
                format!("{} exited", names.join(", "))
            }
            Some(_) => "a rank on another host failed or timed out".to_string(),
            None if self.launch.launcher_serves_store => format!(
                "the launcher's store at {}:{} is unreachable (did the launcher or its node go down?)",
                self.launch.master_addr, self.launch.master_port
            ),
            None => format!(
                "rank 0 (which serves the store at {}:{}) is unreachable",
                self.launch.master_addr, self.launch.master_port
            ),
        };
        group_error(format!("rank {}: {doing} failed: {who} ({})", self.launch.rank, error.message().trim()))
    }

    /// The ranks on this host whose process no longer exists, or `None`
    /// when the store cannot be read.
    fn gone_ranks(&self) -> Option<Vec<i32>> {
        let host = hostname();
        let mut gone = Vec::new();
        for rank in (0..self.launch.world_size).filter(|&r| r != self.launch.rank) {
            let value = self.store.try_get(&pid_key(rank)).ok()?;
            let Some(value) = value else {
                gone.push(rank);
                continue;
            };
            let text = String::from_utf8_lossy(&value);
            let mut words = text.split_whitespace();
            let (Some(their_host), Some(pid)) = (words.next(), words.next().and_then(|p| p.parse::<i32>().ok())) else {
                continue;
            };
            if their_host == host && !process_exists(pid) {
                gone.push(rank);
            }
        }
        Some(gone)
    }
}

fn pid_key(rank: i32) -> String {
    format!("difi/pid/{rank}")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// Whether a process with this id exists (and is not a zombie awaiting its
/// parent, which is how a killed child of `--nproc-per-node` looks).
fn process_exists(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn torchrun_and_slurm_variables_describe_a_launch() {
        assert_eq!(launch(&[]).unwrap(), None);
        assert_eq!(launch(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
        let one = [("WORLD_SIZE", "1"), ("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")];
        assert_eq!(launch(&one).unwrap().expect("a group of one").world_size, 1);
        let torchrun = [
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ];
        let expected = Launch {
            rank: 3,
            world_size: 4,
            local_rank: 1,
            master_addr: "node0".into(),
            master_port: 29500,
            launcher_serves_store: false,
        };
        assert_eq!(launch(&torchrun).unwrap(), Some(expected.clone()));
        let mut agent = torchrun.to_vec();
        agent.push(("TORCHELASTIC_USE_AGENT_STORE", "True"));
        assert!(launch(&agent).unwrap().expect("a launch").launcher_serves_store);
        let slurm = [
            ("SLURM_NTASKS", "4"),
            ("SLURM_PROCID", "3"),
            ("SLURM_LOCALID", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ];
        assert_eq!(launch(&slurm).unwrap(), Some(expected));
    }

    #[test]
    fn bad_launch_variables_are_named() {
        let base = [("MASTER_ADDR", "h"), ("MASTER_PORT", "1234")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = base.to_vec();
            vars.extend_from_slice(extra);
            launch(&vars).expect_err("refused").to_string()
        };
        assert!(with(&[("WORLD_SIZE", "two")]).contains("WORLD_SIZE=\"two\""));
        assert!(with(&[("WORLD_SIZE", "2")]).contains("RANK is not set"));
        assert!(with(&[("WORLD_SIZE", "2"), ("RANK", "2")]).contains("RANK=2 is not in 0..2"));
        assert!(with(&[("WORLD_SIZE", "0")]).contains("WORLD_SIZE=0"));
        let no_port = launch(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h")]).unwrap_err();
        assert!(no_port.to_string().contains("MASTER_PORT is not set"));
        let bad_port = launch(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "99999")]);
        assert!(bad_port.unwrap_err().to_string().contains("MASTER_PORT=\"99999\" is not a port"));
    }

    #[test]
    fn only_live_processes_exist() {
        assert!(process_exists(std::process::id() as i32));
        assert!(!process_exists(i32::MAX));
    }
}
