//! The local launcher: `coordinator --config X --local` serves the run on loopback and starts
//! the configured numbers of learner and rollout worker processes on this machine (the `worker`
//! binary next to this one), forwards Ctrl-C, and stops them at the end.

use crate::{serve, CoordinatorError, RunOutcome};
use airlift_proto::config::RunConfig;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long workers get to exit after the run ends before they are killed.
const EXIT_GRACE: Duration = Duration::from_secs(20);

/// The `worker` binary: `AIRLIFT_WORKER_BIN`, else next to the running executable.
pub fn worker_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("AIRLIFT_WORKER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    // Test binaries live in target/<profile>/deps; the worker binary one level up.
    let candidates = [dir.join("worker"), dir.join("..").join("worker")];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| dir.join("worker"))
}

/// A random token for a local run without a configured one (from the OS's random source).
fn make_token() -> String {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// GPUs for the local workers of a CUDA run: `CUDA_VISIBLE_DEVICES` if set, else the NVIDIA
/// driver's list of GPUs (`/proc/driver/nvidia/gpus`). Empty where there are none.
fn local_gpus() -> Vec<String> {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    }
    let n = std::fs::read_dir("/proc/driver/nvidia/gpus").map(|d| d.count()).unwrap_or(0);
    (0..n).map(|i| i.to_string()).collect()
}

/// `CUDA_VISIBLE_DEVICES` for each local worker of a CUDA run, learners first: one GPU per
/// learner (NCCL needs distinct devices), rollout workers on the GPUs after them, wrapping.
fn assign_gpus(cfg: &RunConfig, gpus: &[String]) -> Result<Vec<Option<String>>, CoordinatorError> {
    let n = (cfg.workers.learner + cfg.workers.rollout) as usize;
    if cfg.workers.device != "cuda" {
        return Ok(vec![None; n]);
    }
    if gpus.len() < cfg.workers.learner as usize {
        return Err(CoordinatorError::Config(format!(
            "workers.device = \"cuda\" with workers.learner = {} needs one GPU per learner, and this machine shows {} (CUDA_VISIBLE_DEVICES or /proc/driver/nvidia/gpus)",
            cfg.workers.learner,
            gpus.len()
        )));
    }
    Ok((0..n).map(|i| Some(gpus[i % gpus.len()].clone())).collect())
}

/// The last `Error: ...` line a worker process wrote to its log, if any.
fn last_error_line(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| l.strip_prefix("Error: ")).map(|l| l.chars().take(400).collect())
}

