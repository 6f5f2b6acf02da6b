// The CUDA caching allocator's statistics, as `torch.cuda.memory_allocated`,
// `max_memory_allocated`, `memory_reserved` and `reset_peak_memory_stats`
// read them: through c10's device-generic allocator interface, so this
// needs no CUDA headers and fails cleanly where CUDA is absent.

#include <c10/core/CachingDeviceAllocator.h>

#include <cstddef>
#include <cstdint>

#include "guarded.h"

namespace {

c10::DeviceAllocator* cuda_allocator() {
  auto* allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
  TORCH_CHECK(allocator != nullptr, "no CUDA allocator");
  return allocator;
}

}  // namespace

extern "C" {

// Bytes allocated now and at peak, reserved now and at peak, on CUDA device
// `device` (all zero before the allocator's first use).
int difi_ext_cuda_memory(int device, int64_t* allocated, int64_t* peak_allocated, int64_t* reserved,
                         int64_t* peak_reserved, char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(allocated && peak_allocated && reserved && peak_reserved, "null argument");
        *allocated = *peak_allocated = *reserved = *peak_reserved = 0;
        auto* allocator = cuda_allocator();
        if (!allocator->initialized()) {
          return;
        }
        const auto stats = allocator->getDeviceStats(static_cast<c10::DeviceIndex>(device));
        const auto all = static_cast<std::size_t>(c10::CachingAllocator::StatType::AGGREGATE);
        *allocated = stats.allocated_bytes[all].current;
        *peak_allocated = stats.allocated_bytes[all].peak;
        *reserved = stats.reserved_bytes[all].current;
        *peak_reserved = stats.reserved_bytes[all].peak;
      },
      error, error_len);
}

// Starts the peaks of difi_ext_cuda_memory afresh from the current values.
int difi_ext_cuda_reset_peak(int device, char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        auto* allocator = cuda_allocator();
        if (allocator->initialized()) {
          allocator->resetPeakStats(static_cast<c10::DeviceIndex>(device));
        }
      },
      error, error_len);
}

}  // extern "C"
