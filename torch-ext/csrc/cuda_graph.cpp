// CUDA graphs (`at::cuda::CUDAGraph`, what `torch.cuda.graph` wraps): a
// piece of work is captured once on a side stream and replayed as one
// launch. Compiled when the torch installation has the CUDA runtime headers
// (build.rs defines DIFI_EXT_CUDA); otherwise every entry point reports that
// this build has no CUDA graphs.
//
// The captured work is a Rust closure behind `body`; it runs on the graph's
// side stream, both for warm-up (eagerly, as PyTorch asks before a capture:
// cuDNN's autotuner and cuBLAS's workspaces must not initialise inside one)
// and for the capture itself. Random numbers are graph-safe as in PyTorch:
// a replay draws from the default CUDA generator's seed and offset at the
// time of the replay, exactly what the same work run eagerly would draw.

#include <c10/core/DeviceGuard.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>

#include <cstddef>
#include <memory>
#include <mutex>

#include "guarded.h"

#ifdef DIFI_EXT_CUDA
// Only headers without inline CUDA runtime calls: the shim does not link
// libcudart itself. Guards and events go through c10's device-generic
// interfaces, which libc10_cuda implements.
#include <ATen/core/CachingHostAllocator.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#endif

// The Rust closure: returns 0 when it succeeded.
using GraphBody = int (*)(void* closure);

namespace difi_ext {

#ifdef DIFI_EXT_CUDA
// libtorch's graph, with its memory pool's id reachable before a capture
// has ended (`pool()` refuses until then), which cleaning up after a failed
// capture needs.
struct Graph : at::cuda::CUDAGraph {
  c10::MempoolId_t pool_id() const { return mempool_id_; }
};
#endif

struct CudaGraph {
#ifdef DIFI_EXT_CUDA
  explicit CudaGraph(c10::DeviceIndex device)
      : device(device), stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device)) {}

  c10::DeviceIndex device;
  c10::cuda::CUDAStream stream;
  std::unique_ptr<Graph> graph;
#endif
};

}  // namespace difi_ext

namespace {

#ifdef DIFI_EXT_CUDA
// `waiting` runs nothing queued after this until `done`'s queued work is finished.
void wait_for(const c10::Stream& waiting, const c10::Stream& done) {
  c10::Event event(c10::DeviceType::CUDA);
  event.record(done);
  event.block(waiting);
}

// Makes the caller's stream wait for the side stream when it goes out of
// scope, however the scope is left.
struct RejoinCaller {
  c10::Stream caller;
  c10::Stream side;
  ~RejoinCaller() {
    try {
      wait_for(caller, side);
    } catch (...) {
      // Only a broken CUDA context fails here; the next call reports it.
    }
  }
};

// Runs `body` with the graph's side stream current, ordered after the
// caller's queued work and before anything the caller queues next.
// Returns the body's status.
template <typename Around>
int on_side_stream(difi_ext::CudaGraph& g, GraphBody body, void* closure, Around around) {
  c10::DeviceGuard device_guard(c10::Device(c10::DeviceType::CUDA, g.device));
  const c10::Stream caller = c10::cuda::getCurrentCUDAStream(g.device).unwrap();
  wait_for(g.stream.unwrap(), caller);
  RejoinCaller rejoin{caller, g.stream.unwrap()};
  c10::StreamGuard stream_guard(g.stream.unwrap());
  return around([&] { return body(closure); });
}

template <typename F>
void ignoring_errors(F&& f) {
  try {
    f();
  } catch (...) {
  }
}

// After a capture that did not end cleanly (`capture_end` threw, or
// `capture_begin` did halfway): `capture_end` throws before it hands the
// memory pools back and takes the default generator out of capture mode,
// and the allocators would otherwise keep consulting the destroyed graph.
// So: end and release both pools, and give the default generator a copy of
// its state outside capture mode (same seed and offset).
void recover_from_failed_capture(const difi_ext::Graph& captured, c10::DeviceIndex device) {
  const c10::MempoolId_t pool = captured.pool_id();
  ignoring_errors([&] { c10::cuda::CUDACachingAllocator::endAllocateToPool(device, pool); });
  ignoring_errors([&] { at::getHostAllocator(at::kCUDA)->end_allocate_to_pool(pool); });
  ignoring_errors([&] { c10::cuda::CUDACachingAllocator::releasePool(device, pool); });
  ignoring_errors([&] { at::getHostAllocator(at::kCUDA)->release_pool(pool); });
  ignoring_errors([&] {
    at::Generator generator = at::cuda::detail::getDefaultCUDAGenerator(device);
    std::scoped_lock<std::mutex> lock(generator.mutex());
    at::Generator fresh = generator.clone();
    generator.get<at::CUDAGeneratorImpl>()->graphsafe_set_state(fresh.getIntrusivePtr());
  });
}

// Ends the capture; when that fails, recovers and rethrows.
void end_capture(difi_ext::Graph& captured, c10::DeviceIndex device) {
  try {
    captured.capture_end();
  } catch (...) {
    recover_from_failed_capture(captured, device);
    throw;
  }
}
#endif

constexpr const char* kNoCuda = "this build of difi has no CUDA graphs (its libtorch had no CUDA runtime headers)";

}  // namespace

