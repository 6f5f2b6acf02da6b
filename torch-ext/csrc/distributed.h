// The handles distributed.cpp and distributed_nccl.cpp hand to Rust.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>

namespace difi_ext {

struct DistStore {
  c10::intrusive_ptr<c10d::Store> store;
};

struct DistGroup {
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

}  // namespace difi_ext
