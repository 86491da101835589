//! What this process can do with CUDA: whether libtorch's CUDA backend is loaded, and how many
//! devices it sees.
//!
//! libtorch registers its CUDA backend from static initialisers in `libtorch_cuda.so`; if that
//! library is not loaded, `tch::Cuda::device_count()` is 0 even on a GPU host, with no error.
//! `build.rs` keeps it linked; [`support`] checks the loaded libraries of the running process, so
//! a build that lost it is caught on hosts with no GPU too (`worker info`, the `cuda_support`
//! test).

use tch::Tensor;

/// CUDA support of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    /// `libtorch_cuda.so` is mapped into this process (the CUDA backend is registered).
    pub loaded: bool,
    /// CUDA devices libtorch sees (0 without a GPU or without the backend).
    pub devices: i64,
}

impl std::fmt::Display for Support {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.loaded {
            write!(f, "CUDA support: compiled in, {} devices", self.devices)
        } else {
            write!(
                f,
                "CUDA support: NOT loaded (libtorch_cuda.so is not in this process, so libtorch cannot see a GPU; \
                 rebuild with a CUDA libtorch, see worker/build.rs), {} devices",
                self.devices
            )
        }
    }
}

/// Whether a library whose file name starts with `prefix` is mapped into this process.
fn library_loaded(prefix: &str) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines().filter_map(|l| l.rsplit('/').next()).any(|name| name.starts_with(prefix))
}

/// This process's CUDA support.
pub fn support() -> Support {
    Support {
        loaded: library_loaded("libtorch_cuda.so"),
        devices: tch::Cuda::device_count(),
    }
}

/// A call into the C++ shim (CUDA graphs, fused AdamW) that failed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("the C++ shim (CUDA graphs, fused AdamW) is not built into this binary (libtorch without CUDA, or no CUDA headers at build time)")]
    NotBuilt,
    #[error("CUDA graph {call} failed: {what}")]
    Call { call: &'static str, what: String },
}

/// Whether this binary can capture CUDA graphs (the C++ shim was built against a CUDA libtorch).
pub fn graphs_built() -> bool {
    cfg!(airlift_cuda_graphs)
}

