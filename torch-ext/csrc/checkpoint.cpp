// Activation checkpointing, as PyTorch's reentrant `torch.utils.checkpoint`:
// a function of some tensors runs without recording its graph; the outputs
// hang off one autograd node that keeps only the inputs. Backward runs the
// function again under the forward's random-number and autocast state,
// backpropagates through the recomputed graph (which fills the gradients of
// the weights it used) and hands the inputs' gradients on.
//
// The function is a Rust closure behind `call`: it gets `at::Tensor*`
// handles it owns (torch-sys's `C_tensor`, allocated with `new`) and pushes
// its outputs into `sink` with difi_ext_checkpoint_push. `drop` frees the
// closure when the last graph that can call it is gone.

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Generator.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/engine.h>

#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "guarded.h"

namespace {

using Call = int (*)(void* closure, at::Tensor** inputs, std::size_t count, void* sink, char* error,
                     std::size_t error_len);
using Drop = void (*)(void* closure);

struct Closure : torch::CustomClassHolder {
  Closure(void* data, Call call, Drop drop) : data(data), call(call), drop(drop) {}
  ~Closure() override { drop(data); }
  Closure(const Closure&) = delete;
  Closure& operator=(const Closure&) = delete;

  // Runs the function on copies of `inputs`; throws its error as a c10::Error.
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) const {
    std::vector<at::Tensor*> handles;
    handles.reserve(inputs.size());
    for (const auto& input : inputs) {
      handles.push_back(new at::Tensor(input));  // owned by the callee
    }
    std::vector<at::Tensor> outputs;
    char error[1024] = {0};
    const int status = call(data, handles.data(), handles.size(), &outputs, error, sizeof(error));
    TORCH_CHECK(status == difi_ext::kOk, "checkpointed function failed: ", error);
    return outputs;
  }

  void* data;
  Call call;
  Drop drop;
};

// As torch.get_rng_state: under the generator's lock.
at::Tensor rng_state(at::Generator generator) {
  std::scoped_lock<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

// The state a recomputation must see to repeat the forward exactly. (Only
// the first CUDA input's device is replayed: difi's blocks live on one.)
struct ReplayState {
  at::Tensor cpu_rng;
  std::optional<at::Device> cuda_device;
  at::Tensor cuda_rng;
  bool autocast_cpu;
  at::ScalarType autocast_cpu_dtype;
  bool autocast_cuda;
  at::ScalarType autocast_cuda_dtype;

  static ReplayState capture(const std::vector<at::Tensor>& inputs) {
    ReplayState state;
    state.cpu_rng = rng_state(at::detail::getDefaultCPUGenerator());
    for (const auto& input : inputs) {
      if (input.defined() && input.is_cuda()) {
        state.cuda_device = input.device();
        state.cuda_rng = rng_state(at::globalContext().defaultGenerator(input.device()));
        break;
      }
    }
    state.autocast_cpu = at::autocast::is_autocast_enabled(at::kCPU);
    state.autocast_cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
    state.autocast_cuda = at::autocast::is_autocast_enabled(at::kCUDA);
    state.autocast_cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
    return state;
  }
};

// Puts the forward's state in place for a scope and restores the current one after.
class Replay {
 public:
  explicit Replay(const ReplayState& saved) : current_(ReplayState::capture({})) {
    if (saved.cuda_device) {
      cuda_generator_ = at::globalContext().defaultGenerator(*saved.cuda_device);
      cuda_current_ = rng_state(*cuda_generator_);
      set_rng(*cuda_generator_, saved.cuda_rng);
    }
    set_rng(at::detail::getDefaultCPUGenerator(), saved.cpu_rng);
    set_autocast(saved);
    // Casts cached now would outlive the recomputation (the cache is cleared
    // only when an autocast region ends) and serve stale weights after the
    // optimiser step; recompute without it.
    cache_was_enabled_ = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);
  }
  ~Replay() {
    set_rng(at::detail::getDefaultCPUGenerator(), current_.cpu_rng);
    if (cuda_generator_) {
      set_rng(*cuda_generator_, cuda_current_);
    }
    set_autocast(current_);
    at::autocast::set_autocast_cache_enabled(cache_was_enabled_);
  }
  Replay(const Replay&) = delete;
  Replay& operator=(const Replay&) = delete;

 private:
  // As torch.set_rng_state: under the generator's lock.
  static void set_rng(at::Generator generator, const at::Tensor& state) {
    std::scoped_lock<std::mutex> lock(generator.mutex());
    generator.set_state(state);
  }

  static void set_autocast(const ReplayState& state) {
    at::autocast::set_autocast_enabled(at::kCPU, state.autocast_cpu);
    at::autocast::set_autocast_dtype(at::kCPU, state.autocast_cpu_dtype);
    at::autocast::set_autocast_enabled(at::kCUDA, state.autocast_cuda);
    at::autocast::set_autocast_dtype(at::kCUDA, state.autocast_cuda_dtype);
  }

  ReplayState current_;
  bool cache_was_enabled_ = true;
  std::optional<at::Generator> cuda_generator_;
  at::Tensor cuda_current_;
};