/// Runs `cfg` with local worker processes; worker logs go to `<run>/logs/`.
pub async fn run_local(cfg: RunConfig, token: Option<String>) -> Result<RunOutcome, CoordinatorError> {
    let token = Some(token.unwrap_or_else(make_token));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| CoordinatorError::Server(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| CoordinatorError::Server(e.to_string()))?;
    let url = format!("http://{addr}");
    let logs = cfg.run_dir().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| CoordinatorError::Io { path: logs.display().to_string(), what: e.to_string() })?;
    let bin = worker_binary();
    if !bin.exists() {
        return Err(CoordinatorError::Io { path: bin.display().to_string(), what: "worker binary not found (build it, or set AIRLIFT_WORKER_BIN)".into() });
    }
    let gpus = assign_gpus(&cfg, &local_gpus())?;
    let mut children: Vec<(String, Child)> = Vec::new();
    let spawn = |name: String, args: Vec<String>, gpu: Option<String>| -> Result<(String, Child), CoordinatorError> {
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).map_err(|e| CoordinatorError::Io { path: logs.display().to_string(), what: e.to_string() })?;
        let err = log.try_clone().map_err(|e| CoordinatorError::Io { path: logs.display().to_string(), what: e.to_string() })?;
        let mut cmd = Command::new(&bin);
        if let Some(g) = gpu {
            cmd.env("CUDA_VISIBLE_DEVICES", g);
        }
        let child = cmd
            .args(&args)
            .env("AIRLIFT_TOKEN", token.as_deref().unwrap_or(""))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CoordinatorError::Io { path: bin.display().to_string(), what: e.to_string() })?;
        tracing::info!(name = %name, pid = child.id(), "worker started");
        Ok((name, child))
    };
    for r in 0..cfg.workers.learner {
        children.push(spawn(format!("learner-{r}"), vec!["run".into(), "--role".into(), "learner".into(), "--coordinator".into(), url.clone(), "--rank".into(), r.to_string()], gpus[r as usize].clone())?);
    }
    for i in 0..cfg.workers.rollout {
        children.push(spawn(format!("rollout-{i}"), vec!["run".into(), "--role".into(), "rollout".into(), "--coordinator".into(), url.clone()], gpus[(cfg.workers.learner + i) as usize].clone())?);
    }
    let pids: Vec<(String, u32)> = children.iter().filter_map(|(n, c)| c.id().map(|p| (n.clone(), p))).collect();
    if let Ok(p) = serde_json::to_string(&pids) {
        let _ = std::fs::write(cfg.run_dir().join("workers.json"), p);
    }
    let names: Vec<String> = children.iter().map(|(n, _)| n.clone()).collect();
    // One watcher per child: reports its exit, and kills it when told to.
    let (exited_tx, mut exited_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, bool)>();
    let mut killers = Vec::new();
    let mut done = Vec::new();
    for (name, mut child) in children {
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let exited = exited_tx.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                _ = kill_rx => {
                    tracing::warn!(name = %name, "worker did not exit; killing it");
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let (text, ok) = match status {
                Ok(s) => (s.to_string(), s.success()),
                Err(e) => (e.to_string(), false),
            };
            let _ = exited.send((name, text, ok));
            let _ = done_tx.send(());
        });
        killers.push(kill_tx);
        done.push(done_rx);
    }
    drop(exited_tx);
    // The run stops on Ctrl-C, when a learner process exits (the run cannot go on without it),
    // or when no rollout worker process is left. A single lost rollout worker is the
    // coordinator's business: its task is re-queued.
    let (learners, mut rollouts) = (cfg.workers.learner, cfg.workers.rollout);
    let logs_dir = logs.clone();
    let stop = async move {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return "interrupted".to_string(),
                ev = exited_rx.recv() => match ev {
                    Some((name, status, ok)) => {
                        if ok {
                            // A clean exit: the worker was told to shut down (end of the run).
                            tracing::info!(name = %name, %status, "worker process exited");
                            continue;
                        }
                        tracing::warn!(name = %name, %status, "worker process exited during the run");
                        let log = logs_dir.join(format!("{name}.log"));
                        let why = last_error_line(&log).map(|l| format!(": {l}")).unwrap_or_default();
                        if name.starts_with("learner") && learners > 0 {
                            return format!("{name} exited ({status}){why}; see {}", log.display());
                        }
                        rollouts = rollouts.saturating_sub(1);
                        if rollouts == 0 {
                            return format!("no rollout worker left: {name} exited last ({status}){why}; see {}", log.display());
                        }
                    }
                    None => std::future::pending::<()>().await,
                },
            }
        }
    };
    let outcome = serve(cfg, token, listener, stop).await;
    let deadline = tokio::time::Instant::now() + EXIT_GRACE;
    for (kill, done) in killers.into_iter().zip(done) {
        let mut done = done;
        if tokio::time::timeout_at(deadline, &mut done).await.is_err() {
            let _ = kill.send(());
            let _ = done.await;
        }
    }
    // A failed run names what its workers said last, so nobody has to open the logs to start.
    outcome.map_err(|e| match e {
        CoordinatorError::Failed(why) => {
            let said: String = names
                .iter()
                .filter_map(|n| last_error_line(&logs.join(format!("{n}.log"))).map(|l| format!("\n  {n}: {l}")))
                .collect();
            CoordinatorError::Failed(format!("{why}{said}\n  worker logs: {}", logs.display()))
        }
        other => other,
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gpu_per_learner_and_rollouts_wrap_after_them() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/default.toml")).unwrap();
        let mut cfg = RunConfig::from_toml(&text).unwrap();
        (cfg.workers.learner, cfg.workers.rollout) = (2, 3);
        let gpus: Vec<String> = ["4", "5", "6"].map(String::from).to_vec();
        assert_eq!(assign_gpus(&cfg, &gpus).unwrap(), vec![None; 5], "CPU runs set nothing");
        cfg.workers.device = "cuda".into();
        let got: Vec<String> = assign_gpus(&cfg, &gpus).unwrap().into_iter().map(Option::unwrap).collect();
        assert_eq!(got, ["4", "5", "6", "4", "5"]);
        let e = assign_gpus(&cfg, &gpus[..1]).unwrap_err().to_string();
        assert!(e.contains("workers.learner = 2") && e.contains("shows 1"), "{e}");
    }
}
