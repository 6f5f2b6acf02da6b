// Autocast, as `torch.autocast(device_type, dtype)` does it: the flags live
// in libtorch's thread-local state, so entering and leaving are calls on the
// thread that runs the forward passes. Device types are 0 for the CPU and 1
// for CUDA; dtypes 0 for bfloat16 and 1 for float16 (see src/autocast.rs).

#include <ATen/autocast_mode.h>

#include <cstddef>

#include "guarded.h"

namespace {

at::DeviceType device_type(int code) {
  TORCH_CHECK(code == 0 || code == 1, "unknown device type code ", code);
  return code == 0 ? at::kCPU : at::kCUDA;
}

at::ScalarType dtype(int code) {
  TORCH_CHECK(code == 0 || code == 1, "unknown dtype code ", code);
  return code == 0 ? at::kBFloat16 : at::kHalf;
}

}  // namespace

extern "C" {

// Reads the current state into *enabled and *dtype_code (0 bf16, 1 fp16, 2 other).
int difi_ext_autocast_state(int device_code, bool* enabled, int* dtype_code, char* error,
                            std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(enabled != nullptr && dtype_code != nullptr, "null argument");
        const auto device = device_type(device_code);
        *enabled = at::autocast::is_autocast_enabled(device);
        const auto current = at::autocast::get_autocast_dtype(device);
        *dtype_code = current == at::kBFloat16 ? 0 : current == at::kHalf ? 1 : 2;
      },
      error, error_len);
}

// Enters an autocast region (enabled or, to suspend an outer one, disabled).
int difi_ext_autocast_enter(int device_code, bool enabled, int dtype_code, char* error,
                            std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        const auto device = device_type(device_code);
        at::autocast::set_autocast_enabled(device, enabled);
        at::autocast::set_autocast_dtype(device, dtype(dtype_code));
        at::autocast::increment_nesting();
      },
      error, error_len);
}

// Leaves a region: restores the previous state and, when the outermost
// region ends, drops the casts of weights cached for its duration.
int difi_ext_autocast_exit(int device_code, bool was_enabled, int was_dtype_code, char* error,
                           std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        const auto device = device_type(device_code);
        if (at::autocast::decrement_nesting() == 0) {
          at::autocast::clear_cache();
        }
        at::autocast::set_autocast_enabled(device, was_enabled);
        if (was_dtype_code == 0 || was_dtype_code == 1) {
          at::autocast::set_autocast_dtype(device, dtype(was_dtype_code));
        }
      },
      error, error_len);
}

// Drops the region's cached casts of weights (PyTorch drops them only when
// the outermost region ends): after an optimiser step changes the weights in
// place, the next forward in the same region must cast them afresh.
int difi_ext_autocast_clear_cache(char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded([&] { at::autocast::clear_cache(); }, error, error_len);
}

}  // extern "C"
