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
//! * the CUDA-graph shim (`csrc/cuda_graph.cpp`, a few libtorch calls tch has no binding for),
//!   compiled against the wheel's headers when libtorch has CUDA and the CUDA runtime headers are
//!   found (the wheel's `nvidia/cu13/include` with `crt/` from `nvidia-cuda-crt`, which `make`
//!   installs, or `$CUDA_HOME/include`); it sets
//!   `cfg(airlift_cuda_graphs)`. Without it, decoding on CUDA runs eagerly.

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
    println!("cargo:rustc-check-cfg=cfg(airlift_cuda_graphs)");
    if !lib.join("libtorch_cuda.so").is_file() {
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-lc10_cuda,--as-needed");
    println!("cargo:rerun-if-changed=csrc/cuda_graph.cpp");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let include = lib.join("../include");
    let cuda_include = [lib.join("../../nvidia/cu13/include"), lib.join("../../nvidia/cuda_runtime/include")]
        .into_iter()
        .chain(std::env::var("CUDA_HOME").ok().map(|h| std::path::Path::new(&h).join("include")))
        .find(|d| d.join("cuda_runtime_api.h").is_file() && d.join("crt/host_config.h").is_file());
    let Some(cuda_include) = cuda_include else {
        println!("cargo:warning=CUDA runtime headers not found: CUDA graphs are not built (decoding on CUDA runs eagerly)");
        return;
    };
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&cuda_include)
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .file("csrc/cuda_graph.cpp")
        .compile("airlift_cuda_graph");
    println!("cargo:rustc-cfg=airlift_cuda_graphs");
}
