//! `bench-coordinator` (`make bench-coordinator`): how far one coordinator goes.
//!
//! Starts the real `coordinator` binary on loopback for each worker count asked for, and drives
//! it with light simulated workers in this process: every worker is its own gRPC connection that
//! registers, attaches, heartbeats, and answers its tasks after a fixed delay (rollout workers
//! `--task-ms`, learners `--learn-ms`); no tensors, no Flight. The run is a real training run
//! of the coordinator's state machine (no warm starts, no checkpoints, no held-out evaluation),
//! so scheduling, leases, loss detection, records and shutdown all run as in a job.
//!
//! Printed per worker count: the register storm (first connect to the last learner's
//! rendezvous), task dispatch latency (a rollout worker sends its report → it holds its next task
//! of the same iteration received, i.e. with work queued), the fan-out at each iteration's start
//! (the last learner report sent → every rollout worker holding a task), tasks and
//! events handled per second, the coordinator's peak RSS and open files, and workers declared
//! lost (there should be none: nobody stops heartbeating).

use airlift_proto::auth::Stamp;
use airlift_proto::pb::{self, coordinator_client::CoordinatorClient, coordinator_message::Kind as Msg};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = CoordinatorClient<InterceptedService<Channel, Stamp>>;

#[derive(Debug, Parser)]
#[command(name = "bench-coordinator")]
struct Args {
    /// Rollout worker counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    workers: Vec<u32>,
    /// Learners (the ring is not formed; they answer their tasks after --learn-ms).
    #[arg(long, default_value_t = 64)]
    learners: u32,
    /// Iterations per run.
    #[arg(long, default_value_t = 3)]
    iterations: u64,
    /// Rollout tasks per rollout worker and iteration (one prompt each).
    #[arg(long, default_value_t = 2)]
    tasks_per_worker: u32,
    /// How long a simulated rollout task takes (real ones take seconds to minutes).
    #[arg(long, default_value_t = 1000)]
    task_ms: u64,
    /// Each rollout task's time is drawn uniformly from task-ms x (1 ± jitter) (seeded per
    /// worker): generation lengths vary, so reports do not all arrive at once. 0: all equal
    /// (every worker reports in the same millisecond, the worst case).
    #[arg(long, default_value_t = 0.5)]
    jitter: f64,
    /// How long a simulated learner task takes.
    #[arg(long, default_value_t = 200)]
    learn_ms: u64,
    /// workers.heartbeat_ms of the runs.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// workers.lost_after_ms of the runs (the default's 10 s).
    #[arg(long, default_value_t = 10_000)]
    lost_after_ms: u64,
    /// The coordinator binary (default: `coordinator` next to this one).
    #[arg(long)]
    coordinator: Option<PathBuf>,
    /// Run folders and coordinator logs go under here (deleted first).
    #[arg(long, default_value = "runs/bench-coordinator")]
    out: PathBuf,
}

/// What the simulated workers saw, shared between them.
#[derive(Default)]
struct Seen {
    dispatch_ms: Vec<f64>,
    /// Report calls, sent → acknowledged (ms).
    report_ms: Vec<f64>,
    /// (iteration, when a rollout worker received its first task of it).
    first_task: Vec<(u64, Instant)>,
    /// (iteration, when a learner sent its report of it).
    learner_acks: Vec<(u64, Instant)>,
    rendezvous: Vec<Instant>,
    attached: Vec<Instant>,
    shutdowns: Vec<String>,
    errors: Vec<String>,
}

#[derive(Default)]
struct Counters {
    /// Messages and calls the coordinator had to handle (registers, attaches, heartbeats, reports).
    events: AtomicU64,
    rollout_tasks: AtomicU64,
    learner_tasks: AtomicU64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU seconds (user + system) process `pid` has used, from /proc.
fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state: utime is the 12th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// The process's resident set (kB) and open files, from /proc.
fn proc_usage(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

fn config(args: &Args, workers: u32, dir: &Path) -> String {
    // One prompt per task; the prompts split evenly over the learners' shards.
    let l = args.learners;
    let prompts = (workers * args.tasks_per_worker).div_ceil(l) * l;
    format!(
        r#"# Written by bench-coordinator: simulated workers, no model is loaded.
[run]
name = "bench-coordinator"
dir = "{dir}"
iterations = {it}
seed = 0
max_staleness = 0

[workers]
rollout = {workers}
learner = {l}
device = "cpu"
heartbeat_ms = {hb}
lost_after_ms = {lost}
register_timeout_ms = 300000

[model]
policy = "{dir}/no-model"

[data]
prompts_per_iteration = {prompts}
samples_per_prompt = 4
prompts_per_task = 1
eval_prompts = 0

[reward]
warm_start_steps = 0

[sft]
steps = 0

[checkpoint]
every = 0
at_end = false
"#,
        dir = dir.display(),
        it = args.iterations,
        hb = args.heartbeat_ms,
        lost = args.lost_after_ms,
    )
}

async fn connect(url: &str, token: &str) -> Result<Client, String> {
    let endpoint = airlift_proto::tls::endpoint(url)?;
    let start = Instant::now();
    loop {
        match endpoint.connect().await {
            Ok(ch) => return Ok(CoordinatorClient::with_interceptor(ch, Stamp::new(Some(token.to_string())))),
            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("connect {url}: {e}")),
        }
    }
}

/// One simulated worker, from connect to its shutdown message.
async fn worker(role: pb::Role, rank: u32, url: String, token: String, args: Arc<Args>, seen: Arc<Mutex<Seen>>, n: Arc<Counters>) {
    let r = async {
        let mut c = connect(&url, &token).await?;
        let req = pb::RegisterRequest {
            role: role as i32,
            host: format!("sim-{}-{rank}", role.as_str_name().to_lowercase()),
            device: "cpu".into(),
            flight_addr: if role == pb::Role::Learner {
                format!("127.0.0.1:{}", 20000 + rank)
            } else {
                String::new()
            },
            collective_addr: if role == pb::Role::Learner {
                format!("127.0.0.1:{}", 30000 + rank)
            } else {
                String::new()
            },
            rank,
            pid: std::process::id(),
            node: "bench".into(),
        };
        let id = c.register(req).await.map_err(|e| format!("register: {}", e.message()))?.into_inner().worker_id;
        n.events.fetch_add(1, Ordering::Relaxed);
        let (up, up_rx) = tokio::sync::mpsc::channel::<pb::WorkerMessage>(16);
        let beat = move || pb::WorkerMessage {
            worker_id: id,
            kind: Some(pb::worker_message::Kind::Heartbeat(pb::Heartbeat {})),
        };
        up.send(beat()).await.map_err(|_| "stream closed".to_string())?;
        let mut down = c
            .attach(tokio_stream::wrappers::ReceiverStream::new(up_rx))
            .await
            .map_err(|e| format!("attach: {}", e.message()))?
            .into_inner();
        n.events.fetch_add(2, Ordering::Relaxed);
        seen.lock().unwrap().attached.push(Instant::now());
        let hb = Duration::from_millis(args.heartbeat_ms);
        let (hb_up, hb_n) = (up.clone(), n.clone());
        let beats = tokio::spawn(async move {
            let mut t = tokio::time::interval(hb);
            t.tick().await;
            loop {
                t.tick().await;
                if hb_up.send(beat()).await.is_err() {
                    return;
                }
                hb_n.events.fetch_add(1, Ordering::Relaxed);
            }
        });
        // (iteration, when the report was sent) of this worker's last rollout task.
        let mut last: Option<(u64, Instant)> = None;
        let mut first_of: Option<u64> = None;
        // A small per-worker generator (splitmix64) for the task times.
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ ((rank as u64) << 32 | role as u64);
        let mut uniform = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let outcome = loop {
            let m = match down.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break Err("the coordinator closed the stream without a shutdown".to_string()),
                Err(e) => break Err(format!("stream: {}", e.message())),
            };
            let (task_id, iteration, delay, metrics) = match m.kind {
                Some(Msg::Rollout(t)) => {
                    let now = Instant::now();
                    {
                        let mut s = seen.lock().unwrap();
                        if let Some((it, at)) = last.filter(|(it, _)| *it == t.iteration) {
                            let _ = it;
                            s.dispatch_ms.push((now - at).as_secs_f64() * 1e3);
                        }
                        if first_of != Some(t.iteration) {
                            s.first_task.push((t.iteration, now));
                        }
                    }
                    first_of = Some(t.iteration);
                    let rows = t.prompt_ids.len() as u64 * t.samples_per_prompt as u64;
                    let metrics = serde_json::json!({ "rows": rows, "tokens": rows * 100, "correct": 0, "generation_ms": args.task_ms });
                    let ms = (args.task_ms as f64 * (1.0 + args.jitter * (2.0 * uniform() - 1.0))).max(0.0) as u64;
                    (t.task_id, t.iteration, ms, metrics)
                }
                Some(Msg::Learner(t)) => (t.task_id, t.iteration, args.learn_ms, serde_json::json!({ "disc_loss": 0.69 })),
                Some(Msg::Rendezvous(_)) => {
                    seen.lock().unwrap().rendezvous.push(Instant::now());
                    continue;
                }
                Some(Msg::Shutdown(s)) => break Ok(s.reason),
                None => continue,
            };
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let rep = pb::TaskReport {
                worker_id: id,
                task_id,
                ok: true,
                error: String::new(),
                rows: metrics["rows"].as_u64().unwrap_or(0),
                metrics_json: metrics.to_string(),
                result: None,
            };
            // Dispatch and fan-out count from the report's sending: the coordinator answers the
            // report and hands out the next task in the same turn of its loop, so the task may
            // arrive before the answer.
            let sent = Instant::now();
            if let Err(e) = c.report_task(rep).await {
                break Err(format!("report: {}", e.message()));
            }
            n.events.fetch_add(1, Ordering::Relaxed);
            seen.lock().unwrap().report_ms.push(sent.elapsed().as_secs_f64() * 1e3);
            if role == pb::Role::Rollout {
                n.rollout_tasks.fetch_add(1, Ordering::Relaxed);
                last = Some((iteration, sent));
            } else {
                n.learner_tasks.fetch_add(1, Ordering::Relaxed);
                seen.lock().unwrap().learner_acks.push((iteration, sent));
            }
        };
        beats.abort();
        outcome
    }
    .await;
    let mut s = seen.lock().unwrap();
    match r {
        Ok(reason) => s.shutdowns.push(reason),
        Err(e) => s.errors.push(format!("{} {rank}: {e}", role.as_str_name())),
    }
}

