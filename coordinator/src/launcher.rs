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
    let mut children: Vec<(String, Child)> = Vec::new();
    let spawn = |name: String, args: Vec<String>| -> Result<(String, Child), CoordinatorError> {
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).map_err(|e| CoordinatorError::Io { path: logs.display().to_string(), what: e.to_string() })?;
        let err = log.try_clone().map_err(|e| CoordinatorError::Io { path: logs.display().to_string(), what: e.to_string() })?;
        let child = Command::new(&bin)
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
        children.push(spawn(format!("learner-{r}"), vec!["run".into(), "--role".into(), "learner".into(), "--coordinator".into(), url.clone(), "--rank".into(), r.to_string()])?);
    }
    for i in 0..cfg.workers.rollout {
        children.push(spawn(format!("rollout-{i}"), vec!["run".into(), "--role".into(), "rollout".into(), "--coordinator".into(), url.clone()])?);
    }
    let pids: Vec<(String, u32)> = children.iter().filter_map(|(n, c)| c.id().map(|p| (n.clone(), p))).collect();
    if let Ok(p) = serde_json::to_string(&pids) {
        let _ = std::fs::write(cfg.run_dir().join("workers.json"), p);
    }
    let outcome = serve(cfg, token, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    for (name, mut child) in children {
        match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            Ok(Ok(status)) => tracing::info!(name = %name, %status, "worker exited"),
            _ => {
                tracing::warn!(name = %name, "worker did not exit; killing it");
                let _ = child.kill().await;
            }
        }
    }
    outcome
}