struct Checkpointed : public torch::autograd::Function<Checkpointed> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                c10::intrusive_ptr<Closure> closure, at::TensorList input_list) {
    const std::vector<at::Tensor> inputs = input_list.vec();
    auto state = std::make_shared<ReplayState>(ReplayState::capture(inputs));
    ctx->saved_data["closure"] = c10::IValue::make_capsule(closure);
    ctx->saved_data["state"] = c10::IValue::make_capsule(c10::make_intrusive<StateHolder>(std::move(state)));
    ctx->save_for_backward(inputs);
    ctx->set_materialize_grads(false);
    // Autograd records nothing inside a custom function's forward.
    return closure->run(inputs);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    // As PyTorch's reentrant checkpoint: the recomputed graph is walked by a
    // nested backward that fills the weights' .grad, which neither
    // torch.autograd.grad (a chosen set of inputs) nor create_graph can use.
    TORCH_CHECK(torch::autograd::Engine::get_default_engine().is_checkpoint_valid(),
                "checkpointed activations support backward(), not autograd::grad or backward with inputs");
    TORCH_CHECK(!at::GradMode::is_enabled(), "checkpointed activations do not support create_graph");
    auto closure = c10::static_intrusive_pointer_cast<Closure>(ctx->saved_data["closure"].toCapsule());
    auto holder = c10::static_intrusive_pointer_cast<StateHolder>(ctx->saved_data["state"].toCapsule());
    const auto saved = ctx->get_saved_variables();
    std::vector<at::Tensor> inputs;
    inputs.reserve(saved.size());
    for (const auto& input : saved) {
      if (!input.defined()) {
        inputs.push_back(input);
        continue;
      }
      auto detached = input.detach();
      detached.set_requires_grad(input.requires_grad());
      inputs.push_back(detached);
    }
    std::vector<at::Tensor> outputs;
    {
      Replay replay(*holder->state);
      at::AutoGradMode grad_on(true);
      outputs = closure->run(inputs);
    }
    TORCH_CHECK(outputs.size() == grad_outputs.size(), "checkpointed function returned ", outputs.size(),
                " tensors when recomputed, ", grad_outputs.size(), " the first time");
    torch::autograd::variable_list roots, grads;
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].defined() && outputs[i].requires_grad() && grad_outputs[i].defined()) {
        roots.push_back(outputs[i]);
        grads.push_back(grad_outputs[i]);
      }
    }
    if (!roots.empty()) {
      torch::autograd::backward(roots, grads);
    }
    // No gradient for the closure, then one per input.
    torch::autograd::variable_list result{at::Tensor()};
    for (const auto& input : inputs) {
      result.push_back(input.defined() && input.requires_grad() ? input.grad() : at::Tensor());
    }
    return result;
  }

  struct StateHolder : torch::CustomClassHolder {
    explicit StateHolder(std::shared_ptr<ReplayState> state) : state(std::move(state)) {}
    std::shared_ptr<ReplayState> state;
  };
};

}  // namespace

extern "C" {

// Whether autograd records operations on this thread (`torch.is_grad_enabled()`).
bool difi_ext_grad_enabled() noexcept { return at::GradMode::is_enabled(); }

// Appends a copy of `*tensor` to the outputs being collected in `sink`.
void difi_ext_checkpoint_push(void* sink, const at::Tensor* tensor) noexcept {
  static_cast<std::vector<at::Tensor>*>(sink)->push_back(*tensor);
}

// Runs the closure checkpointed on `inputs` (`count` handles; an extra input
// that requires grad makes the outputs require grad even when only the
// closure's weights do) and returns its outputs as new handles in
// `outputs` (room for `capacity`), their number in `*output_count`. Takes
// ownership of the closure: `drop` runs once, here on failure or when the
// graph lets go of it.
int difi_ext_checkpoint(void* closure_data, Call call, Drop drop, at::Tensor* const* inputs, std::size_t count,
                        at::Tensor** outputs, std::size_t capacity, std::size_t* output_count, char* error,
                        std::size_t error_len) noexcept {
  return difi_ext::guarded(
      [&] {
        auto closure = c10::make_intrusive<Closure>(closure_data, call, drop);
        TORCH_CHECK(output_count != nullptr, "null argument");
        torch::autograd::variable_list tensors;
        tensors.reserve(count);
        for (std::size_t i = 0; i < count; ++i) {
          TORCH_CHECK(inputs[i] != nullptr, "tensor handle ", i, " is null");
          tensors.push_back(*inputs[i]);
        }
        // A TensorList, not a vector, so autograd counts each tensor as an input.
        const auto result = Checkpointed::apply(closure, at::TensorList(tensors));
        TORCH_CHECK(result.size() <= capacity, "checkpointed function returned ", result.size(),
                    " tensors, room for ", capacity);
        for (std::size_t i = 0; i < result.size(); ++i) {
          outputs[i] = new at::Tensor(result[i]);
        }
        *output_count = result.size();
      },
      error, error_len);
}

}  // extern "C"
