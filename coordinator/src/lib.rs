//! The airlift coordinator.
//!
//! Owns the run: the gRPC server (Register / Attach / ReportTask / RunStatus), the run state
//! machine driven by one event loop ([`state`]), scheduling of rollout tasks and learner tasks,
//! the learners' rendezvous, lost-worker handling, the metrics sink (`<run>/metrics.jsonl`) and
//! the local launcher (worker processes on this machine). It never touches tensors.
//!
//! Checkpoints: the coordinator sends each learner rank a checkpoint task, writes the manifest
//! once all shards are reported, verifies checkpoints before a resume (`--resume`), and exports
//! them as Hugging Face folders ([`export`]). `--local` runs restart lost learners from the
//! newest checkpoint.

pub mod effects;
pub mod eval;
pub mod export;
pub mod failure;
pub mod launcher;
pub mod memory;
pub mod progress;
pub mod report;
pub mod server;
pub mod state;
pub mod summary;
pub mod tensorboard;

use airlift_proto::auth::Guard;
use airlift_proto::checkpoint as ckpt;
use airlift_proto::config::{self, RunConfig};
use state::{Event, Phase, RunState};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Errors of a coordinator run.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("{path}: {what}")]
    Io { path: String, what: String },
    #[error("run failed: {0}")]
    Failed(String),
    #[error("gRPC server: {0}")]
    Server(String),
    #[error("config: {0}")]
    Config(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// How long open connections may delay the server's stop at the end of a run.
const SERVER_STOP_GRACE: Duration = Duration::from_secs(5);

/// What a finished run produced.
pub struct RunOutcome {
    /// One JSON record per iteration (0 = the SFT warm start), and one per learner restart.
    pub records: Vec<serde_json::Value>,
    pub run_dir: std::path::PathBuf,
    /// The newest checkpoint written (or resumed from).
    pub last_checkpoint: Option<std::path::PathBuf>,
    /// Learner restarts: (checkpoint iteration, iterations redone, why).
    pub restarts: Vec<(u64, Vec<u64>, String)>,
    /// Set when the run stopped on a signal after a checkpoint (it continues with `--resume`).
    pub stopped: Option<String>,
}

/// The exit status of a coordinator whose run stopped on SIGTERM / SIGINT after writing a
/// checkpoint (EX_TEMPFAIL): the Slurm script requeues the job on it.
pub const EXIT_STOPPED: i32 = 75;

/// Outputs of a run in its folder (what a fresh run must not silently mix with its own).
const OUTPUTS: [&str; 7] = [
    "metrics.jsonl",
    "report.html",
    "tensorboard",
    "trajectories",
    "checkpoints",
    "logs",
    "workers.json",
];

/// Makes `run.dir` ready: a fresh run (`resume` = false) refuses a folder holding another run's
/// outputs unless `overwrite`, which deletes them first.
pub fn prepare_run_dir(cfg: &RunConfig, resume: bool, overwrite: bool) -> Result<(), CoordinatorError> {
    // The expert demonstrations are read here first, so a bad row is refused before any worker
    // starts (workers read the same file again).
    if let Some(f) = &cfg.data.train {
        let rows = airlift_proto::gsm8k::load(f).map_err(|e| CoordinatorError::Config(format!("data.train: {e}")))?;
        if rows.is_empty() {
            return Err(CoordinatorError::Config(format!("data.train: {}: no problems in the file", f.display())));
        }
        tracing::info!(file = %f.display(), rows = rows.len(), "training on expert demonstrations from a file");
    }
    let dir = cfg.run_dir();
    if resume {
        return Ok(());
    }
    let present: Vec<&str> = OUTPUTS
        .iter()
        .copied()
        .filter(|name| {
            let p = dir.join(name);
            if p.is_dir() {
                std::fs::read_dir(&p).map(|mut d| d.next().is_some()).unwrap_or(false)
            } else {
                p.exists()
            }
        })
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    if !overwrite {
        return Err(CoordinatorError::Config(format!(
            "run.dir {} holds another run's outputs ({}): pass --resume to continue that run, or --overwrite to delete them and start afresh (or choose another run.dir)",
            dir.display(),
            present.join(", ")
        )));
    }
    for name in present {
        let p = dir.join(name);
        let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        r.map_err(|e| CoordinatorError::Io {
            path: p.display().to_string(),
            what: format!("cannot delete for --overwrite: {e}"),
        })?;
        tracing::warn!(path = %p.display(), "deleted (--overwrite)");
    }
    Ok(())
}

/// `<run>/coordinator.url`: where this run's coordinator serves (written when it starts).
pub fn url_file(run_dir: &std::path::Path) -> std::path::PathBuf {
    run_dir.join("coordinator.url")
}

/// `<run>/token`: the run token, readable by its owner only.
pub fn token_file(run_dir: &std::path::Path) -> std::path::PathBuf {
    run_dir.join("token")
}

/// The address workers and `status` reach a listener bound at `addr` at: itself, or for an
/// unspecified address (0.0.0.0) `AIRLIFT_ADVERTISE` or this host's name.
pub fn advertised(addr: std::net::SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return format!("http://{addr}");
    }
    let host = std::env::var("AIRLIFT_ADVERTISE").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "127.0.0.1".into())
    });
    format!("http://{host}:{}", addr.port())
}

