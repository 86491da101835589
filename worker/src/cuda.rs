//! What this process can do with CUDA: whether libtorch's CUDA backend is loaded, and how many
//! devices it sees.
//!
//! libtorch registers its CUDA backend from static initialisers in `libtorch_cuda.so`; if that
//! library is not loaded, `tch::Cuda::device_count()` is 0 even on a GPU host, with no error.
//! `build.rs` keeps it linked; [`support`] checks the loaded libraries of the running process, so
//! a build that lost it is caught on hosts with no GPU too (`worker info`, the `cuda_support`
//! test).

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
    Support { loaded: library_loaded("libtorch_cuda.so"), devices: tch::Cuda::device_count() }
}
