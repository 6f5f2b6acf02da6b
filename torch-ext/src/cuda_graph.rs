//! CUDA graphs: work captured once on a side stream and replayed as one
//! launch (`torch.cuda.CUDAGraph`), for iterations whose launch overhead
//! outweighs their arithmetic.
//!
//! What a capture may hold is what PyTorch's may: work on one CUDA device
//! with static shapes and no host synchronisation (no `.item()`, no copy
//! from pageable host memory, no reseeding). Tensors the captured work
//! allocates live in the graph's private memory pool and are rewritten by
//! every replay. Random numbers are graph-safe: a replay draws from the
//! default CUDA generator's seed and offset when it starts, so
//! `manual_seed(s)` then a replay draws what `manual_seed(s)` then the same
//! work run eagerly draws.

use std::any::Any;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr::NonNull;

use crate::{Error, checked};

#[repr(C)]
struct RawGraph {
    _private: [u8; 0],
}

type Body = unsafe extern "C" fn(*mut c_void) -> c_int;

unsafe extern "C" {
    fn difi_ext_cuda_graphs_compiled() -> bool;
    fn difi_ext_cuda_graph_new(device: c_int, out: *mut *mut RawGraph, error: *mut c_char, error_len: usize) -> c_int;
    fn difi_ext_cuda_graph_free(graph: *mut RawGraph);
    fn difi_ext_cuda_graph_run(
        graph: *mut RawGraph,
        capture: bool,
        body: Body,
        closure: *mut c_void,
        body_status: *mut c_int,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn difi_ext_cuda_graph_replay(graph: *mut RawGraph, error: *mut c_char, error_len: usize) -> c_int;
}

/// Whether this build can capture CUDA graphs (its libtorch came with the
/// CUDA runtime headers). A CUDA device is needed besides.
pub fn compiled() -> bool {
    // SAFETY: reads a constant.
    unsafe { difi_ext_cuda_graphs_compiled() }
}

/// One CUDA graph on one device, with the side stream it is captured on.
pub struct CudaGraph {
    raw: NonNull<RawGraph>,
    captured: bool,
}

impl CudaGraph {
    /// An empty graph for CUDA device `index`.
    pub fn new(index: usize) -> Result<Self, Error> {
        let device = c_int::try_from(index).map_err(|_| Error::invalid("cuda_graph_new", format!("device {index}")))?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` is a live out-pointer; the buffer comes from `checked`.
        checked("cuda_graph_new", |error, len| unsafe { difi_ext_cuda_graph_new(device, &mut raw, error, len) })?;
        let raw = NonNull::new(raw).ok_or_else(|| Error::invalid("cuda_graph_new", "no graph returned".into()))?;
        Ok(CudaGraph { raw, captured: false })
    }

    /// Whether a capture is held, ready to replay.
    pub fn is_captured(&self) -> bool {
        self.captured
    }

    /// Runs `body` eagerly on the graph's side stream, ordered after the
    /// work queued before and before the work queued after: the warm-up
    /// PyTorch asks for before capturing the same work. The outer error is
    /// libtorch's; the inner result is the body's.
    pub fn run_on_side_stream<T, E>(&mut self, body: impl FnOnce() -> Result<T, E>) -> Result<Result<T, E>, Error> {
        self.call(body, false, "cuda_graph_run_on_side_stream")
    }

    /// Captures `body` into the graph, replacing any earlier capture. The
    /// body's host code runs once, now; its CUDA work is recorded, not run:
    /// [`replay`](Self::replay) runs it. When the body fails, or the
    /// capture does (an operation a graph cannot hold), the graph is left
    /// empty.
    pub fn capture<T, E>(&mut self, body: impl FnOnce() -> Result<T, E>) -> Result<Result<T, E>, Error> {
        self.captured = false;
        let result = self.call(body, true, "cuda_graph_capture")?;
        self.captured = result.is_ok();
        Ok(result)
    }

    /// Runs the captured work on the current stream.
    pub fn replay(&self) -> Result<(), Error> {
        if !self.captured {
            return Err(Error::invalid("cuda_graph_replay", "the graph holds no capture".into()));
        }
        // SAFETY: the graph is live; the buffer comes from `checked`.
        checked("cuda_graph_replay", |error, len| unsafe { difi_ext_cuda_graph_replay(self.raw.as_ptr(), error, len) })
    }

    /// Hands `body` to the shim, which runs it (eagerly or `capture`d) on
    /// the side stream at most once; a panic in it resumes here, once the
    /// shim has cleaned up.
    fn call<F: FnOnce() -> Result<T, E>, T, E>(
        &mut self,
        body: F,
        capture: bool,
        operation: &'static str,
    ) -> Result<Result<T, E>, Error> {
        let mut slot = Slot { body: Some(body), result: None, panic: None };
        let mut status: c_int = 0;
        let closure = (&mut slot as *mut Slot<F, T, E>).cast::<c_void>();
        // SAFETY: the graph is live; `call_body` gets the slot made here,
        // which outlives the call; `status` and the buffer are live locals.
        let outcome = checked(operation, |error, len| unsafe {
            difi_ext_cuda_graph_run(self.raw.as_ptr(), capture, call_body::<F, T, E>, closure, &mut status, error, len)
        });
        if let Some(payload) = slot.panic.take() {
            resume_unwind(payload);
        }
        outcome?;
        slot.result.ok_or_else(|| Error::invalid(operation, format!("the body never ran (status {status})")))
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: made by `difi_ext_cuda_graph_new`, freed once.
        unsafe { difi_ext_cuda_graph_free(self.raw.as_ptr()) }
    }
}

/// The body and what became of it, shared with the callback.
struct Slot<F, T, E> {
    body: Option<F>,
    result: Option<Result<T, E>>,
    panic: Option<Box<dyn Any + Send>>,
}

/// Runs the body in `closure` once: status 0 when it succeeded, 1 when it
/// failed or panicked (the outcome stays in the slot).
unsafe extern "C" fn call_body<F: FnOnce() -> Result<T, E>, T, E>(closure: *mut c_void) -> c_int {
    // SAFETY: `closure` is the live `Slot` of `CudaGraph::call`, borrowed by nobody else during the call.
    let slot = unsafe { &mut *closure.cast::<Slot<F, T, E>>() };
    let Some(body) = slot.body.take() else { return 1 };
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => {
            let status = c_int::from(result.is_err());
            slot.result = Some(result);
            status
        }
        Err(payload) => {
            slot.panic = Some(payload);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn this_build_has_cuda_graphs_when_libtorch_has_cuda() {
        // The project's torch wheel always has CUDA; a CPU-only libtorch has no libtorch_cuda.
        if tch::Cuda::is_available() {
            assert!(compiled(), "CUDA is available but the shim was built without CUDA graphs");
        }
        if !compiled() {
            let error = CudaGraph::new(0).err().expect("no graphs in this build");
            assert!(error.message().contains("no CUDA graphs"), "{error}");
        }
    }

    #[test]
    fn a_replay_redoes_the_captured_work_and_its_random_draws() {
        if !(compiled() && tch::Cuda::is_available()) {
            return; // needs a GPU: runs in scripts/device-check.sh
        }
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let device = Device::Cuda(0);
        let total = Tensor::zeros([1000], (Kind::Float, device));
        let work = || -> Result<Tensor, String> {
            let draw = Tensor::randn([1000], (Kind::Float, device));
            let _ = total.shallow_clone().f_add_(&draw).map_err(|e| e.to_string())?;
            Ok(draw)
        };
        let mut graph = CudaGraph::new(0).unwrap();
        tch::manual_seed(1);
        let _warm = graph.run_on_side_stream(work).unwrap().unwrap();
        let _ = total.shallow_clone().zero_();
        tch::manual_seed(2);
        let captured_draw = graph.capture(work).unwrap().unwrap();
        assert_eq!(total.abs().sum(Kind::Float).double_value(&[]), 0.0, "capturing runs nothing");
        let mut eager_total = Tensor::zeros([1000], (Kind::Float, device));
        for seed in [2, 3, 3] {
            tch::manual_seed(seed);
            graph.replay().unwrap();
            tch::manual_seed(seed);
            let expected = Tensor::randn([1000], (Kind::Float, device));
            assert!(captured_draw.equal(&expected), "seed {seed}: the replay drew other numbers");
            eager_total += expected;
        }
        assert!(total.equal(&eager_total));
        // A body that fails leaves the graph empty.
        let failed = graph.capture(|| Err::<(), _>("no")).unwrap();
        assert_eq!(failed, Err("no"));
        assert!(!graph.is_captured() && graph.replay().is_err());
        // So does one that synchronises with the host, which a graph cannot hold.
        let sync = graph.capture(|| total.f_sum(Kind::Float).and_then(|s| s.f_double_value(&[]))).unwrap();
        assert!(sync.is_err(), "a host read inside a capture must fail");
        assert!(!graph.is_captured());
        // Afterwards eager random draws follow their seed again, and a new
        // capture replays as the first did.
        tch::manual_seed(4);
        let eager = Tensor::randn([1000], (Kind::Float, device));
        tch::manual_seed(4);
        assert!(eager.equal(&Tensor::randn([1000], (Kind::Float, device))), "the generator left capture mode");
        let _ = total.shallow_clone().zero_();
        let draw = graph.capture(work).unwrap().unwrap();
        tch::manual_seed(5);
        graph.replay().unwrap();
        tch::manual_seed(5);
        assert!(draw.equal(&Tensor::randn([1000], (Kind::Float, device))));
        assert!(total.equal(&draw));
    }
}
