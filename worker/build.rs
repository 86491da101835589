//! Link set-up for every binary, test and example of this crate:
//!
//! * an rpath to the libtorch that torch-sys linked against (the `torch==2.11.0` wheel in
//!   `./.venv`), so users never export LD_LIBRARY_PATH; on the GPU machines LD_LIBRARY_PATH still
//!   wins over this RUNPATH, as it should. The wheel's NCCL folder goes on the rpath too, for
//!   cudarc's run-time loading of `libnccl.so`.
//! * libtorch's CUDA support kept in the binary. No Rust code calls a symbol of
//!   `libtorch_cuda.so`: its only job is to register the CUDA backend from static initialisers
//!   when it loads. Linkers that default to `--as-needed` (Debian's, Ubuntu's) therefore drop it,
//!   and libtorch then sees no CUDA device even on a GPU host. `--no-as-needed` around it keeps
//!   it in DT_NEEDED. The library loads fine on hosts without a GPU (the torch wheel does the
//!   same); `worker info` and the `cuda_support` test check that it is loaded.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    let lib = std::path::Path::new(&dir);
    // NCCL from the same wheel set (nvidia-nccl-cu13), which cudarc loads at run time.
    let nccl = lib.join("../../nvidia/nccl/lib");
    if nccl.is_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", nccl.display());
    }
    if lib.join("libtorch_cuda.so").is_file() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-lc10_cuda,--as-needed");
    }
}
