//! Helpers shared by the worker's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use tch::Tensor;

/// `tests/fixtures` at the workspace root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("tests").join("fixtures")
}

/// The asset cache (`AIRLIFT_CACHE`, default `<workspace>/.cache`), filled by `make assets`.
pub fn cache() -> PathBuf {
    std::env::var_os("AIRLIFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(".cache"))
}

/// The converted SmolLM2 folder; panics with the command that creates it when it is missing.
pub fn smollm2_dir() -> PathBuf {
    let d = cache().join("models").join("SmolLM2-135M-Instruct");
    assert!(
        d.join("model.safetensors").exists(),
        "{} is missing: run `make assets` (make test does it) to fetch and convert SmolLM2",
        d.display()
    );
    d
}

/// Reads all tensors of a safetensors file.
pub fn read_safetensors(path: &std::path::Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// max |a - b| / max |b|: the relative error of `a` against the reference `b`.
pub fn max_rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(tch::Kind::Double);
    let b = b.to_kind(tch::Kind::Double);
    let diff = (&a - &b).abs().max().double_value(&[]);
    diff / b.abs().max().double_value(&[])
}