extern "C" {

// Whether this build can capture CUDA graphs at all.
bool difi_ext_cuda_graphs_compiled() noexcept {
#ifdef DIFI_EXT_CUDA
  return true;
#else
  return false;
#endif
}

int difi_ext_cuda_graph_new(int device, difi_ext::CudaGraph** out, char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(out != nullptr, "null argument");
#ifdef DIFI_EXT_CUDA
        *out = new difi_ext::CudaGraph(static_cast<c10::DeviceIndex>(device));
#else
        (void)device;
        TORCH_CHECK(false, kNoCuda);
#endif
      },
      error, error_len);
}

void difi_ext_cuda_graph_free(difi_ext::CudaGraph* graph) noexcept {
  try {
    delete graph;
  } catch (...) {
    // A destructor that throws while freeing a graph leaves nothing to recover.
  }
}

// Runs `body` on the graph's side stream: eagerly (`capture` false), or
// captured into the graph, replacing what it held (`capture` true; the
// work the body queues is recorded, never run). `*body_status` receives the
// body's status (non-zero: it failed; its error is the caller's). When the
// body fails or the capture does, the graph is left empty.
int difi_ext_cuda_graph_run(difi_ext::CudaGraph* graph, bool capture, GraphBody body, void* closure,
                            int* body_status, char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(graph != nullptr && body != nullptr && body_status != nullptr, "null argument");
#ifdef DIFI_EXT_CUDA
        if (!capture) {
          *body_status = on_side_stream(*graph, body, closure, [](auto run) { return run(); });
          return;
        }
        graph->graph.reset();
        auto captured = std::make_unique<difi_ext::Graph>();
        const c10::DeviceIndex device = graph->device;
        *body_status = on_side_stream(*graph, body, closure, [&](auto run) {
          try {
            captured->capture_begin();
          } catch (...) {
            recover_from_failed_capture(*captured, device);
            throw;
          }
          int status = 1;
          try {
            status = run();
          } catch (...) {
            ignoring_errors([&] { end_capture(*captured, device); });
            throw;
          }
          if (status != 0) {
            // The stream must leave capture mode; what was captured is dropped.
            ignoring_errors([&] { end_capture(*captured, device); });
            return status;
          }
          end_capture(*captured, device);
          return status;
        });
        if (*body_status == 0) {
          graph->graph = std::move(captured);
        }
#else
        (void)capture;
        (void)closure;
        TORCH_CHECK(false, kNoCuda);
#endif
      },
      error, error_len);
}

// Replays the captured work on the caller's current stream.
int difi_ext_cuda_graph_replay(difi_ext::CudaGraph* graph, char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(graph != nullptr, "null argument");
#ifdef DIFI_EXT_CUDA
        TORCH_CHECK(graph->graph != nullptr, "the CUDA graph holds no capture");
        c10::DeviceGuard device_guard(c10::Device(c10::DeviceType::CUDA, graph->device));
        graph->graph->replay();
#else
        TORCH_CHECK(false, kNoCuda);
#endif
      },
      error, error_len);
}

}  // extern "C"
