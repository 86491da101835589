//! The local launcher: `coordinator --config X --local` serves the run on loopback and starts
//! the configured numbers of learner and rollout worker processes on this machine (the `worker`
//! binary next to this one), restarts the learners when the run asks (a learner died; they
//! resume from the newest checkpoint), and stops them at the end. Ctrl-C and SIGTERM are the
//! coordinator's (`serve` stops the run at a checkpoint); the workers ignore them.

use crate::{serve, CoordinatorError, RunOutcome};
use airlift_proto::config::{Device, RunConfig};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// `OMP_WAIT_POLICY` of the worker processes `--local` starts (libgomp reads it once, when
/// libtorch loads, so it must be in the environment the process starts with). libgomp's default
/// spins a waiting thread for a while before it sleeps; beside one busy process on 2 cores that
/// spinning took the CPU the other threads needed (docs/performance.md, "A busy neighbour").
pub const WAIT_POLICY: &str = "PASSIVE";

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
    if cfg.workers.device != Device::Cuda {
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
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("Error: "))
        .map(|l| l.chars().take(400).collect())
}

/// A started worker process: its watcher reports its exit, and kills it when told to.
struct Proc {
    kill: tokio::sync::oneshot::Sender<()>,
    done: tokio::sync::oneshot::Receiver<()>,
}

/// Watches `child`: calls `on_exit(status, success)` when it exits; a message on the returned
/// handle's `kill` kills it first.
fn watch(name: String, mut child: Child, on_exit: impl FnOnce(String, bool) + Send + 'static) -> Proc {
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let status = tokio::select! {
            s = child.wait() => s,
            _ = kill_rx => {
                tracing::info!(name = %name, "killing worker process");
                let _ = child.start_kill();
                child.wait().await
            }
        };
        let (text, ok) = match status {
            Ok(s) => (s.to_string(), s.success()),
            Err(e) => (e.to_string(), false),
        };
        on_exit(text, ok);
        let _ = done_tx.send(());
    });
    Proc { kill: kill_tx, done: done_rx }
}

/// Kills `procs` that have not exited by `deadline`, and waits for all of them.
async fn reap(procs: Vec<Proc>, deadline: tokio::time::Instant) {
    for Proc { kill, mut done } in procs {
        if tokio::time::timeout_at(deadline, &mut done).await.is_err() {
            let _ = kill.send(());
            let _ = done.await;
        }
    }
}

/// Runs `cfg` with local worker processes; worker logs go to `<run>/logs/`. Starts from the
/// checkpoint `resume` asks for; a learner that dies restarts the learners from the newest
/// checkpoint (`run.max_restarts` times).
pub async fn run_local(cfg: RunConfig, token: Option<String>, resume: crate::Resume) -> Result<RunOutcome, CoordinatorError> {
    // Check the checkpoint before starting anything.
    let resume = crate::choose_checkpoint(&cfg, &resume)?;
    launch(cfg, token, resume, None).await
}

/// Runs the evaluation job `plan` (checked by [`crate::eval::prepare`]) with local worker
/// processes; the learners load `point`.
pub async fn eval_local(
    cfg: RunConfig,
    token: Option<String>,
    plan: crate::eval::EvalPlan,
    point: Option<crate::state::ResumePoint>,
) -> Result<RunOutcome, CoordinatorError> {
    launch(cfg, token, point, Some(plan)).await
}

