//! The `worker` binary as a user runs it: `gsm8k` on SmolLM2 prints per-question lines and a
//! summary; bad flags and bad files fail with messages that name them.

mod common;

use std::process::Command;

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_worker"))
}

#[test]
fn gsm8k_prints_answers_and_a_summary() {
    let data = common::cache().join("data").join("gsm8k").join("test.jsonl");
    let out = worker()
        .args([
            "--threads",
            "2",
            "gsm8k",
            "--limit",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "8",
            "--model",
        ])
        .arg(common::smollm2_dir())
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("[  1/2]") && stdout.contains("reference 18"), "{stdout}");
    assert!(stdout.contains("gsm8k summary: accuracy") && stdout.contains("tok/s"), "{stdout}");
}

#[test]
fn bad_input_is_named() {
    let out = worker()
        .args(["gsm8k", "--model", "/nonexistent/model", "--data", "/nonexistent/x.jsonl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/x.jsonl"), "{err}");

    let out = worker()
        .args(["generate", "--model", "/nonexistent/model", "--prompt", "hi", "--top-p", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--top-p must be in (0, 1]"));

    let out = worker().args(["generate", "--model", "/nonexistent/model", "--prompt", "hi"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/nonexistent/model/config.json"), "{err}");
}