#[cfg(airlift_cuda_graphs)]
mod shim {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        pub fn airlift_side_stream_push(err: *mut c_char, len: usize) -> c_int;
        pub fn airlift_side_stream_pop(err: *mut c_char, len: usize) -> c_int;
        pub fn airlift_graph_new() -> *mut c_void;
        pub fn airlift_graph_delete(g: *mut c_void);
        pub fn airlift_graph_capture_begin(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn airlift_graph_capture_end(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn airlift_graph_replay(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn airlift_fused_adamw(
            params: *const *const c_void,
            grads: *const *const c_void,
            exp_avgs: *const *const c_void,
            exp_avg_sqs: *const *const c_void,
            n: usize,
            step: *const c_void,
            lr: f64,
            beta1: f64,
            beta2: f64,
            weight_decay: f64,
            eps: f64,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
    }

    /// Calls a shim function that reports errors through a message buffer.
    pub fn call(name: &'static str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), super::GraphError> {
        let mut buf = vec![0 as c_char; 1024];
        if f(buf.as_mut_ptr(), buf.len()) == 0 {
            return Ok(());
        }
        // SAFETY: the shim writes a NUL-terminated string into the buffer on failure.
        let what = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
        Err(super::GraphError::Call { call: name, what })
    }
}

/// Runs `f` on a side CUDA stream (with the device synchronised before and after): graph
/// warm-ups run there, so that lazily created per-stream state (cuBLAS workspaces) exists for
/// the stream the capture will use.
pub fn on_side_stream<T>(f: impl FnOnce() -> T) -> Result<T, GraphError> {
    #[cfg(airlift_cuda_graphs)]
    {
        // SAFETY: the shim functions take a valid buffer and its length.
        shim::call("side stream push", |e, n| unsafe { shim::airlift_side_stream_push(e, n) })?;
        let out = f();
        shim::call("side stream pop", |e, n| unsafe { shim::airlift_side_stream_pop(e, n) })?;
        Ok(out)
    }
    #[cfg(not(airlift_cuda_graphs))]
    {
        let _ = f;
        Err(GraphError::NotBuilt)
    }
}

/// Whether libtorch's fused AdamW kernel ([`fused_adamw`]) is reachable from this binary: it
/// comes through the same C++ shim as the CUDA graphs.
pub fn fused_adamw_built() -> bool {
    cfg!(airlift_cuda_graphs)
}

/// The hyper-parameters of one [`fused_adamw`] call.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// One AdamW step with libtorch's fused kernel (`_fused_adamw_`, CUDA or CPU): for each `i`,
/// `params[i]` is decayed by `lr · weight_decay` and moved by Adam's update from `grads[i]`,
/// updating the moments `exp_avgs[i]`, `exp_avg_sqs[i]` in place; `step` (a one-element fp32
/// tensor on the same device) holds the step count the bias corrections use. One pass over the
/// four buffers, where the same update in separate tensor ops makes about ten. Gradients are only
/// read. All tensors: fp32, one device, `params[i]`, `grads[i]` and the moments the same size.
pub fn fused_adamw(params: &[Tensor], grads: &[Tensor], exp_avgs: &[Tensor], exp_avg_sqs: &[Tensor], step: &Tensor, h: AdamWStep) -> Result<(), GraphError> {
    let n = params.len();
    assert!(
        grads.len() == n && exp_avgs.len() == n && exp_avg_sqs.len() == n,
        "fused AdamW: lists of different lengths"
    );
    #[cfg(airlift_cuda_graphs)]
    {
        let ptrs = |ts: &[Tensor]| ts.iter().map(|t| t.as_ptr() as *const std::ffi::c_void).collect::<Vec<_>>();
        let (p, g, m, v) = (ptrs(params), ptrs(grads), ptrs(exp_avgs), ptrs(exp_avg_sqs));
        // SAFETY: every pointer is a live tensor borrowed for the call; the lists have length n.
        shim::call("fused AdamW", |e, len| unsafe {
            shim::airlift_fused_adamw(
                p.as_ptr(),
                g.as_ptr(),
                m.as_ptr(),
                v.as_ptr(),
                n,
                step.as_ptr() as *const std::ffi::c_void,
                h.lr,
                h.beta1,
                h.beta2,
                h.weight_decay,
                h.eps,
                e,
                len,
            )
        })
    }
    #[cfg(not(airlift_cuda_graphs))]
    {
        let _ = (step, h);
        Err(GraphError::NotBuilt)
    }
}

/// A captured CUDA graph: [`Graph::replay`] relaunches every kernel `f` launched during
/// [`Graph::capture`] on the same memory. What `f` allocated lives in the graph's private pool,
/// so the tensors it returned hold the results of the latest replay.
pub struct Graph {
    #[cfg(airlift_cuda_graphs)]
    ptr: *mut std::ffi::c_void,
}

impl Graph {
    /// Captures the kernels `f` launches on the current CUDA device. `f` must not synchronise
    /// with the host (no reads of values, no host-to-device copies from pageable memory).
    pub fn capture<T>(f: impl FnOnce() -> T) -> Result<(Graph, T), GraphError> {
        #[cfg(airlift_cuda_graphs)]
        {
            // SAFETY: a new graph object, owned by the returned Graph and deleted in Drop.
            let g = Graph {
                ptr: unsafe { shim::airlift_graph_new() },
            };
            shim::call("capture begin", |e, n| unsafe { shim::airlift_graph_capture_begin(g.ptr, e, n) })?;
            let out = f();
            shim::call("capture end", |e, n| unsafe { shim::airlift_graph_capture_end(g.ptr, e, n) })?;
            Ok((g, out))
        }
        #[cfg(not(airlift_cuda_graphs))]
        {
            let _ = f;
            Err(GraphError::NotBuilt)
        }
    }

    /// Launches the captured kernels on the current stream.
    pub fn replay(&self) -> Result<(), GraphError> {
        #[cfg(airlift_cuda_graphs)]
        {
            // SAFETY: ptr is a live graph that finished capturing.
            shim::call("replay", |e, n| unsafe { shim::airlift_graph_replay(self.ptr, e, n) })
        }
        #[cfg(not(airlift_cuda_graphs))]
        Err(GraphError::NotBuilt)
    }
}

#[cfg(airlift_cuda_graphs)]
impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: ptr came from airlift_graph_new and is deleted once.
        unsafe { shim::airlift_graph_delete(self.ptr) }
    }
}
