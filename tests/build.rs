//! Gives every binary and test of this crate an rpath to the libtorch that torch-sys linked
//! against (the `torch==2.11.0` wheel in `./.venv`), so users never export LD_LIBRARY_PATH.
//! On the GPU machines LD_LIBRARY_PATH still wins over this RUNPATH, as it should. Keeps
//! libtorch's CUDA support loaded, as `worker/build.rs` explains.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if std::path::Path::new(&dir).join("libtorch_cuda.so").is_file() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-lc10_cuda,--as-needed");
        }
    }
}
