// c10d, libtorch's own distributed engine, behind plain C functions: a
// TCPStore for rendezvous, a Gloo process group for CPU tensors, and the
// three collectives the trainer needs (all-reduce sum, broadcast, barrier).
// NCCL lives in distributed_nccl.cpp, which needs CUDA headers.
//
// Handles are heap objects owned by the Rust side, freed with the matching
// *_free function. Tensors arrive as the `at::Tensor*` handles tch uses.
// Each collective takes one tensor: c10d's list form means "one tensor per
// local device", not "several tensors", so the Rust side packs lists itself.

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "distributed.h"
#include "guarded.h"

extern "C" {

int difi_dist_store_new(const char* host, std::uint16_t port, bool is_server, int world_size, std::int64_t timeout_ms,
                        difi_ext::DistStore** out, char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(host != nullptr && out != nullptr, "null argument");
        c10d::TCPStoreOptions options;
        options.port = port;
        options.isServer = is_server;
        options.numWorkers = static_cast<std::size_t>(world_size);
        // The process group's own rendezvous waits for every rank; waiting
        // here too would only move the timeout message.
        options.waitWorkers = false;
        options.timeout = std::chrono::milliseconds(timeout_ms);
        auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
        *out = new difi_ext::DistStore{std::move(store)};
      },
      error, error_len);
}

void difi_dist_store_free(difi_ext::DistStore* store) noexcept { delete store; }

int difi_dist_store_set(difi_ext::DistStore* store, const char* key, const std::uint8_t* value, std::size_t len,
                        char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(store != nullptr && key != nullptr && (value != nullptr || len == 0), "null argument");
        store->store->set(std::string(key), std::vector<std::uint8_t>(value, value + len));
      },
      error, error_len);
}

// Copies at most `capacity` bytes of the value of `key` into `buffer` and
// its full length into `*len`; `*present` says whether the key exists (the
// call does not wait for it).
int difi_dist_store_try_get(difi_ext::DistStore* store, const char* key, std::uint8_t* buffer, std::size_t capacity,
                            std::size_t* len, bool* present, char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(store != nullptr && key != nullptr && len != nullptr && present != nullptr, "null argument");
        const std::string name(key);
        *present = store->store->check({name});
        *len = 0;
        if (!*present) {
          return;
        }
        const auto value = store->store->get(name);
        *len = value.size();
        if (buffer != nullptr && !value.empty()) {
          std::memcpy(buffer, value.data(), std::min(capacity, value.size()));
        }
      },
      error, error_len);
}

int difi_dist_gloo_new(difi_ext::DistStore* store, int rank, int world_size, std::int64_t timeout_ms,
                       difi_ext::DistGroup** out, char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(store != nullptr && out != nullptr, "null argument");
        const auto timeout = std::chrono::milliseconds(timeout_ms);
        // create_default picks the network interface as PyTorch does
        // (GLOO_SOCKET_IFNAME, else the host name's address, else loopback).
        auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
        auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, world_size, options);
        *out = new difi_ext::DistGroup{std::move(group), timeout};
      },
      error, error_len);
}

void difi_dist_group_free(difi_ext::DistGroup* group) noexcept { delete group; }

// tensor ← Σ over ranks of tensor, in place.
int difi_dist_all_reduce_sum(difi_ext::DistGroup* group, at::Tensor* tensor, char* error,
                             std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(group != nullptr && tensor != nullptr, "null argument");
        std::vector<at::Tensor> tensors{*tensor};
        c10d::AllreduceOptions options;
        options.reduceOp = c10d::ReduceOp::SUM;
        options.timeout = group->timeout;
        group->backend->allreduce(tensors, options)->wait(group->timeout);
      },
      error, error_len);
}

// tensor ← rank `root`'s tensor, in place.
int difi_dist_broadcast(difi_ext::DistGroup* group, at::Tensor* tensor, int root, char* error,
                        std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(group != nullptr && tensor != nullptr, "null argument");
        std::vector<at::Tensor> tensors{*tensor};
        c10d::BroadcastOptions options;
        options.rootRank = root;
        options.timeout = group->timeout;
        group->backend->broadcast(tensors, options)->wait(group->timeout);
      },
      error, error_len);
}

int difi_dist_barrier(difi_ext::DistGroup* group, char* error, std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        TORCH_CHECK(group != nullptr, "null argument");
        c10d::BarrierOptions options;
        options.timeout = group->timeout;
        group->backend->barrier(options)->wait(group->timeout);
      },
      error, error_len);
}

}  // extern "C"
