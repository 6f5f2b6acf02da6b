// Multi-tensor optimiser and EMA updates: one libtorch call for a whole list
// of tensors instead of a dozen kernel launches (and temporaries) per tensor.
// Tensors arrive as the `at::Tensor*` handles tch passes around (torch-sys's
// `C_tensor`), in parallel arrays of `count` entries; the caller keeps them
// alive for the call.

#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_lerp.h>
#include <ATen/ops/_foreach_sub.h>
#include <ATen/ops/_fused_adam.h>

#include <cstddef>
#include <optional>
#include <vector>

#include "guarded.h"

namespace {

std::vector<at::Tensor> gather(at::Tensor* const* handles, std::size_t count) {
  std::vector<at::Tensor> tensors;
  tensors.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    TORCH_CHECK(handles[i] != nullptr, "tensor handle ", i, " is null");
    tensors.push_back(*handles[i]);
  }
  return tensors;
}

}  // namespace

extern "C" {

// PyTorch's `torch.optim.Adam(fused=True)` step without weight decay or
// AMSGrad: increments each `steps` tensor (float32 scalars), then
// m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², p ← p − lr/(1−β₁ᵗ) · m/(√v/√(1−β₂ᵗ) + ε).
// All tensors of one call share a device and dtype.
//
// `lr_tensor` (nullable): a float32 scalar (float64 allowed on the CPU) on the parameters' device read by
// the kernel instead of `lr`, so a learning rate computed on the device needs
// no host read. `found_inf` (nullable): a float32 scalar on that device; where
// it is 1 the kernel leaves parameters and moments alone and the steps are
// taken back, as `torch.optim.Adam` does under a GradScaler: the update is
// skipped without the host ever seeing the value.
int difi_ext_fused_adam(at::Tensor* const* params, at::Tensor* const* grads, at::Tensor* const* exp_avgs,
                        at::Tensor* const* exp_avg_sqs, at::Tensor* const* steps, std::size_t count, double lr,
                        const at::Tensor* lr_tensor, const at::Tensor* found_inf, double beta1, double beta2,
                        double eps, char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        const auto p = gather(params, count);
        const auto g = gather(grads, count);
        const auto m = gather(exp_avgs, count);
        const auto v = gather(exp_avg_sqs, count);
        const auto t = gather(steps, count);
        std::optional<at::Tensor> skip;
        if (found_inf != nullptr) {
          TORCH_CHECK(found_inf->numel() == 1 && found_inf->scalar_type() == at::kFloat,
                      "found_inf must be one float32 value");
          TORCH_CHECK(count == 0 || found_inf->device() == p[0].device(),
                      "found_inf must be on the parameters' device");
          skip = found_inf->reshape({});
        }
        // As torch.optim's `_fused_adam`: the kernel reads the steps, the caller counts them.
        at::_foreach_add_(t, 1);
        if (lr_tensor != nullptr) {
          // CUDA's kernel reads a float; the CPU's reads a double (exactly the host's rate).
          const bool dtype_ok = lr_tensor->scalar_type() == at::kFloat ||
                                (lr_tensor->is_cpu() && lr_tensor->scalar_type() == at::kDouble);
          TORCH_CHECK(count == 0 || lr_tensor->device() == p[0].device(),
                      "the learning rate tensor must be on the parameters' device");
          TORCH_CHECK(lr_tensor->numel() == 1 && dtype_ok,
                      "the learning rate tensor must be one float32 value (or float64 on the CPU)");
          at::_fused_adam_(p, g, m, v, /*max_exp_avg_sqs=*/{}, t, *lr_tensor, beta1, beta2, /*weight_decay=*/0.0,
                           eps, /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, skip);
        } else {
          at::_fused_adam_(p, g, m, v, /*max_exp_avg_sqs=*/{}, t, lr, beta1, beta2, /*weight_decay=*/0.0, eps,
                           /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, skip);
        }
        if (skip.has_value()) {
          at::_foreach_sub_(t, std::vector<at::Tensor>(t.size(), *skip));
        }
      },
      error, error_len);
}

// targets[i] ← targets[i] + weight · (sources[i] − targets[i]) for every i.
int difi_ext_foreach_lerp(at::Tensor* const* targets, at::Tensor* const* sources, std::size_t count, double weight,
                          char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        auto to = gather(targets, count);
        const auto from = gather(sources, count);
        at::_foreach_lerp_(to, from, weight);
      },
      error, error_len);
}

}  // extern "C"
