//! Activation checkpointing: run part of a network without keeping its
//! intermediate activations for backward, and recompute them there. Memory
//! for activations falls to the part's inputs and outputs; the price is one
//! more forward pass of the part during backward. The semantics are those
//! of PyTorch's reentrant `torch.utils.checkpoint(fn, *inputs)`: the
//! recomputation replays the forward's random numbers (dropout draws the
//! same masks) and autocast state, and fills the gradients of the weights
//! the function uses as a plain backward would.
//!
//! Like PyTorch's reentrant variant it serves `backward()`, not
//! `torch.autograd.grad` with `create_graph` (double backward), and
//! gradients reach the weights by accumulation, so call it only where a
//! plain backward follows.

use std::ffi::{c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use tch::Tensor;
use torch_sys::C_tensor;

use crate::{Error, checked};

/// A checkpointed function (tensors in, tensors out, errors as text) and
/// how many of the node's inputs are its own (the rest is the anchor).
type BoxedFn = (usize, Box<dyn Fn(&[Tensor]) -> Result<Vec<Tensor>, String>>);

/// Room for outputs; a part of a network returns a handful.
const MAX_OUTPUTS: usize = 64;

type Call = unsafe extern "C" fn(*mut c_void, *mut *mut C_tensor, usize, *mut c_void, *mut c_char, usize) -> c_int;
type Drop = unsafe extern "C" fn(*mut c_void);

unsafe extern "C" {
    fn difi_ext_grad_enabled() -> bool;
    fn difi_ext_checkpoint_push(sink: *mut c_void, tensor: *const C_tensor);
    fn difi_ext_checkpoint(
        closure: *mut c_void,
        call: Call,
        drop: Drop,
        inputs: *const *mut C_tensor,
        count: usize,
        outputs: *mut *mut C_tensor,
        capacity: usize,
        output_count: *mut usize,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
}

/// `f(inputs)` with its activations recomputed in backward instead of kept.
///
/// Outside grad mode it is `f(inputs)`. Inside, the outputs require grad
/// whenever grad mode is on, even if no input does (the weights `f` uses
/// may), and backward calls `f` again: `f` must compute the same function
/// each time and own what it uses (hence `'static`; share a network's parts
/// with `Rc`).
///
/// # Safety
///
/// On CUDA libtorch runs backward, and so the second call of `f`, on its
/// autograd worker thread while the thread that called `backward` waits;
/// the graph holding `f` is freed on whichever thread drops its last
/// tensor. `f` need not be `Send`, so the caller promises what the compiler
/// cannot check: nothing `f` captures is used from another thread while
/// backward runs, and the outputs' graph is dropped on the thread that made
/// it or after it is done with what `f` shares (difi's networks and their
/// graphs live and die on the thread that trains them).
pub unsafe fn checkpoint<F>(inputs: &[&Tensor], f: F) -> Result<Vec<Tensor>, Error>
where
    F: Fn(&[Tensor]) -> Result<Vec<Tensor>, String> + 'static,
{
    if !grad_enabled() {
        let owned: Vec<Tensor> = inputs.iter().map(|t| t.shallow_clone()).collect();
        return f(&owned).map_err(|message| Error::invalid("checkpoint", message));
    }
    // When no input requires grad, an extra one that does, so the node is
    // part of the graph even though only the weights inside `f` need it; it
    // gets no gradient.
    let anchor = if inputs.iter().any(|t| t.requires_grad()) {
        None
    } else {
        let like = inputs.first().map_or(tch::Device::Cpu, |t| t.device());
        Some(
            Tensor::f_empty([0], (tch::Kind::Float, like))
                .and_then(|mut t| t.f_requires_grad_(true))
                .map_err(|e| Error::invalid("checkpoint", e.to_string()))?,
        )
    };
    let mut handles: Vec<*mut C_tensor> = inputs.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
    handles.extend(anchor.iter().map(|t| t.as_ptr() as *mut C_tensor));
    let closure_inputs = inputs.len();
    let closure: *mut BoxedFn = Box::into_raw(Box::new((closure_inputs, Box::new(f))));
    let mut outputs = [std::ptr::null_mut::<C_tensor>(); MAX_OUTPUTS];
    let mut count = 0usize;
    // SAFETY: the handles point at live tensors for the call; the shim takes
    // ownership of `closure` (freeing it with `drop_closure` exactly once,
    // also on failure) and writes at most `MAX_OUTPUTS` new handles.
    checked("checkpoint", |error, len| unsafe {
        difi_ext_checkpoint(
            closure.cast(),
            call_closure,
            drop_closure,
            handles.as_ptr(),
            handles.len(),
            outputs.as_mut_ptr(),
            MAX_OUTPUTS,
            &mut count,
            error,
            len,
        )
    })?;
    // SAFETY: the shim allocated each of the first `count` handles with `new`
    // for us to own.
    Ok(outputs[..count].iter().map(|&handle| unsafe { Tensor::from_ptr(handle) }).collect())
}

/// Whether autograd records operations on this thread (`torch.is_grad_enabled()`).
pub fn grad_enabled() -> bool {
    // SAFETY: reads libtorch's thread-local grad mode; cannot fail.
    unsafe { difi_ext_grad_enabled() }
}

/// Runs the boxed closure on inputs the shim allocated for us, pushing its
/// outputs into `sink`; panics and errors become a status and a message.
unsafe extern "C" fn call_closure(
    closure: *mut c_void,
    inputs: *mut *mut C_tensor,
    count: usize,
    sink: *mut c_void,
    error: *mut c_char,
    error_len: usize,
) -> c_int {
    // SAFETY: `inputs` holds `count` handles allocated with `new`, ours to
    // free (Tensor's drop does); `closure` is the live box made above.
    let inputs: Vec<Tensor> = unsafe { std::slice::from_raw_parts(inputs, count) }
        .iter()
        .map(|&handle| unsafe { Tensor::from_ptr(handle) })
        .collect();
    let (own_count, f) = unsafe { &*(closure as *const BoxedFn) };
    let own = &inputs[..(*own_count).min(count)];
    let result = catch_unwind(AssertUnwindSafe(|| f(own)))
        .unwrap_or_else(|_| Err("the checkpointed function panicked".to_string()));
    match result {
        Ok(outputs) => {
            for output in &outputs {
                // SAFETY: `sink` is the shim's output vector for this call; it copies the tensor.
                unsafe { difi_ext_checkpoint_push(sink, output.as_ptr()) };
            }
            0
        }
        Err(message) => {
            write_message(&message, error, error_len);
            1
        }
    }
}

/// Frees the boxed closure once the shim is done with it.
unsafe extern "C" fn drop_closure(closure: *mut c_void) {
    // SAFETY: made by `Box::into_raw` in `checkpoint`, dropped once.
    drop(unsafe { Box::from_raw(closure as *mut BoxedFn) });
}

/// Copies `message` into the shim's buffer, truncated and NUL-terminated.
fn write_message(message: &str, error: *mut c_char, error_len: usize) {
    if error.is_null() || error_len == 0 {
        return;
    }
    let bytes = message.as_bytes();
    let n = bytes.len().min(error_len - 1);
    // SAFETY: the buffer holds `error_len` bytes; we write `n + 1 <= error_len`.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), error, n);
        *error.add(n) = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// A two-layer function of `x` through weights `w1`, `w2`, with dropout.
    fn layers(w1: &Tensor, w2: &Tensor, x: &Tensor) -> Tensor {
        let h = x.matmul(w1).tanh().dropout(0.5, true);
        h.matmul(w2).sin()
    }

    fn weights() -> (Tensor, Tensor, Tensor) {
        tch::manual_seed(0);
        let o = (Kind::Double, Device::Cpu);
        let w1 = Tensor::randn([5, 7], o).set_requires_grad(true);
        let w2 = Tensor::randn([7, 3], o).set_requires_grad(true);
        let x = Tensor::randn([4, 5], o).set_requires_grad(true);
        (w1, w2, x)
    }

    #[test]
    fn gradients_equal_the_plain_backwards_dropout_included() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let (w1, w2, x) = weights();
        tch::manual_seed(9);
        let out = layers(&w1, &w2, &x);
        let _ = Tensor::randn([100], (Kind::Float, Device::Cpu));
        out.sum(Kind::Double).backward();
        let plain_next = Tensor::randn([5], (Kind::Float, Device::Cpu));
        let plain = [w1.grad().copy(), w2.grad().copy(), x.grad().copy()];
        for t in [&w1, &w2, &x] {
            let _ = t.grad().zero_();
        }

        let (c1, c2) = (w1.shallow_clone(), w2.shallow_clone());
        tch::manual_seed(9);
        // SAFETY: single-threaded, CPU: backward runs on this thread.
        let out = unsafe { checkpoint(&[&x], move |inputs| Ok(vec![layers(&c1, &c2, &inputs[0])])) }.unwrap();
        // Draws after the checkpoint must not change what backward replays.
        let _ = Tensor::randn([100], (Kind::Float, Device::Cpu));
        out[0].sum(Kind::Double).backward();
        let next = Tensor::randn([5], (Kind::Float, Device::Cpu));
        assert_eq!((next - plain_next).abs().max().double_value(&[]), 0.0, "backward restores the generator");
        for (name, expected, got) in
            [("w1", &plain[0], w1.grad()), ("w2", &plain[1], w2.grad()), ("x", &plain[2], x.grad())]
        {
            let error = (got - expected).abs().max().double_value(&[]);
            assert!(error < 1e-12, "{name}: {error}");
        }
    }

    #[test]
    fn weights_get_gradients_when_no_input_requires_grad() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let (w1, w2, x) = weights();
        let x = x.detach();
        let (c1, c2) = (w1.shallow_clone(), w2.shallow_clone());
        // SAFETY: single-threaded, CPU: backward runs on this thread.
        let out = unsafe { checkpoint(&[&x], move |inputs| Ok(vec![layers(&c1, &c2, &inputs[0])])) }.unwrap();
        assert!(out[0].requires_grad());
        out[0].sum(Kind::Double).backward();
        assert!(w1.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
    }

    #[test]
    fn an_error_in_the_recomputation_reaches_backward() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let (w1, _, x) = weights();
        let calls = std::rc::Rc::new(std::cell::Cell::new(0));
        let seen = calls.clone();
        // SAFETY: single-threaded, CPU: backward runs on this thread.
        let out = unsafe {
            checkpoint(&[&x], move |inputs| {
                seen.set(seen.get() + 1);
                if seen.get() > 1 { Err("the block is gone".into()) } else { Ok(vec![inputs[0].matmul(&w1)]) }
            })
        }
        .unwrap();
        let message = out[0].sum(Kind::Double).f_backward().unwrap_err().to_string();
        assert!(message.contains("the block is gone"), "{message}");
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn gradients_for_chosen_inputs_are_refused_as_pytorch_refuses_them() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let (w1, _, x) = weights();
        // SAFETY: single-threaded, CPU: backward runs on this thread.
        let out = unsafe { checkpoint(&[&x], move |inputs| Ok(vec![inputs[0].matmul(&w1).tanh()])) }.unwrap();
        let loss = out[0].sum(Kind::Double);
        let message = Tensor::f_run_backward(&[&loss], &[&x], true, false).unwrap_err().to_string();
        assert!(message.contains("autograd::grad"), "{message}");
    }

    #[test]
    fn outside_grad_mode_it_is_a_plain_call() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let (w1, _, x) = weights();
        // SAFETY: single-threaded, CPU.
        let out = tch::no_grad(|| unsafe { checkpoint(&[&x], move |inputs| Ok(vec![inputs[0].matmul(&w1)])) }).unwrap();
        assert!(!out[0].requires_grad());
    }
}
