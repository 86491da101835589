//! Gives every binary and test of this crate an rpath to the libtorch that torch-sys linked
//! against (the `torch==2.11.0` wheel in `./.venv`), so users never export LD_LIBRARY_PATH.
//! On the GPU machines LD_LIBRARY_PATH still wins over this RUNPATH, as it should. The wheel's
//! NCCL folder goes on the rpath too, for cudarc's run-time loading of `libnccl.so`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        // NCCL from the same wheel set (nvidia-nccl-cu13), which cudarc loads at run time.
        let nccl = std::path::Path::new(&dir).join("../../nvidia/nccl/lib");
        if nccl.is_dir() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", nccl.display());
        }
    }
}
