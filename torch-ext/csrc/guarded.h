// What every entry point of the shim shares: status codes and the guard
// that turns C++ exceptions into them (see difi_ext.cpp for the conventions).

#pragma once

#include <c10/util/Exception.h>

#include <cstddef>
#include <cstring>
#include <exception>

namespace difi_ext {

inline constexpr int kOk = 0;
inline constexpr int kTorchError = 1;
inline constexpr int kStdError = 2;
inline constexpr int kUnknownError = 3;

// Copies `message` into the caller's buffer, truncating to fit and always
// NUL-terminating (when there is room for at least the terminator).
inline void write_error(const char* message, char* error, std::size_t error_len) noexcept {
  if (error == nullptr || error_len == 0) {
    return;
  }
  std::size_t n = std::strlen(message);
  if (n >= error_len) {
    n = error_len - 1;
  }
  std::memcpy(error, message, n);
  error[n] = '\0';
}

// Runs `body`, turning any exception into a status code and a message. c10
// errors report the message without libtorch's C++ backtrace, which is noise
// to a Rust caller.
template <typename F>
int guarded(F&& body, char* error, std::size_t error_len) noexcept {
  try {
    body();
    return kOk;
  } catch (const c10::Error& e) {
    write_error(e.what_without_backtrace(), error, error_len);
    return kTorchError;
  } catch (const std::exception& e) {
    write_error(e.what(), error, error_len);
    return kStdError;
  } catch (...) {
    write_error("unknown C++ exception", error, error_len);
    return kUnknownError;
  }
}

}  // namespace difi_ext
