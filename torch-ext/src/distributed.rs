//! libtorch's c10d: a TCP key-value store for rendezvous and process groups
//! (Gloo for CPU tensors, NCCL for CUDA ones) with the collectives a
//! data-parallel trainer needs. The same engine `torch.distributed` drives,
//! so a difi rank and a PyTorch rank speak the same protocol.
//!
//! Collectives block until every rank has joined them, and fail (rather
//! than hang) when a peer's connection breaks or the group's timeout passes.

use std::ffi::{CString, c_char, c_int};
use std::ptr::NonNull;
use std::time::Duration;

use tch::Tensor;
use torch_sys::C_tensor;

use crate::{Error, checked};

/// Opaque C++ objects (csrc/distributed.h).
#[repr(C)]
struct RawStore {
    _private: [u8; 0],
}
#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn difi_dist_store_new(
        host: *const c_char,
        port: u16,
        is_server: bool,
        world_size: c_int,
        timeout_ms: i64,
        out: *mut *mut RawStore,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn difi_dist_store_free(store: *mut RawStore);
    fn difi_dist_store_set(
        store: *mut RawStore,
        key: *const c_char,
        value: *const u8,
        len: usize,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn difi_dist_store_try_get(
        store: *mut RawStore,
        key: *const c_char,
        buffer: *mut u8,
        capacity: usize,
        len: *mut usize,
        present: *mut bool,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn difi_dist_gloo_new(
        store: *mut RawStore,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn difi_dist_nccl_new(
        store: *mut RawStore,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn difi_dist_group_free(group: *mut RawGroup);
    fn difi_dist_all_reduce_sum(group: *mut RawGroup, tensor: *mut C_tensor, error: *mut c_char, len: usize) -> c_int;
    fn difi_dist_broadcast(
        group: *mut RawGroup,
        tensor: *mut C_tensor,
        root: c_int,
        error: *mut c_char,
        len: usize,
    ) -> c_int;
    fn difi_dist_barrier(group: *mut RawGroup, error: *mut c_char, len: usize) -> c_int;
}

/// Longest value [`Store::try_get`] returns; rendezvous values are short.
const MAX_VALUE_LEN: usize = 64 * 1024;

fn c_string(operation: &'static str, text: &str) -> Result<CString, Error> {
    CString::new(text).map_err(|_| Error::invalid(operation, format!("`{text}` contains a NUL byte")))
}

fn millis(operation: &'static str, timeout: Duration) -> Result<i64, Error> {
    i64::try_from(timeout.as_millis())
        .ok()
        .filter(|&ms| ms > 0)
        .ok_or_else(|| Error::invalid(operation, format!("timeout {timeout:?} out of range")))
}

/// c10d's `TCPStore`: rank 0 serves it at `host:port`, every rank (rank 0
/// included) is a client.
pub struct Store {
    raw: NonNull<RawStore>,
}

impl Store {
    /// Connects to (and, when `is_server`, first starts) the store at
    /// `host:port` for `world_size` ranks; operations give up after `timeout`.
    pub fn connect(host: &str, port: u16, is_server: bool, world_size: i32, timeout: Duration) -> Result<Self, Error> {
        let host = c_string("store_connect", host)?;
        let timeout_ms = millis("store_connect", timeout)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `host` is a NUL-terminated string alive for the call; `raw`
        // is a valid out-pointer; the buffer comes from `checked`.
        checked("store_connect", |error, len| unsafe {
            difi_dist_store_new(host.as_ptr(), port, is_server, world_size, timeout_ms, &mut raw, error, len)
        })?;
        let raw = NonNull::new(raw).ok_or_else(|| Error::invalid("store_connect", "no store returned".into()))?;
        Ok(Store { raw })
    }

    /// Sets `key` to `value` for every rank to read.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        let key = c_string("store_set", key)?;
        // SAFETY: the store is live; key and value are valid for the call.
        checked("store_set", |error, len| unsafe {
            difi_dist_store_set(self.raw.as_ptr(), key.as_ptr(), value.as_ptr(), value.len(), error, len)
        })
    }

    /// The value of `key`, or `None` if no rank has set it; does not wait.
    pub fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let key_c = c_string("store_get", key)?;
        let mut buffer = vec![0u8; MAX_VALUE_LEN];
        let (mut len, mut present) = (0usize, false);
        // SAFETY: the store is live; `buffer` has `MAX_VALUE_LEN` bytes and
        // the out-pointers point at live locals.
        checked("store_get", |error, error_len| unsafe {
            difi_dist_store_try_get(
                self.raw.as_ptr(),
                key_c.as_ptr(),
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut len,
                &mut present,
                error,
                error_len,
            )
        })?;
        if !present {
            return Ok(None);
        }
        if len > MAX_VALUE_LEN {
            return Err(Error::invalid("store_get", format!("value of `{key}` is {len} bytes, over {MAX_VALUE_LEN}")));
        }
        buffer.truncate(len);
        Ok(Some(buffer))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: `raw` came from difi_dist_store_new and is freed once.
        unsafe { difi_dist_store_free(self.raw.as_ptr()) }
    }
}

/// Which c10d process group to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors (and CUDA ones through host copies).
    Gloo,
    /// NCCL: CUDA tensors, one GPU per rank.
    Nccl,
}

/// A c10d process group of `world_size` ranks. Every rank must call the
/// same collectives in the same order.
pub struct ProcessGroup {
    raw: NonNull<RawGroup>,
    rank: i32,
    world_size: i32,
}

