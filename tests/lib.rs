//! Helpers shared by the cross-crate integration tests in `tests/tests/`: the built binaries, a
//! tiny random model with SmolLM2's tokenizer, run configs, and readers for a run's outputs.

pub mod cluster;

use airlift_proto::trajectory::{self, TrajectoryRow};
use std::collections::BTreeMap;
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
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo test --workspace does)",
        p.display()
    );
    p
}

/// The asset cache filled by `make assets`.
pub fn cache() -> PathBuf {
    std::env::var_os("AIRLIFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(".cache"))
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
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// All trajectory rows of a run, by file name.
pub fn trajectories(run_dir: &Path) -> Vec<(String, Vec<TrajectoryRow>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(run_dir.join("trajectories")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let f = std::fs::File::open(&p).unwrap();
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .unwrap()
                .build()
                .unwrap();
            let rows = reader.flat_map(|b| trajectory::from_batch(&b.unwrap()).unwrap()).collect();
            (p.file_name().unwrap().to_string_lossy().into_owned(), rows)
        })
        .collect()
}

/// The run's metrics records.
pub fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Starts `coordinator args` in its own process group and calls `on_line(line, pgid)` for each
/// line of its log (to kill something at the right moment). Returns (success, stdout, log).
/// Kills the group after `timeout`.
pub fn coordinator_watched(args: &[&str], timeout: std::time::Duration, on_line: impl FnMut(&str, u32)) -> (bool, String, String) {
    let coordinator = bin("coordinator");
    let mut all = vec![coordinator.to_str().unwrap()];
    all.extend_from_slice(args);
    command_watched(&all, timeout, on_line)
}

#[allow(clippy::zombie_processes)] // every path either waits for the child or kills its group
/// [`coordinator_watched`] for any command line (`argv[0]` a program on PATH or a path), e.g.
/// the coordinator under `prlimit`.
pub fn command_watched(argv: &[&str], timeout: std::time::Duration, mut on_line: impl FnMut(&str, u32)) -> (bool, String, String) {
    use std::io::{BufRead, Read};
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + timeout;
    let mut log = Vec::new();
    let mut status = None;
    while status.is_none() {
        if std::time::Instant::now() > deadline {
            kill_group(pgid);
        }
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(line) => {
                on_line(&line, pgid);
                log.push(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => status = child.try_wait().unwrap(),
            Err(_) => status = Some(child.wait().unwrap()),
        }
    }
    // Workers die with the group; give the kernel a moment to release their ports and files.
    std::thread::sleep(std::time::Duration::from_millis(300));
    (status.unwrap().success(), out.join().unwrap(), log.join("\n"))
}

/// SIGKILL to every process of group `pgid`.
pub fn kill_group(pgid: u32) {
    let _ = Command::new("kill").args(["-9", "--", &format!("-{pgid}")]).status();
}

/// SIGKILL to local worker `name` of the run in `run_dir` (from its `workers.json`).
pub fn kill_worker(run_dir: &Path, name: &str) {
    let pids: Vec<(String, u32)> = serde_json::from_str(&std::fs::read_to_string(run_dir.join("workers.json")).unwrap()).unwrap();
    let pid = pids
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in workers.json: {pids:?}"))
        .1;
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
}

/// A metrics record without anything that measures time or the machine (seconds, rates, memory,
/// page faults), for comparing two runs that must compute the same thing. The two KL
/// diagnostics of the PPO step (`approx_kl`, `behaviour_kl`) are kept to 1e-9 only: in the fp32
/// test runs they are rounding noise of about 1e-14, which once differed by one ulp between a run
/// and its resume with every parameter fingerprint equal.
pub fn without_timings(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(k, _)| {
                !(k.ends_with("_s")
                    || k.ends_with("_ms")
                    || k.starts_with("time_")
                    || k.as_str() == "learner_peak_rss_mb"
                    || k.as_str() == "learner_minor_faults")
            })
            .map(|(k, v)| match (k.as_str(), v.as_f64()) {
                ("approx_kl" | "behaviour_kl", Some(x)) => (k.clone(), serde_json::json!((x * 1e9).round() / 1e9)),
                _ => (k.clone(), without_timings(v)),
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(a) => a.iter().map(without_timings).collect::<Vec<_>>().into(),
        other => other.clone(),
    }
}

/// The trajectory rows of a run with their generation times zeroed (the only timing in a row).
pub fn rows_without_timings(run_dir: &Path) -> Vec<(String, Vec<TrajectoryRow>)> {
    trajectories(run_dir)
        .into_iter()
        .map(|(n, rows)| (n, rows.into_iter().map(|r| TrajectoryRow { generation_ms: 0, ..r }).collect()))
        .collect()
}

/// A 4-iteration run of the tiny model (in `dir/model`) into `dir/<run>` with `learners`
/// learners, 6 prompts per iteration (so that 1, 2 and 3 learners all divide them) and a
/// checkpoint after every iteration; returns the config file `dir/<run>.toml`.
pub fn checkpointed_config(dir: &Path, run: &str, learners: u32) -> PathBuf {
    let text = tiny_config(&dir.join("model"), &dir.join(run), "[checkpoint]\nevery = 1\nkeep = 5\n")
        .replace("iterations = 3", "iterations = 4")
        .replace("learner = 2", &format!("learner = {learners}"))
        .replace("prompts_per_iteration = 4", "prompts_per_iteration = 6")
        .replace("warm_start_batch = 2", "warm_start_batch = 6");
    let path = dir.join(format!("{run}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The metrics records of iterations (not of restarts).
pub fn records(run: &Path) -> Vec<serde_json::Value> {
    metrics(run).into_iter().filter(|r| r.get("iteration").is_some()).collect()
}

/// (policy, reward) fingerprints of each learner in a record.
pub fn fingerprints(rec: &serde_json::Value) -> Vec<(String, String)> {
    rec["learners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["policy_fingerprint"].as_str().unwrap().into(),
                l["reward_fingerprint"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// Every scalar of `<run>/tensorboard/` as TensorBoard's own reader (the `tensorboard` package
/// that `make test` installs into ./.venv) reads it: tag -> [(step, value)] in file order.
pub fn tensorboard_scalars(run: &Path) -> BTreeMap<String, Vec<(i64, f64)>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    let out = Command::new(&python)
        .arg(root.join("scripts/read_tensorboard.py"))
        .arg(run.join("tensorboard"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (make test installs the venv)", python.display()));
    assert!(
        out.status.success(),
        "read_tensorboard.py failed (is `tensorboard` in ./.venv? make test installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A run's TensorBoard events agree with its metrics.jsonl: each iteration's losses and
/// rollout accuracy once per step, the warm start's per-step losses, no step twice.
pub fn check_tensorboard(run: &Path) {
    let tb = tensorboard_scalars(run);
    for (tag, points) in &tb {
        let steps: Vec<i64> = points.iter().map(|p| p.0).collect();
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{tag}: steps {steps:?} (a step written twice?)");
    }
    let recs = records(run);
    for (tag, get) in [
        ("learner/disc_loss", ["learners", "0", "disc_loss"]),
        ("rollout/accuracy", ["rollout", "accuracy", ""]),
        ("learner/approx_kl", ["learners", "0", "approx_kl"]),
    ] {
        let want: Vec<(i64, f64)> = recs
            .iter()
            .filter(|r| r["iteration"].as_u64().unwrap() > 0)
            .map(|r| {
                let mut v = &r[get[0]];
                for k in &get[1..] {
                    v = match k.parse::<usize>() {
                        Ok(i) => &v[i],
                        Err(_) if k.is_empty() => v,
                        Err(_) => &v[*k],
                    };
                }
                (r["iteration"].as_i64().unwrap(), v.as_f64().unwrap())
            })
            .collect();
        let got = tb.get(tag).unwrap_or_else(|| panic!("no {tag} in {:?}", tb.keys().collect::<Vec<_>>()));
        assert_eq!(got.len(), want.len(), "{tag}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                g.0 == w.0 && (g.1 - w.1).abs() <= 1e-6 * w.1.abs().max(1e-30),
                "{tag}: {got:?} vs metrics.jsonl {want:?}"
            );
        }
    }
    let sft = recs[0]["learners"][0]["sft_losses"].as_array().unwrap().len();
    assert!(sft > 0 && tb["warm_start/sft_loss"].len() == sft, "{:?}", tb.get("warm_start/sft_loss"));
}

/// `scripts/hf_token_rewards.py`: transformers' per-token rewards of an exported reward folder
/// (AutoModelForTokenClassification) on `ids`, with its class and missing / unexpected keys.
pub fn hf_token_rewards(folder: &Path, ids: &[i64]) -> serde_json::Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    let out = Command::new(&python)
        .arg(root.join("scripts/hf_token_rewards.py"))
        .arg(folder)
        .args(ids.iter().map(|i| i.to_string()))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (make test installs the venv)", python.display()));
    assert!(
        out.status.success(),
        "hf_token_rewards.py failed (is transformers in ./.venv? make test installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