/// Publishes the coordinator's URL and the run token (mode 0600) in the run folder, so that
/// `coordinator status --run DIR` and job scripts find them.
fn publish(run_dir: &std::path::Path, url: &str, token: Option<&str>) -> Result<(), CoordinatorError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |p: &std::path::Path, e: std::io::Error| CoordinatorError::Io {
        path: p.display().to_string(),
        what: e.to_string(),
    };
    if let Some(t) = token {
        let p = token_file(run_dir);
        let _ = std::fs::remove_file(&p);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| io(&p, e))?;
        f.write_all(t.as_bytes()).map_err(|e| io(&p, e))?;
    }
    // The URL last, through a rename: whoever waits for it finds the token in place.
    let p = url_file(run_dir);
    let tmp = p.with_extension("url.tmp");
    std::fs::write(&tmp, format!("{url}\n")).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| io(&p, e))?;
    Ok(())
}

/// Which checkpoint a run starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// A fresh run.
    No,
    /// The newest valid checkpoint in `run.dir` (invalid newer ones are skipped, with the reason).
    Latest,
    /// This checkpoint folder; an error if it fails its checks.
    Path(std::path::PathBuf),
    /// This checkpoint folder, of a run whose config may also differ in the keys of
    /// [`airlift_proto::config::FORK_MAY_DIFFER`] (`--resume PATH --fork`): a new branch of the
    /// run, e.g. other iteration settings after the same warm start.
    Fork(std::path::PathBuf),
}

/// How [`serve`] starts and who else talks to the run.
pub struct ServeOptions {
    /// The checkpoint to start from ([`choose_checkpoint`]), or none for a fresh run.
    pub resume: Option<state::ResumePoint>,
    /// The local launcher: events it sends (learner processes that exited) and where learner
    /// restarts are requested (enables restarts).
    pub launcher: Option<(mpsc::UnboundedReceiver<Event>, mpsc::UnboundedSender<u32>)>,
    /// An evaluation job instead of training (the learners load `resume`, if any).
    pub eval: Option<eval::EvalPlan>,
    /// Under Slurm (`--requeue`): a lost learner stops the run for a requeue instead of failing it.
    pub requeue: bool,
}

/// Finds and verifies the checkpoint `resume` asks for, telling the user which one it took and
/// why it skipped any other. `Ok(None)` for a fresh run.
pub fn choose_checkpoint(cfg: &RunConfig, resume: &Resume) -> Result<Option<state::ResumePoint>, CoordinatorError> {
    let hash = cfg.resume_hash();
    match resume {
        Resume::No => Ok(None),
        Resume::Path(dir) => {
            let m = ckpt::verify(dir, Some(&hash)).map_err(|e| CoordinatorError::Checkpoint(format!("--resume {}: {e}", dir.display())))?;
            tracing::info!(checkpoint = %dir.display(), iteration = m.iteration, "resuming from the checkpoint given");
            Ok(Some(state::ResumePoint { dir: dir.clone(), manifest: m }))
        }
        Resume::Fork(dir) => {
            let fail = |what: String| CoordinatorError::Checkpoint(format!("--resume {} --fork: {what}", dir.display()));
            let m = ckpt::verify(dir, None).map_err(|e| fail(e.to_string()))?;
            let theirs = RunConfig::from_toml(&m.config_toml).map_err(|e| {
                fail(format!(
                    "{}: the config it was written with does not load: {e}",
                    dir.join(ckpt::MANIFEST).display()
                ))
            })?;
            let changed = cfg.differing_keys(&theirs);
            if cfg.fork_hash() != theirs.fork_hash() {
                let may = |k: &String| {
                    config::RESUME_MAY_DIFFER
                        .iter()
                        .chain(config::FORK_MAY_DIFFER)
                        .any(|m| k == m || k.starts_with(&format!("{m}.")))
                };
                let bad: Vec<&String> = changed.iter().filter(|k| !may(k)).collect();
                return Err(fail(format!(
                    "its run's config differs in {}; a fork may change only {}",
                    bad.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
                    config::FORK_MAY_DIFFER.join(", ")
                )));
            }
            let changed = changed.join(", ");
            tracing::info!(checkpoint = %dir.display(), iteration = m.iteration, changed = %changed, "forking from the checkpoint given");
            eprintln!(
                "forking from {} (iteration {}); changed: {}",
                dir.display(),
                m.iteration,
                if changed.is_empty() { "nothing" } else { &changed }
            );
            Ok(Some(state::ResumePoint { dir: dir.clone(), manifest: m }))
        }
        Resume::Latest => {
            let run_dir = cfg.run_dir();
            let choice = ckpt::newest_valid(&run_dir, Some(&hash));
            for (dir, e) in &choice.skipped {
                tracing::warn!(checkpoint = %dir.display(), "skipping a checkpoint that failed its checks: {e}");
                eprintln!("skipped {}: {e}", dir.display());
            }
            match choice.chosen {
                Some((dir, m)) => {
                    let why = if choice.skipped.is_empty() {
                        "the newest".to_string()
                    } else {
                        format!("the newest valid; {} newer skipped", choice.skipped.len())
                    };
                    tracing::info!(checkpoint = %dir.display(), iteration = m.iteration, "resuming from {why}");
                    eprintln!("resuming from {} (iteration {}, {why})", dir.display(), m.iteration);
                    Ok(Some(state::ResumePoint { dir, manifest: m }))
                }
                None => Err(CoordinatorError::Checkpoint(format!(
                    "--resume: no valid checkpoint in {}",
                    ckpt::root(&run_dir).display()
                ))),
            }
        }
    }
}

