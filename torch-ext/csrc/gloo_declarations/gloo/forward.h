// Forward declarations of the Gloo types c10d's ProcessGroupGloo.hpp names;
// see the README next to this folder.
#pragma once

#include <chrono>

namespace gloo {

// ProcessGroupGloo::setTimeout, defined in the c10d header, calls this;
// difi never does, so only the declaration is needed.
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};

namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo
