// difi's C++ shim over libtorch: the few libtorch entry points that tch does
// not wrap. Rust reaches them through the `extern "C"` functions below, so no
// Rust code depends on C++ name mangling or on the calling convention of
// member functions.
//
// Conventions for every function here:
//  - `extern "C"` and `noexcept`: a C++ exception must never unwind into Rust
//    (that is undefined behaviour), so each body catches everything.
//  - Functions that can fail return an `int` status (kOk, kTorchError,
//    kStdError, kUnknownError; mirrored in src/lib.rs) and write a
//    NUL-terminated, possibly truncated message into the caller's
//    `error`/`error_len` buffer.
//  - Only the libtorch headers a function needs are included, to keep this
//    file quick to compile; never torch/torch.h.

#include <ATen/Context.h>

#include "guarded.h"

using difi_ext::guarded;


extern "C" {

// Sets whether cuDNN convolutions and cuBLAS float32 matmuls may use TF32.
// These are the exact setters behind PyTorch's
// `torch.backends.cudnn.allow_tf32` and `torch.backends.cuda.matmul.allow_tf32`,
// so the two flags mean here what they mean in Python; both only touch the
// global context and need no GPU.
int difi_ext_set_allow_tf32(bool allow, char* error, std::size_t error_len) noexcept {
  return guarded(
      [&] {
        at::Context& context = at::globalContext();
        context.setAllowTF32CuDNN(allow);
        context.setAllowTF32CuBLAS(allow);
      },
      error, error_len);
}

// Reads back the two flags `difi_ext_set_allow_tf32` sets. libtorch throws
// here when the legacy flags and the newer per-op `fp32_precision` settings
// have been mixed into a state the legacy flags cannot describe.
int difi_ext_allow_tf32(bool* cudnn, bool* cublas, char* error, std::size_t error_len) noexcept {
  return guarded(
      [&] {
        const at::Context& context = at::globalContext();
        *cudnn = context.allowTF32CuDNN();
        *cublas = context.allowTF32CuBLAS();
      },
      error, error_len);
}

}  // extern "C"
