// NCCL process groups, compiled only when the torch installation has CUDA
// and NCCL headers (build.rs defines DIFI_EXT_NCCL); otherwise the entry
// point reports that this build has no NCCL.

#include <cstddef>
#include <cstdint>

#include "distributed.h"
#include "guarded.h"

#ifdef DIFI_EXT_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

extern "C" {

int difi_dist_nccl_new(difi_ext::DistStore* store, int rank, int world_size, std::int64_t timeout_ms,
                       difi_ext::DistGroup** out, char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(store != nullptr && out != nullptr, "null argument");
#ifdef DIFI_EXT_NCCL
        const auto timeout = std::chrono::milliseconds(timeout_ms);
        auto options = c10d::ProcessGroupNCCL::Options::create();
        options->timeout = timeout;
        auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store->store, rank, world_size, options);
        *out = new difi_ext::DistGroup{std::move(group), timeout};
#else
        (void)rank;
        (void)world_size;
        (void)timeout_ms;
        TORCH_CHECK(false, "this build of difi has no NCCL (its libtorch had no CUDA and NCCL headers)");
#endif
      },
      error, error_len);
}

}  // extern "C"