/// Serves the run of `cfg` on `listener` until it is done, fails, or `shutdown` resolves (with
/// the reason to stop). Writes the effective config to `<run>/config.toml` first.
pub async fn serve(
    cfg: RunConfig,
    token: Option<String>,
    listener: TcpListener,
    shutdown: impl Future<Output = String> + Send + 'static,
    opts: ServeOptions,
) -> Result<RunOutcome, CoordinatorError> {
    let run_dir = cfg.run_dir();
    let io = |what: std::io::Error| CoordinatorError::Io {
        path: run_dir.display().to_string(),
        what: what.to_string(),
    };
    let resume = opts.resume;
    std::fs::create_dir_all(&run_dir).map_err(io)?;
    std::fs::write(run_dir.join("config.toml"), cfg.to_toml()).map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let url = airlift_proto::tls::scheme(&advertised(addr));
    publish(&run_dir, &url, token.as_deref())?;
    if resume.is_none() {
        let _ = std::fs::remove_file(run_dir.join("metrics.jsonl"));
    }
    let (tx, mut rx) = mpsc::channel::<Event>(256);
    let svc = server::service(tx.clone(), Guard::new(token));
    // Bounded: a connection cap and a deadline for a first byte (conn.rs); HTTP/2 keepalive
    // closes connections whose peer stopped answering.
    let incoming = airlift_proto::conn::incoming(listener, airlift_proto::conn::cap());
    // TLS when AIRLIFT_TLS names the job's certificates (proto/src/tls.rs).
    let mut builder = airlift_proto::tls::server().map_err(CoordinatorError::Server)?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        builder
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = server_stopped.await;
            })
            .await
    });
    // Heartbeat checks run at the heartbeat period.
    let tick_every = cfg.workers.heartbeat_ms.duration();
    let ticker = tx.clone();
    tokio::spawn(async move {
        let mut t = tokio::time::interval(tick_every);
        loop {
            t.tick().await;
            if ticker.send(Event::Tick).await.is_err() {
                return;
            }
        }
    });
    // SIGTERM / SIGINT: stop at the next safe point with a checkpoint; a second one at once.
    let signals = tx.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        loop {
            let reason = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if signals.send(Event::Drain { reason: reason.to_string() }).await.is_err() {
                return;
            }
        }
    });
    let stopper = tx.clone();
    tokio::spawn(async move {
        let reason = shutdown.await;
        let _ = stopper.send(Event::Stop { reason }).await;
    });
    let mut state = RunState::new(cfg, run_dir.clone());
    // File writes and slow checks run on the executor's thread, in the order decided.
    let (effects, executor) = effects::Executor::new(run_dir.clone()).spawn(tx.clone());
    let evaluating = opts.eval.is_some();
    match (opts.eval, resume) {
        (Some(plan), point) => state.evaluate(plan, point),
        (None, Some(point)) => {
            state.load_records(effects::read_records(&run_dir));
            state.resume_from(point);
        }
        (None, None) => {}
    }
    for e in state.take_effects() {
        let _ = effects.send(e);
    }
    if opts.requeue && !evaluating {
        state.enable_requeue();
    }
    if let Some((mut events, respawn)) = opts.launcher {
        // An evaluation's learners are not restarted: a lost one ends the job.
        if !evaluating {
            state.enable_restarts(respawn);
        }
        let fwd = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if fwd.send(ev).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    tracing::info!(run_dir = %run_dir.display(), %url, "coordinator up");
    eprintln!("coordinator at {url}; status: coordinator status --run {}", run_dir.display());
    while let Some(ev) = rx.recv().await {
        for e in state.handle(ev) {
            let _ = effects.send(e);
        }
        if state.finished() {
            break;
        }
    }
    // The last records (and a prune) are written before the run returns; the executor's events
    // have no one to go to now.
    rx.close();
    drop(effects);
    if let Err(e) = executor.await {
        tracing::error!(error = %e, "the effect executor stopped abnormally");
    }
    // Close the workers' streams (their shutdown messages are already queued), give them a
    // moment to drain, then stop the server; a worker that hangs on cannot keep us up.
    state.close_streams();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_server.send(());
    match tokio::time::timeout(SERVER_STOP_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(CoordinatorError::Server(e.to_string())),
        Ok(Err(e)) => return Err(CoordinatorError::Server(e.to_string())),
        Err(_) => tracing::warn!("gRPC server did not stop within {} s; leaving it", SERVER_STOP_GRACE.as_secs()),
    }
    match state.phase {
        Phase::Done => Ok(RunOutcome {
            records: state.records,
            run_dir,
            last_checkpoint: state.last_checkpoint,
            restarts: state.restarts,
            stopped: None,
        }),
        Phase::Stopped(why) => Ok(RunOutcome {
            records: state.records,
            run_dir,
            last_checkpoint: state.last_checkpoint,
            restarts: state.restarts,
            stopped: Some(why),
        }),
        Phase::Failed(why) => Err(CoordinatorError::Failed(why)),
        other => Err(CoordinatorError::Failed(format!("ended in phase {}", other.name()))),
    }
}
