//! Every shipped recipe passes `coordinator check`: the GPU recipes with their model's shape from
//! `configs/shapes/` (no weights here), the CPU ones with the models `make` fetches; the check
//! prints parameter counts and a memory estimate and refuses a plan over `workers.memory_gb`.

use airlift_tests::*;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `coordinator ARGS` from the repository root (the recipes' paths are relative to it).
fn coordinator(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(bin("coordinator"))
        .args(args)
        .current_dir(root())
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn every_recipe_checks_out_and_a_plan_too_large_is_refused() {
    let mut gpu = 0;
    for e in std::fs::read_dir(root().join("configs")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg: toml::Value = toml::from_str(&text).unwrap();
        let policy = PathBuf::from(cfg["model"]["policy"].as_str().unwrap());
        let shape = root().join("configs/shapes").join(policy.file_name().unwrap());
        let mut args = vec!["--config".to_string(), path.display().to_string(), "check".into()];
        if shape.exists() {
            args.extend(["--model-config".into(), shape.display().to_string()]);
            gpu += 1;
        } else if !root().join(&policy).join("config.json").exists() {
            // A CPU recipe whose model `make assets-gsm8k` fetches (not part of `make test`).
            println!("{}: {} not fetched, skipped", path.display(), policy.display());
            continue;
        }
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (ok, out, err) = coordinator(&a);
        assert!(ok, "{}: check failed:\n{out}\n{err}", path.display());
        assert!(
            err.contains("parameters: policy") && err.contains("memory per learner") && err.contains("KV cache"),
            "{}:\n{err}",
            path.display()
        );
        assert!(out.contains("LEARNERS="), "{out}");
        println!("{}:\n{err}", path.display());
    }
    assert!(gpu >= 4, "{gpu} GPU recipes");

    // The same 1.5B recipe on 20 GB GPUs does not fit, and the error says which key and why.
    let dir = temp_dir("recipe");
    let small = dir.join("small.toml");
    let text = std::fs::read_to_string(root().join("configs/qwen2.5-1.5b-gsm8k-8gpu.toml"))
        .unwrap()
        .replace("memory_gb = 80", "memory_gb = 20");
    std::fs::write(&small, text).unwrap();
    let shape = root().join("configs/shapes/Qwen2.5-1.5B-Instruct");
    let (ok, _, err) = coordinator(&["--config", small.to_str().unwrap(), "check", "--model-config", shape.to_str().unwrap()]);
    assert!(!ok && err.contains("workers.memory_gb = 20") && err.contains("learner needs about"), "{err}");
    // The embedded default: SmolLM2-135M's published parameter count.
    let (ok, _, err) = coordinator(&["--config", root().join("configs/default.toml").to_str().unwrap(), "check"]);
    assert!(ok && err.contains("policy 134.5M"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
