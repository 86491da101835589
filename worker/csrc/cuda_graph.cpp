// airlift's CUDA-graph shim: the few libtorch calls that tch has no binding for, behind a C ABI.
//
// A captured graph replays every kernel that ran between capture_begin and capture_end with one
// launch, reading and writing the same device addresses each time; tensors allocated during the
// capture come from the graph's private memory pool and stay valid while the graph lives.
// Capture must happen on a side stream (never the legacy default stream libtorch uses), so
// capture_begin switches the current stream to one from libtorch's pool and capture_end switches
// back; replay launches on the current (default) stream, ordered with all other work.
//
// Every function returns 0 on success; on failure it writes the C++ exception's message into
// `err` (NUL-terminated, truncated to `err_len`) and returns 1.

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>
#include <exception>
#include <optional>

namespace {

// The stream that was current before the side stream was pushed (one level; captures and
// warm-ups never nest).
std::optional<c10::cuda::CUDAStream> g_saved_stream;
// One side stream for every warm-up and capture, so that per-stream state libtorch creates
// lazily (cuBLAS workspaces) exists before a capture starts.
std::optional<c10::cuda::CUDAStream> g_side_stream;

int fail(const std::exception& e, char* err, size_t err_len) {
  if (err != nullptr && err_len > 0) {
    std::strncpy(err, e.what(), err_len - 1);
    err[err_len - 1] = '\0';
  }
  return 1;
}

// Runs `f`, turning a C++ exception into the C ABI's error convention (1 + message).
template <typename F>
int guarded(F&& f, char* err, size_t err_len) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    return fail(e, err, err_len);
  }
}

at::cuda::CUDAGraph* graph(void* g) { return static_cast<at::cuda::CUDAGraph*>(g); }

void push_side_stream() {
  if (g_saved_stream.has_value()) {
    throw std::runtime_error("airlift cuda graph: side stream already pushed");
  }
  // Everything queued so far must finish before the side stream reads it; this runs only when a
  // graph is warmed up or captured, never per step.
  c10::cuda::device_synchronize();
  g_saved_stream = c10::cuda::getCurrentCUDAStream();
  if (!g_side_stream.has_value()) {
    g_side_stream = c10::cuda::getStreamFromPool();
  }
  c10::cuda::setCurrentCUDAStream(*g_side_stream);
}

void pop_side_stream() {
  if (!g_saved_stream.has_value()) {
    throw std::runtime_error("airlift cuda graph: no side stream to pop");
  }
  c10::cuda::device_synchronize();
  c10::cuda::setCurrentCUDAStream(*g_saved_stream);
  g_saved_stream.reset();
}

}  // namespace

extern "C" {

int airlift_side_stream_push(char* err, size_t err_len) { return guarded(push_side_stream, err, err_len); }

int airlift_side_stream_pop(char* err, size_t err_len) { return guarded(pop_side_stream, err, err_len); }

void* airlift_graph_new() { return new at::cuda::CUDAGraph(); }

void airlift_graph_delete(void* g) { delete graph(g); }

// Switches to a side stream and starts capturing on it (thread-local mode: other threads'
// CUDA calls are not affected).
int airlift_graph_capture_begin(void* g, char* err, size_t err_len) {
  return guarded(
      [g] {
        push_side_stream();
        try {
          graph(g)->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
        } catch (...) {
          pop_side_stream();
          throw;
        }
      },
      err, err_len);
}

// Ends the capture (and instantiates the graph), then switches back to the saved stream.
int airlift_graph_capture_end(void* g, char* err, size_t err_len) {
  return guarded(
      [g] {
        try {
          graph(g)->capture_end();
        } catch (...) {
          pop_side_stream();
          throw;
        }
        pop_side_stream();
      },
      err, err_len);
}

int airlift_graph_replay(void* g, char* err, size_t err_len) {
  return guarded([g] { graph(g)->replay(); }, err, err_len);
}

// One AdamW step over `n` (parameter, gradient, first moment, second moment) tensors with
// libtorch's fused kernel (one pass over the four buffers; CUDA and CPU), all at step count
// `step` (a one-element fp32 tensor on their device). Gradients are read, never written.
int airlift_fused_adamw(const at::Tensor* const* params, const at::Tensor* const* grads, const at::Tensor* const* exp_avgs,
                        const at::Tensor* const* exp_avg_sqs, size_t n, const at::Tensor* step, double lr, double beta1,
                        double beta2, double weight_decay, double eps, char* err, size_t err_len) {
  return guarded(
      [&] {
        std::vector<at::Tensor> p, g, m, v, steps;
        for (size_t i = 0; i < n; ++i) {
          p.push_back(*params[i]);
          g.push_back(*grads[i]);
          m.push_back(*exp_avgs[i]);
          v.push_back(*exp_avg_sqs[i]);
          steps.push_back(*step);
        }
        at::_fused_adamw_(p, g, m, v, {}, steps, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false,
                          /*maximize=*/false);
      },
      err, err_len);
}

}  // extern "C"
