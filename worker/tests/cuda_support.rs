//! libtorch's CUDA backend must be loaded in every binary that can touch a GPU, on hosts with or
//! without one. Linkers with `--as-needed` drop `libtorch_cuda.so` (no Rust code calls it), and
//! then libtorch silently sees no GPU; this caught it on the first GPU run. Runs on any host.

use std::process::Command;

#[test]
fn worker_binary_has_cuda_support_loaded() {
    let out = Command::new(env!("CARGO_BIN_EXE_worker")).arg("info").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("CUDA support: compiled in"), "worker info printed:\n{stdout}");
}

#[test]
fn worker_binary_needs_libtorch_cuda() {
    // The dynamic section itself, independently of the run-time check above.
    let out = Command::new("readelf").arg("-d").arg(env!("CARGO_BIN_EXE_worker")).output();
    let Ok(out) = out else {
        // readelf (binutils) is on every machine with a C toolchain, which this build needs.
        panic!("readelf not found: install binutils");
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[libtorch_cuda.so]"),
        "libtorch_cuda.so is not a NEEDED library of worker:\n{text}"
    );
}

#[test]
fn test_binaries_have_cuda_support_loaded() {
    let s = airlift_worker::cuda::support();
    assert!(s.loaded, "{s}");
}