impl ProcessGroup {
    /// Joins the group through `store` (every rank passes its own rank and
    /// the same world size); collectives fail after `timeout`.
    pub fn new(store: &Store, backend: Backend, rank: i32, world_size: i32, timeout: Duration) -> Result<Self, Error> {
        if world_size < 1 || !(0..world_size).contains(&rank) {
            return Err(Error::invalid("process_group", format!("rank {rank} of world size {world_size}")));
        }
        let timeout_ms = millis("process_group", timeout)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: the store is live for the call (the group keeps its own
        // reference); `raw` is a valid out-pointer.
        checked("process_group", |error, len| unsafe {
            match backend {
                Backend::Gloo => {
                    difi_dist_gloo_new(store.raw.as_ptr(), rank, world_size, timeout_ms, &mut raw, error, len)
                }
                Backend::Nccl => {
                    difi_dist_nccl_new(store.raw.as_ptr(), rank, world_size, timeout_ms, &mut raw, error, len)
                }
            }
        })?;
        let raw = NonNull::new(raw).ok_or_else(|| Error::invalid("process_group", "no group returned".into()))?;
        Ok(ProcessGroup { raw, rank, world_size })
    }

    /// This process's rank.
    pub fn rank(&self) -> i32 {
        self.rank
    }

    /// The number of ranks.
    pub fn world_size(&self) -> i32 {
        self.world_size
    }

    /// `tensor` ← the sum of every rank's `tensor`, in place. One
    /// contiguous tensor per call: pack lists first.
    pub fn all_reduce_sum(&self, tensor: &Tensor) -> Result<(), Error> {
        if !tensor.is_contiguous() {
            return Err(Error::invalid("all_reduce_sum", "the tensor must be contiguous".into()));
        }
        // SAFETY: the group and the tensor are live for the call.
        checked("all_reduce_sum", |error, len| unsafe {
            difi_dist_all_reduce_sum(self.raw.as_ptr(), tensor.as_ptr() as *mut C_tensor, error, len)
        })
    }

    /// `tensor` ← rank `root`'s `tensor`, in place (same shape everywhere).
    pub fn broadcast(&self, tensor: &Tensor, root: i32) -> Result<(), Error> {
        if !tensor.is_contiguous() {
            return Err(Error::invalid("broadcast", "the tensor must be contiguous".into()));
        }
        // SAFETY: the group and the tensor are live for the call.
        checked("broadcast", |error, len| unsafe {
            difi_dist_broadcast(self.raw.as_ptr(), tensor.as_ptr() as *mut C_tensor, root, error, len)
        })
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), Error> {
        // SAFETY: the group is live for the call.
        checked("barrier", |error, len| unsafe { difi_dist_barrier(self.raw.as_ptr(), error, len) })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from difi_dist_*_new and is freed once.
        unsafe { difi_dist_group_free(self.raw.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use tch::{Device, Kind};

    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
    }

    /// Two ranks on threads of this process, as two processes would be.
    fn on_two_ranks<T: Send + 'static>(body: fn(&Store, &ProcessGroup) -> T) -> Vec<T> {
        let port = free_port();
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                thread::spawn(move || {
                    let timeout = Duration::from_secs(30);
                    let store = Store::connect("127.0.0.1", port, rank == 0, 2, timeout).expect("store");
                    let group = ProcessGroup::new(&store, Backend::Gloo, rank, 2, timeout).expect("group");
                    body(&store, &group)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("rank thread")).collect()
    }

    #[test]
    fn gloo_sums_broadcasts_and_meets() {
        let results = on_two_ranks(|store, group| {
            let rank = group.rank();
            let summed = Tensor::from_slice(&[1.0f32 + rank as f32, 10.0 * (rank + 1) as f32]);
            group.all_reduce_sum(&summed).expect("all-reduce");
            let sent = Tensor::full([3], rank as f64 + 5.0, (Kind::Double, Device::Cpu));
            group.broadcast(&sent, 1).expect("broadcast");
            store.set(&format!("hello/{rank}"), format!("rank {rank}").as_bytes()).expect("set");
            group.barrier().expect("barrier");
            let other = store.try_get(&format!("hello/{}", 1 - rank)).expect("get");
            let missing = store.try_get("absent").expect("get absent");
            (Vec::<f32>::try_from(summed).unwrap(), Vec::<f64>::try_from(sent).unwrap(), other, missing)
        });
        for (rank, (summed, sent, other, missing)) in results.into_iter().enumerate() {
            assert_eq!(summed, vec![3.0, 30.0]);
            assert_eq!(sent, vec![6.0; 3]);
            assert_eq!(other, Some(format!("rank {}", 1 - rank).into_bytes()));
            assert_eq!(missing, None);
        }
    }

    #[test]
    fn bad_arguments_are_refused_before_c10d() {
        let store = Store::connect("127.0.0.1", free_port(), true, 1, Duration::from_secs(5)).expect("store");
        let refused = ProcessGroup::new(&store, Backend::Gloo, 1, 1, Duration::from_secs(5));
        assert!(refused.err().expect("rank 1 of 1").message().contains("rank 1 of world size 1"));
        let group = ProcessGroup::new(&store, Backend::Gloo, 0, 1, Duration::from_secs(5)).expect("a group of one");
        let strided = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)).transpose(0, 1);
        assert!(group.all_reduce_sum(&strided).is_err());
        assert!(store.set("nul\0key", b"x").is_err());
    }

    #[test]
    fn a_missing_store_is_an_error_after_the_timeout() {
        let error = Store::connect("127.0.0.1", free_port(), false, 2, Duration::from_millis(1500))
            .err()
            .expect("nobody serves this port");
        assert!(!error.message().is_empty());
    }
}
