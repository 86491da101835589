//! Helpers shared by the cross-crate integration tests in `tests/tests/`: the built binaries, a
//! tiny random model with SmolLM2's tokenizer, run configs, and readers for a run's outputs.

use airlift_proto::trajectory::{self, TrajectoryRow};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whole runs start several processes each; running them one at a time keeps a 2-core machine
/// from starving heartbeats. Every test that starts a run holds this lock.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A binary of this workspace (`coordinator`, `worker`), next to the test executable's folder.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: build the workspace first (cargo test --workspace does)", p.display());
    p
}

/// The asset cache filled by `make assets`.
pub fn cache() -> PathBuf {
    std::env::var_os("AIRLIFT_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(".cache"))
}

/// A fresh, empty temporary folder.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("airlift-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a tiny random Llama (SmolLM2's vocabulary and tokenizer) into `dir`.
pub fn tiny_model(dir: &Path) {
    let smol = cache().join("models").join("SmolLM2-135M-Instruct");
    airlift_worker::model::write_tiny_llama(dir, &smol, 0).unwrap_or_else(|e| panic!("{e} (run `make assets`)"));
}

/// A run config for the tiny model.
pub fn tiny_config(model: &Path, run_dir: &Path, extra: &str) -> String {
    format!(
        r#"[run]
name = "it"
dir = "{run}"
iterations = 3
[workers]
rollout = 2
learner = 2
threads = 1
heartbeat_ms = 200
lost_after_ms = 10000
[model]
policy = "{model}"
[data]
prompts_per_iteration = 4
samples_per_prompt = 2
prompts_per_task = 1
eval_prompts = 2
[sampling]
max_new_tokens = 24
[reward]
warm_start_steps = 1
warm_start_batch = 2
[sft]
steps = 1
batch = 2
{extra}"#,
        run = run_dir.display(),
        model = model.display()
    )
}

/// Runs `coordinator` with `args`, returning (success, stdout, stderr).
pub fn coordinator(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("coordinator")).args(args).stdin(Stdio::null()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// All trajectory rows of a run, by file name.
pub fn trajectories(run_dir: &Path) -> Vec<(String, Vec<TrajectoryRow>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(run_dir.join("trajectories")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let f = std::fs::File::open(&p).unwrap();
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
            let rows = reader.flat_map(|b| trajectory::from_batch(&b.unwrap()).unwrap()).collect();
            (p.file_name().unwrap().to_string_lossy().into_owned(), rows)
        })
        .collect()
}

/// The run's metrics records.
pub fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