struct Row {
    workers: u32,
    tasks: u64,
    storm_s: f64,
    p50: f64,
    p99: f64,
    max: f64,
    fanout_ms: f64,
    report_p99: f64,
    tasks_per_s: f64,
    events_per_s: f64,
    rss_mb: f64,
    cpu_s: f64,
    fds: u64,
    lost: usize,
    wall_s: f64,
    ok: bool,
}

async fn one(args: Arc<Args>, coordinator: &Path, workers: u32) -> Result<Row, String> {
    let dir = std::env::current_dir()
        .map_err(|e| e.to_string())?
        .join(&args.out)
        .join(format!("{workers}-workers"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config(&args, workers, &dir.join("run"))).map_err(|e| e.to_string())?;
    let token = format!("bench-{:x}", std::process::id() as u64 * 7919 + workers as u64);
    let log = dir.join("coordinator.log");
    let logf = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = tokio::process::Command::new(coordinator)
        .args(["--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env("AIRLIFT_TOKEN", &token)
        .stdout(logf.try_clone().map_err(|e| e.to_string())?)
        .stderr(logf)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", coordinator.display()))?;
    let pid = child.id().unwrap_or(0);
    let url_file = dir.join("run").join("coordinator.url");
    let t0 = Instant::now();
    let url = loop {
        if let Ok(u) = std::fs::read_to_string(&url_file) {
            break u.trim().to_string();
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("the coordinator exited ({st}) before serving; see {}", log.display()));
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(format!("no {} after 30 s; see {}", url_file.display(), log.display()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The coordinator's resident set and open files, sampled every 100 ms.
    let peak = Arc::new(Mutex::new((0u64, 0u64, 0f64)));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some((rss, fds)) = proc_usage(pid) {
                    let mut p = peak.lock().unwrap();
                    *p = (p.0.max(rss), p.1.max(fds), cpu_s(pid).unwrap_or(p.2));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let n = Arc::new(Counters::default());
    let start = Instant::now();
    let roles = (0..args.learners)
        .map(|r| (pb::Role::Learner, r))
        .chain((0..workers).map(|r| (pb::Role::Rollout, r)));
    let handles: Vec<_> = roles
        .map(|(role, r)| tokio::spawn(worker(role, r, url.clone(), token.clone(), args.clone(), seen.clone(), n.clone())))
        .collect();
    // The run's own bound: every iteration's tasks at one per worker at a time, with room.
    let budget = Duration::from_secs(120 + args.iterations * (args.tasks_per_worker as u64 * args.task_ms + args.learn_ms) / 100);
    let all = futures::future::join_all(handles);
    let timed_out = tokio::time::timeout(budget, all).await.is_err();
    let wall = start.elapsed().as_secs_f64();
    let status = match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(Ok(s)) => s.success(),
        _ => {
            let _ = child.kill().await;
            false
        }
    };
    sampler.abort();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lost = text.lines().filter(|l| l.contains("worker lost")).count();
    let s = seen.lock().unwrap();
    for e in s.errors.iter().take(5) {
        eprintln!("  {workers} workers: {e}");
    }
    let mut d = s.dispatch_ms.clone();
    d.sort_by(|a, b| a.total_cmp(b));
    // Fan-out: for iterations after the first, the last learner ack of the iteration before →
    // the last rollout worker's first task of this one.
    let mut fanout: f64 = 0.0;
    for it in 2..=args.iterations {
        let acked = s.learner_acks.iter().filter(|(i, _)| *i == it - 1).map(|(_, t)| *t).max();
        let got = s.first_task.iter().filter(|(i, _)| *i == it).map(|(_, t)| *t).max();
        if let (Some(a), Some(g)) = (acked, got) {
            fanout = fanout.max(g.saturating_duration_since(a).as_secs_f64() * 1e3);
        }
    }
    let mut rep = s.report_ms.clone();
    rep.sort_by(|a, b| a.total_cmp(b));
    let storm = s
        .rendezvous
        .iter()
        .chain(s.attached.iter())
        .max()
        .map(|t| (*t - start).as_secs_f64())
        .unwrap_or(f64::NAN);
    let tasks = n.rollout_tasks.load(Ordering::Relaxed) + n.learner_tasks.load(Ordering::Relaxed);
    let complete = s.shutdowns.iter().filter(|r| r.contains("run complete")).count();
    let want_tasks = args.iterations * (workers * args.tasks_per_worker).div_ceil(args.learners) as u64 * args.learners as u64;
    let ok = !timed_out && status && complete == (workers + args.learners) as usize && n.rollout_tasks.load(Ordering::Relaxed) == want_tasks;
    if !ok {
        eprintln!(
            "  {workers} workers: timed out {timed_out}, coordinator exit ok {status}, {complete} of {} workers told `run complete`, {} of {want_tasks} rollout tasks; log {}",
            workers + args.learners,
            n.rollout_tasks.load(Ordering::Relaxed),
            log.display()
        );
    }
    let (rss, fds, cpu) = *peak.lock().unwrap();
    Ok(Row {
        workers,
        tasks,
        storm_s: storm,
        p50: percentile(&d, 50.0),
        p99: percentile(&d, 99.0),
        max: d.last().copied().unwrap_or(f64::NAN),
        fanout_ms: fanout,
        report_p99: percentile(&rep, 99.0),
        tasks_per_s: tasks as f64 / wall,
        events_per_s: n.events.load(Ordering::Relaxed) as f64 / wall,
        rss_mb: rss as f64 / 1024.0,
        cpu_s: cpu,
        fds,
        lost,
        wall_s: wall,
        ok,
    })
}

fn main() -> Result<(), String> {
    let args = Arc::new(Args::parse());
    let nofile = airlift_proto::conn::raise_nofile() as u64;
    let coordinator = match &args.coordinator {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("coordinator"),
    };
    if !coordinator.exists() {
        return Err(format!("{}: no coordinator binary (cargo build --release)", coordinator.display()));
    }
    let need = *args.workers.iter().max().unwrap_or(&0) as u64 + args.learners as u64 + 64;
    if nofile < need {
        return Err(format!(
            "the open-file limit is {nofile}, fewer than the {need} connections and files this needs (ulimit -n)"
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!(
        "bench-coordinator: {} learners, {} iterations, {} one-prompt rollout tasks per worker and iteration ({} ms ± {:.0}% each), learner tasks {} ms, heartbeat {} ms, lost after {} ms",
        args.learners, args.iterations, args.tasks_per_worker, args.task_ms, args.jitter * 100.0, args.learn_ms, args.heartbeat_ms, args.lost_after_ms
    );
    println!(
        "{:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8} {:>9} {:>8} {:>7} {:>6} {:>5} {:>7} {:>4}",
        "workers",
        "tasks",
        "storm s",
        "disp p50",
        "disp p99",
        "disp max",
        "fan-out ms",
        "report p99",
        "tasks/s",
        "events/s",
        "RSS MB",
        "CPU s",
        "files",
        "lost",
        "wall s",
        "ok"
    );
    let mut failed = false;
    for &w in &args.workers {
        let row = rt.block_on(one(args.clone(), &coordinator, w))?;
        println!(
            "{:>8} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.1} {:>10.2} {:>8.0} {:>9.0} {:>8.1} {:>7.2} {:>6} {:>5} {:>7.1} {:>4}",
            row.workers,
            row.tasks,
            row.storm_s,
            row.p50,
            row.p99,
            row.max,
            row.fanout_ms,
            row.report_p99,
            row.tasks_per_s,
            row.events_per_s,
            row.rss_mb,
            row.cpu_s,
            row.fds,
            row.lost,
            row.wall_s,
            if row.ok { "yes" } else { "NO" }
        );
        failed |= !row.ok || row.lost > 0;
    }
    println!("dispatch: a rollout worker sends its report -> it receives its next task of the same iteration (ms, all such gaps); fan-out: an iteration's last learner report sent -> the last rollout worker's first task of the next (ms, worst iteration); report: a report call sent -> answered (ms); RSS, CPU s, files: the coordinator process's peak resident set, CPU time used (user + system) and open files; storm: start -> every worker attached and every learner's rendezvous received (s)");
    if failed {
        return Err("a run did not complete cleanly (see above)".into());
    }
    Ok(())
}