async fn launch(
    cfg: RunConfig,
    token: Option<String>,
    resume: Option<crate::state::ResumePoint>,
    eval: Option<crate::eval::EvalPlan>,
) -> Result<RunOutcome, CoordinatorError> {
    let token = Some(token.unwrap_or_else(make_token));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CoordinatorError::Server(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| CoordinatorError::Server(e.to_string()))?;
    let url = format!("http://{addr}");
    let logs = cfg.run_dir().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| CoordinatorError::Io {
        path: logs.display().to_string(),
        what: e.to_string(),
    })?;
    let bin = worker_binary();
    if !bin.exists() {
        return Err(CoordinatorError::Io {
            path: bin.display().to_string(),
            what: "worker binary not found (build it, or set AIRLIFT_WORKER_BIN)".into(),
        });
    }
    let gpus = assign_gpus(&cfg, &local_gpus())?;
    // The workers run on this host: say here too (not only in their logs) when they will
    // compute bf16 settings in fp32.
    for (key, dtype) in [("model.train_dtype", cfg.model.train_dtype), ("model.rollout_dtype", cfg.model.rollout_dtype)] {
        use airlift_proto::host;
        if let (_, Some(note)) = host::cpu_compute_kind(&cfg, dtype, key, host::cpu_bf16_slow(), host::force_cpu_bf16()) {
            tracing::warn!("{}", note.replace("this worker computes", "the local workers compute"));
        }
    }
    // Logs are appended to: a resumed or restarted worker's log follows the earlier attempt's.
    let spawn = {
        let (bin, logs, token) = (bin.clone(), logs.clone(), token.clone());
        move |name: &str, args: Vec<String>, gpu: Option<String>, note: &str| -> Result<Child, CoordinatorError> {
            let path = logs.join(format!("{name}.log"));
            let ioe = |e: std::io::Error| CoordinatorError::Io {
                path: path.display().to_string(),
                what: e.to_string(),
            };
            let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(ioe)?;
            if !note.is_empty() {
                use std::io::Write;
                let _ = writeln!(log, "==== {note} ====");
            }
            let err = log.try_clone().map_err(ioe)?;
            let mut cmd = Command::new(&bin);
            if let Some(g) = gpu {
                cmd.env("CUDA_VISIBLE_DEVICES", g);
            }
            // libtorch's OpenMP threads sleep when idle instead of spinning, unless the user
            // chose otherwise (see WAIT_POLICY).
            if std::env::var_os("OMP_WAIT_POLICY").is_none() {
                cmd.env("OMP_WAIT_POLICY", WAIT_POLICY);
            }
            let child = cmd
                .args(&args)
                .env("AIRLIFT_TOKEN", token.as_deref().unwrap_or(""))
                // Ctrl-C in the terminal reaches the whole process group: the coordinator
                // stops the run (checkpoint, then shutdown messages), so workers ignore it.
                .env("AIRLIFT_WORKER_SIGNALS", "coordinator")
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(err))
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| CoordinatorError::Io {
                    path: bin.display().to_string(),
                    what: e.to_string(),
                })?;
            tracing::info!(name = %name, pid = child.id(), "worker started");
            Ok(child)
        }
    };
    let pids = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, u32)>::new()));
    let write_pids = {
        let (pids, path) = (pids.clone(), cfg.run_dir().join("workers.json"));
        move |name: &str, child: &Child| {
            let mut p = pids.lock().unwrap();
            p.retain(|(n, _)| n != name);
            if let Some(id) = child.id() {
                p.push((name.to_string(), id));
            }
            if let Ok(text) = serde_json::to_string(&*p) {
                let _ = std::fs::write(&path, text);
            }
        }
    };
    // Learners: their exits go to the run state (which restarts them or fails the run).
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel::<crate::state::Event>();
    let (respawn_tx, mut respawn_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let learners = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<Proc>::new()));
    let start_learners = {
        let (spawn, write_pids, url, gpus, events_tx) = (spawn.clone(), write_pids.clone(), url.clone(), gpus.clone(), events_tx.clone());
        let n = cfg.workers.learner;
        move |generation: u32| -> Result<Vec<Proc>, CoordinatorError> {
            let mut procs = Vec::new();
            for r in 0..n {
                let name = format!("learner-{r}");
                let note = if generation > 0 { format!("restart {generation}") } else { String::new() };
                let args = vec![
                    "run".into(),
                    "--role".into(),
                    "learner".into(),
                    "--coordinator".into(),
                    url.clone(),
                    "--rank".into(),
                    r.to_string(),
                ];
                let child = spawn(&name, args, gpus[r as usize].clone(), &note)?;
                write_pids(&name, &child);
                let ev = events_tx.clone();
                let label = name.clone();
                procs.push(watch(name, child, move |status, ok| {
                    if ok {
                        tracing::info!(name = %label, %status, "worker process exited");
                    } else {
                        tracing::warn!(name = %label, %status, "worker process exited during the run");
                        let _ = ev.send(crate::state::Event::LearnerExited { rank: r, generation, status });
                    }
                }));
            }
            Ok(procs)
        }
    };
    *learners.lock().await = start_learners(0)?;
    drop(events_tx);
    // Restarts: kill the learners still running, then start a new generation.
    let restarter = {
        let learners = learners.clone();
        tokio::spawn(async move {
            while let Some(generation) = respawn_rx.recv().await {
                let mut current = learners.lock().await;
                let old = std::mem::take(&mut *current);
                reap(old, tokio::time::Instant::now()).await;
                match start_learners(generation) {
                    Ok(p) => *current = p,
                    Err(e) => tracing::error!(error = %e, "cannot restart the learners"),
                }
            }
        })
    };
    // Rollout workers: the run stops when none is left; a single lost one is the coordinator's
    // business (its task is re-queued).
    let (exited_tx, mut exited_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, bool)>();
    let mut rollouts = Vec::new();
    for i in 0..cfg.workers.rollout {
        let name = format!("rollout-{i}");
        let args = vec!["run".into(), "--role".into(), "rollout".into(), "--coordinator".into(), url.clone()];
        let child = spawn(
            &name,
            args,
            gpus[(cfg.workers.learner + i) as usize].clone(),
            if resume.is_none() { "" } else { "resume" },
        )?;
        write_pids(&name, &child);
        let tx = exited_tx.clone();
        let label = name.clone();
        rollouts.push(watch(name, child, move |status, ok| {
            let _ = tx.send((label, status, ok));
        }));
    }
    drop(exited_tx);
    let mut left = cfg.workers.rollout;
    let logs_dir = logs.clone();
    let stop = async move {
        loop {
            tokio::select! {
                ev = exited_rx.recv() => match ev {
                    Some((name, status, ok)) => {
                        if ok {
                            // A clean exit: the worker was told to shut down (end of the run).
                            tracing::info!(name = %name, %status, "worker process exited");
                            continue;
                        }
                        tracing::warn!(name = %name, %status, "worker process exited during the run");
                        left = left.saturating_sub(1);
                        if left == 0 {
                            let log = logs_dir.join(format!("{name}.log"));
                            let why = last_error_line(&log).map(|l| format!(": {l}")).unwrap_or_default();
                            return format!("no rollout worker left: {name} exited last ({status}){why}; see {}", log.display());
                        }
                    }
                    None => std::future::pending::<()>().await,
                },
            }
        }
    };
    let opts = crate::ServeOptions {
        resume,
        launcher: Some((events_rx, respawn_tx)),
        eval,
        requeue: false,
    };
    let outcome = serve(cfg.clone(), token, listener, stop, opts).await;
    restarter.abort();
    let deadline = tokio::time::Instant::now() + EXIT_GRACE;
    let current = std::mem::take(&mut *learners.lock().await);
    reap(current, deadline).await;
    reap(rollouts, deadline).await;
    // A failed run names what its workers said last, so nobody has to open the logs to start.
    let names: Vec<String> = (0..cfg.workers.learner)
        .map(|r| format!("learner-{r}"))
        .chain((0..cfg.workers.rollout).map(|i| format!("rollout-{i}")))
        .collect();
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
        cfg.workers.device = Device::Cuda;
        let got: Vec<String> = assign_gpus(&cfg, &gpus).unwrap().into_iter().map(Option::unwrap).collect();
        assert_eq!(got, ["4", "5", "6", "4", "5"]);
        let e = assign_gpus(&cfg, &gpus[..1]).unwrap_err().to_string();
        assert!(e.contains("workers.learner = 2") && e.contains("shows 1"), "{e}");
    }
}
