//! The run state machine, changed only by [`RunState::handle`] inside the coordinator's one
//! event loop. It never touches tensors and never blocks: it decides, and sends messages down
//! the workers' attached streams.
//!
//! ```text
//!  WaitingForWorkers ──all learners attached──▶ (rendezvous sent, naming the checkpoint to
//!        │   load when resuming; CUDA runs: rank 0's rendezvous first, the others' once rank 0
//!        │   sent its NCCL id)
//!        ├─ fresh run with warm starts ─▶ WarmStart: SFT tasks, then reward warm-start tasks ──┐
//!        └─ resume, or no warm starts ──────────────────────────────────────────────────────┴─▶ Running
//!  Running: iteration i's rollout tasks are queued once i ≤ learned + 1 + max_staleness;
//!           learning of i starts when its rollouts are done, i − 1 is learned and no
//!           checkpoint is being written; then (data.eval_prompts > 0) an evaluation task on
//!           rank 0; a checkpoint follows iterations that are multiples of
//!           checkpoint.every (and the last one): one task per rank, then the manifest;
//!           after the last iteration (and its checkpoint) ─▶ Done (workers shut down)
//!  learner lost / learner task failed, `--local` with restarts left and a valid checkpoint:
//!           learners stopped and started again ─▶ WaitingForWorkers (resume from it)
//!  otherwise, and rollout tasks that failed too often ──▶ Failed
//! ```
//!
//! The coordinator owns the data frontier: which problems each warm-start step and each
//! iteration uses is decided here and sent in the tasks.

use crate::eval::EvalPlan;
use crate::progress::Console;
use crate::tensorboard::EventWriter;
use airlift_proto::checkpoint::{self as ckpt, DataFrontier, Manifest};
use airlift_proto::config::RunConfig;
use airlift_proto::gsm8k::ProblemSource;
use airlift_proto::pb::{self, coordinator_message::Kind as Msg};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;
// tokio's clock: the same as std's in a run, and pausable in the scheduler tests (coordinator/tests/scheduler.rs).
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

/// A rollout task is retried this many times before the run fails (a bad task, not a lost
/// worker, would otherwise loop forever).
const MAX_ATTEMPTS: u32 = 3;

/// The warm starts' problems are train-split ids far from the RL prompts (which count up from
/// 0): SFT from here ...
const SFT_FIRST_ID: u64 = 50_000;
/// ... and the reward warm start from here.
const REWARD_WARM_FIRST_ID: u64 = 70_000;

/// A checkpoint being written: one task per learner rank, then the manifest.
#[derive(Debug)]
struct PendingCheckpoint {
    iteration: u64,
    dir: PathBuf,
    tasks: Vec<u64>,
    reports: BTreeMap<u32, serde_json::Value>,
    policy_version: u64,
    data: DataFrontier,
    started: Instant,
}

/// The iteration number of an evaluation job's tasks and rows.
const EVAL_ITERATION: u64 = 1;

/// Where a run restarts from: a verified checkpoint.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    pub dir: PathBuf,
    pub manifest: Manifest,
}
/// Where the run is.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    WaitingForWorkers,
    WarmStart,
    Running,
    Done,
    /// Stopped on request (SIGTERM / SIGINT) after a checkpoint: resume continues the run.
    Stopped(String),
    Failed(String),
}

impl Phase {
    /// A short name for status output.
    pub fn name(&self) -> String {
        match self {
            Phase::WaitingForWorkers => "waiting-for-workers".into(),
            Phase::WarmStart => "warm-start".into(),
            Phase::Running => "running".into(),
            Phase::Done => "done".into(),
            Phase::Stopped(why) => format!("stopped: {why}"),
            Phase::Failed(why) => format!("failed: {why}"),
        }
    }
}

/// Outbound half of a worker's attached stream.
pub type Outbox = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

/// A worker's lifecycle: registered → idle (its stream attached) ⇄ busy (holding one task) →
/// lost (declared gone; never comes back: a returning process registers again as a new worker).
#[derive(Debug, Clone, PartialEq)]
enum WorkerState {
    Registered,
    Idle,
    Busy { task: u64 },
    Lost { why: String },
}

#[derive(Debug)]
struct Worker {
    role: pb::Role,
    host: String,
    flight_addr: String,
    collective_addr: String,
    asked_rank: u32,
    rank: Option<u32>,
    outbox: Option<Outbox>,
    last_seen: Instant,
    state: WorkerState,
    policy_version: u64,
}

impl Worker {
    /// Not declared lost.
    fn live(&self) -> bool {
        !matches!(self.state, WorkerState::Lost { .. })
    }

    /// A live worker of `role`.
    fn live_as(&self, role: pb::Role) -> bool {
        self.role == role && self.live()
    }

    /// The task it holds.
    fn task(&self) -> Option<u64> {
        match self.state {
            WorkerState::Busy { task } => Some(task),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum TaskKind {
    Rollout(pb::RolloutTask),
    Learner(pb::LearnerTask),
}

/// A task's lifecycle: queued (made, waiting for a worker) → running on one worker → done; a
/// running task goes back to queued when its worker is lost, its lease runs out, or it failed
/// with attempts left. A learner restart ends every unfinished task (their reports are ignored).
#[derive(Debug, Clone, Copy, PartialEq)]
enum TaskState {
    Queued,
    Running { worker: u64, since: Instant },
    Done,
}

#[derive(Debug)]
struct Task {
    kind: TaskKind,
    iteration: u64,
    attempts: u32,
    state: TaskState,
}

impl Task {
    fn done(&self) -> bool {
        self.state == TaskState::Done
    }

    fn worker(&self) -> Option<u64> {
        match self.state {
            TaskState::Running { worker, .. } => Some(worker),
            _ => None,
        }
    }
}

/// Per-iteration bookkeeping.
#[derive(Debug, Default)]
struct IterationState {
    rollout_tasks: Vec<u64>,
    /// How many of `rollout_tasks` are done (learning starts when all are).
    rollouts_done: usize,
    /// Prompt ids by learner rank.
    shards: Vec<Vec<u64>>,
    policy_version: u64,
    rollout_metrics: Vec<serde_json::Value>,
    learner_tasks: Vec<u64>,
    learner_metrics: BTreeMap<u32, serde_json::Value>,
    queued_at: Option<Instant>,
    learn_started: Option<Instant>,
    /// RL prompts `..prompt_end` are used once this iteration is learned.
    prompt_end: u64,
    /// The held-out evaluation after the learner tasks (rank 0), when `data.eval_prompts > 0`.
    eval_task: Option<u64>,
}

/// Events of the coordinator's loop.
pub enum Event {
    Register {
        req: pb::RegisterRequest,
        reply: tokio::sync::oneshot::Sender<Result<pb::RegisterResponse, Status>>,
    },
    Attach {
        worker_id: u64,
        outbox: Outbox,
    },
    Message {
        worker_id: u64,
        msg: pb::WorkerMessage,
    },
    Detached {
        worker_id: u64,
    },
    Report {
        report: pb::TaskReport,
        reply: tokio::sync::oneshot::Sender<Result<pb::TaskAck, Status>>,
    },
    Status {
        reply: tokio::sync::oneshot::Sender<pb::StatusResponse>,
    },
    Tick,
    Stop {
        reason: String,
    },
    /// Stop at the next safe point (after the iteration being learned, with a checkpoint);
    /// a second one stops at once.
    Drain {
        reason: String,
    },
    /// The local launcher saw learner process `rank` of spawn `generation` exit.
    LearnerExited {
        rank: u32,
        generation: u32,
        status: String,
    },
}

/// The whole run state.
pub struct RunState {
    cfg: RunConfig,
    config_toml: String,
    run_dir: PathBuf,
    pub phase: Phase,
    workers: BTreeMap<u64, Worker>,
    /// Idle rollout workers, lowest id first (the dispatch order).
    idle: BTreeSet<u64>,
    next_worker: u64,
    tasks: HashMap<u64, Task>,
    queue: VecDeque<u64>,
    next_task: u64,
    iterations: BTreeMap<u64, IterationState>,
    /// Iterations whose rollouts have been queued / learned.
    queued_upto: u64,
    learned_upto: u64,
    learning: Option<u64>,
    policy_version: u64,
    prompt_cursor: u64,
    /// RL prompts `..prompts_trained` have been trained on.
    prompts_trained: u64,
    rendezvous_sent: bool,
    /// CUDA runs: rank 0 has its rendezvous and the others wait for its NCCL unique id.
    awaiting_nccl_id: bool,
    /// The warm-start tasks running now (SFT, then reward), and their metrics by rank.
    warm_tasks: Vec<u64>,
    warm_kind: pb::LearnerTaskKind,
    warm_metrics: BTreeMap<u32, serde_json::Value>,
    /// The checkpoint the learners load at their rendezvous (resume and restarts).
    resume: Option<ResumePoint>,
    checkpointing: Option<PendingCheckpoint>,
    /// The newest checkpoint whose manifest is in place.
    pub last_checkpoint: Option<PathBuf>,
    config_hash: String,
    /// `--local` runs: asks the launcher to start learner processes of a new generation.
    respawn: Option<mpsc::UnboundedSender<u32>>,
    learner_generation: u32,
    /// Restarts so far: (checkpoint iteration, iterations redone, why).
    pub restarts: Vec<(u64, Vec<u64>, String)>,
    /// Why the run is stopping at the next safe point (SIGTERM / SIGINT), if it is.
    draining: Option<String>,
    /// The iteration of the newest checkpoint with its manifest in place.
    checkpointed: Option<u64>,
    /// One JSON record per finished iteration (also appended to `<run>/metrics.jsonl`).
    pub records: Vec<serde_json::Value>,
    started: Instant,
    /// Set when this is an evaluation job instead of a training run.
    eval: Option<EvalJob>,
    /// What the run is doing, on the console (bar or plain lines).
    console: Console,
    /// `<run>/tensorboard/`'s event file (training runs; opened at the first record or resume).
    tensorboard: Option<EventWriter>,
}

/// An evaluation job's progress: rollout tasks (with the learner rank their rows go to), the
/// score tasks they became, and the report task.
struct EvalJob {
    plan: EvalPlan,
    queued: bool,
    rollout_rank: HashMap<u64, usize>,
    /// Score tasks the job will have: one per rollout task, or per chunk of fixed traces.
    expected_scores: usize,
    score_tasks: Vec<u64>,
    report_task: Option<u64>,
    scored: Vec<serde_json::Value>,
}

impl RunState {
    /// A fresh run of `cfg` writing into `run_dir`.
    pub fn new(cfg: RunConfig, run_dir: PathBuf) -> Self {
        RunState {
            config_hash: cfg.resume_hash(),
            config_toml: cfg.to_toml(),
            cfg,
            run_dir,
            phase: Phase::WaitingForWorkers,
            workers: BTreeMap::new(),
            idle: BTreeSet::new(),
            next_worker: 1,
            tasks: HashMap::new(),
            queue: VecDeque::new(),
            next_task: 1,
            iterations: BTreeMap::new(),
            queued_upto: 0,
            learned_upto: 0,
            learning: None,
            policy_version: 0,
            prompt_cursor: 0,
            prompts_trained: 0,
            rendezvous_sent: false,
            awaiting_nccl_id: false,
            warm_tasks: Vec::new(),
            warm_kind: pb::LearnerTaskKind::Unspecified,
            warm_metrics: BTreeMap::new(),
            resume: None,
            checkpointing: None,
            last_checkpoint: None,
            respawn: None,
            learner_generation: 0,
            restarts: Vec::new(),
            draining: None,
            checkpointed: None,
            records: Vec::new(),
            started: Instant::now(),
            eval: None,
            console: Console::stderr(),
            tensorboard: None,
        }
    }

    /// Makes this an evaluation job: the learners load `point` (none: the configured models),
    /// then the problems of `plan` are sampled, scored and reported instead of training.
    pub fn evaluate(&mut self, plan: EvalPlan, point: Option<ResumePoint>) {
        self.policy_version = point.as_ref().map_or(0, |p| p.manifest.policy_version);
        self.resume = point;
        self.eval = Some(EvalJob {
            plan,
            queued: false,
            rollout_rank: HashMap::new(),
            expected_scores: 0,
            score_tasks: Vec::new(),
            report_task: None,
            scored: Vec::new(),
        });
    }

    /// `--local` runs: learner losses restart the learners (through `respawn`, which receives
    /// the new generation number) from the newest checkpoint, up to `run.max_restarts` times.
    pub fn enable_restarts(&mut self, respawn: mpsc::UnboundedSender<u32>) {
        self.respawn = Some(respawn);
    }

    /// Continues the run from the verified checkpoint `point`: the learners load it at their
    /// rendezvous, the iterations after it run again, and their outputs from an earlier
    /// attempt (metrics records, trajectory files) are removed so nothing appears twice.
    pub fn resume_from(&mut self, point: ResumePoint) {
        let m = &point.manifest;
        self.learned_upto = m.iteration;
        self.queued_upto = m.iteration;
        self.policy_version = m.policy_version;
        self.prompt_cursor = m.data.prompts_trained;
        self.prompts_trained = m.data.prompts_trained;
        self.next_task = self.next_task.max(m.data.next_task_id);
        self.iterations.clear();
        self.learning = None;
        self.checkpointing = None;
        self.last_checkpoint = Some(point.dir.clone());
        self.checkpointed = Some(m.iteration);
        // Records: keep those of iterations the checkpoint covers (read back from the file on a
        // fresh coordinator), and rewrite the file with exactly those.
        let path = self.run_dir.join("metrics.jsonl");
        if self.records.is_empty() {
            self.records = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .collect();
        }
        self.records
            .retain(|r| r["iteration"].as_u64().is_some_and(|i| i <= m.iteration) || r.get("restart").is_some());
        let text: String = self.records.iter().map(|r| format!("{r}\n")).collect();
        if let Err(e) = std::fs::write(&path, text) {
            tracing::error!(path = %path.display(), error = %e, "cannot rewrite metrics");
        }
        self.rewrite_tensorboard();
        let traj = self.run_dir.join("trajectories");
        let mut removed = 0;
        for e in std::fs::read_dir(&traj).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let it = name.strip_prefix("iter-").and_then(|r| r.get(..6)).and_then(|n| n.parse::<u64>().ok());
            if it.is_some_and(|i| i > m.iteration) && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(
                files = removed,
                after_iteration = m.iteration,
                "removed trajectory files of iterations the checkpoint does not cover (they are run again)"
            );
        }
        self.resume = Some(point);
    }

    /// Drops every worker's outbound stream (after the shutdown messages were queued), so the
    /// server can stop.
    pub fn close_streams(&mut self) {
        for w in self.workers.values_mut() {
            w.outbox = None;
        }
    }

    /// Whether the run has ended (done or failed).
    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Stopped(_) | Phase::Failed(_))
    }

    /// Applies one event.
    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::Register { req, reply } => {
                let r = self.register(req);
                let _ = reply.send(r);
            }
            Event::Attach { worker_id, outbox } => {
                match self.workers.get_mut(&worker_id) {
                    Some(w) if w.live() => {
                        w.outbox = Some(outbox);
                        w.last_seen = Instant::now();
                        tracing::info!(worker_id, role = ?w.role, host = %w.host, "worker attached");
                        if w.state == WorkerState::Registered {
                            self.set_state(worker_id, WorkerState::Idle);
                        }
                    }
                    _ => {
                        let _ = outbox.try_send(Err(Status::not_found(format!(
                            "worker {worker_id} is not registered (or was declared lost): register again"
                        ))));
                    }
                }
                self.progress();
            }
            Event::Message { worker_id, msg } => {
                if let Some(w) = self.workers.get_mut(&worker_id) {
                    w.last_seen = Instant::now();
                    match msg.kind {
                        Some(pb::worker_message::Kind::Progress(p))
                            // Rank 0 speaks for the learners (they step together).
                            if w.role == pb::Role::Learner && w.rank == Some(0) => {
                                let mut values: Vec<(String, f64)> = p.values.into_iter().collect();
                                values.sort_by(|a, b| a.0.cmp(&b.0));
                                self.console.update(p.done as u64, p.total as u64, values);
                            }
                        Some(pb::worker_message::Kind::NcclId(id)) => {
                            let rank = w.rank;
                            if self.awaiting_nccl_id && rank == Some(0) {
                                self.awaiting_nccl_id = false;
                                tracing::info!(bytes = id.unique_id.len(), "NCCL unique id from rank 0");
                                self.complete_rendezvous(id.unique_id, 1);
                                self.progress();
                            } else {
                                tracing::warn!(worker_id, ?rank, "ignored an NCCL id that is not rank 0's answer to its rendezvous");
                            }
                        }
                        Some(pb::worker_message::Kind::Fatal(f)) => {
                            let (role, rank, host) = (w.role, w.rank, w.host.clone());
                            tracing::error!(worker_id, ?role, host = %host, error = %f.error, "worker cannot go on");
                            if role == pb::Role::Learner {
                                // An error at start-up repeats on a restart: fail with it.
                                let who = rank.map_or(format!("learner {worker_id}"), |r| format!("learner rank {r}"));
                                self.fail(format!("{who} on {host}: {}", f.error));
                            } else {
                                self.lose(worker_id, &format!("it failed: {}", f.error));
                                if !self.workers.values().any(|w| w.live_as(pb::Role::Rollout)) {
                                    self.fail(format!("no rollout worker left: worker {worker_id} on {host}: {}", f.error));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            Event::Detached { worker_id } => self.lose(worker_id, "its stream closed"),
            Event::Report { report, reply } => {
                let r = self.report(report);
                let _ = reply.send(r);
                self.progress();
            }
            Event::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Event::Tick => {
                let limit = Duration::from_millis(self.cfg.workers.lost_after_ms);
                let silent: Vec<u64> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| w.live() && w.last_seen.elapsed() > limit)
                    .map(|(&id, _)| id)
                    .collect();
                for id in silent {
                    self.lose(id, "it missed its heartbeats");
                }
                self.expire_leases();
                self.check_registration();
                self.progress();
            }
            Event::Stop { reason } => self.fail(format!("stopped: {reason}")),
            Event::Drain { reason } => {
                if self.finished() {
                    return;
                }
                if let Some(first) = &self.draining {
                    let why = format!("{reason} while stopping after {first}: stopped at once, without a checkpoint");
                    return self.fail(why);
                }
                tracing::warn!(%reason, "stopping: no new work; the iteration being learned finishes, then a checkpoint, then the workers exit (a second signal stops at once)");
                self.draining = Some(reason);
                // Rollouts not started yet will not be needed (they are generated again on resume).
                self.queue.retain(|t| !matches!(self.tasks.get(t).map(|t| &t.kind), Some(TaskKind::Rollout(_))));
                self.progress();
            }
            Event::LearnerExited { rank, generation, status } => {
                if generation != self.learner_generation || self.finished() {
                    return;
                }
                let alive = self
                    .workers
                    .iter()
                    .find(|(_, w)| w.live_as(pb::Role::Learner) && w.asked_rank == rank)
                    .map(|(&id, _)| id);
                match alive {
                    Some(id) => self.lose(id, &format!("its process exited ({status})")),
                    None => self.fail(format!("learner-{rank} exited ({status}) before it registered")),
                }
                self.progress();
            }
        }
    }

    fn register(&mut self, req: pb::RegisterRequest) -> Result<pb::RegisterResponse, Status> {
        if !matches!(self.phase, Phase::WaitingForWorkers | Phase::WarmStart | Phase::Running) {
            return Err(Status::failed_precondition(format!("the run is {}", self.phase.name())));
        }
        let role = pb::Role::try_from(req.role).unwrap_or(pb::Role::Unspecified);
        match role {
            pb::Role::Rollout => {
                let live = self.workers.values().filter(|w| w.live_as(pb::Role::Rollout)).count();
                if live >= self.cfg.workers.rollout as usize {
                    return Err(Status::resource_exhausted(format!(
                        "the run already has its {} rollout workers (workers.rollout); one more is taken only after one of them is lost",
                        self.cfg.workers.rollout
                    )));
                }
            }
            pb::Role::Learner => {
                let attached = self.workers.values().filter(|w| w.live_as(pb::Role::Learner)).count();
                if self.rendezvous_sent || attached >= self.cfg.workers.learner as usize {
                    return Err(Status::failed_precondition(format!(
                        "the run already has its {} learners (workers.learner); a lost learner is replaced by restarting all learners from a checkpoint (`--local` does it; otherwise run the coordinator again with --resume)",
                        self.cfg.workers.learner
                    )));
                }
                if req.flight_addr.is_empty() || req.collective_addr.is_empty() {
                    return Err(Status::invalid_argument("a learner must send flight_addr and collective_addr"));
                }
            }
            pb::Role::Unspecified => return Err(Status::invalid_argument("role must be rollout or learner")),
        }
        if self.cfg.workers.device == "cuda" && !req.device.starts_with("cuda") {
            return Err(Status::failed_precondition(format!(
                "the run has workers.device = \"cuda\" but this worker on {} has device `{}`",
                req.host, req.device
            )));
        }
        let id = self.next_worker;
        self.next_worker += 1;
        self.workers.insert(
            id,
            Worker {
                role,
                host: req.host.clone(),
                flight_addr: req.flight_addr,
                collective_addr: req.collective_addr,
                asked_rank: req.rank,
                rank: None,
                outbox: None,
                last_seen: Instant::now(),
                state: WorkerState::Registered,
                policy_version: 0,
            },
        );
        tracing::info!(worker_id = id, ?role, host = %req.host, pid = req.pid, "worker registered");
        Ok(pb::RegisterResponse {
            worker_id: id,
            config_toml: self.config_toml.clone(),
            run_dir: self.run_dir.display().to_string(),
        })
    }

    fn send(&mut self, worker_id: u64, msg: Msg) -> bool {
        let Some(w) = self.workers.get_mut(&worker_id) else { return false };
        match &w.outbox {
            Some(tx) => tx.try_send(Ok(pb::CoordinatorMessage { kind: Some(msg) })).is_ok(),
            None => false,
        }
    }

    /// Moves worker `id` to `state`, keeping the idle index in step.
    fn set_state(&mut self, id: u64, state: WorkerState) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        if w.role == pb::Role::Rollout {
            if state == WorkerState::Idle {
                self.idle.insert(id);
            } else {
                self.idle.remove(&id);
            }
        }
        w.state = state;
    }

    fn lose(&mut self, worker_id: u64, why: &str) {
        let Some(w) = self.workers.get_mut(&worker_id) else { return };
        if !w.live() {
            return;
        }
        w.outbox = None;
        let role = w.role;
        let task = w.task();
        self.set_state(worker_id, WorkerState::Lost { why: why.into() });
        tracing::warn!(worker_id, ?role, why, "worker lost");
        if self.finished() {
            return;
        }
        if role == pb::Role::Learner {
            self.learner_failed(format!("learner {worker_id} lost ({why})"));
            return;
        }
        if let Some(t) = task {
            if let Some(task) = self.tasks.get_mut(&t) {
                if !task.done() {
                    task.state = TaskState::Queued;
                    self.queue.push_front(t);
                    tracing::info!(task_id = t, "re-queued the lost worker's task");
                }
            }
        }
    }

    /// Fails the run when the workers have not all registered in `workers.register_timeout_ms`.
    fn check_registration(&mut self) {
        if self.phase != Phase::WaitingForWorkers || self.started.elapsed() < Duration::from_millis(self.cfg.workers.register_timeout_ms) {
            return;
        }
        let count = |role| self.workers.values().filter(|w| w.live_as(role)).count();
        let (l, r) = (count(pb::Role::Learner), count(pb::Role::Rollout));
        if l < self.cfg.workers.learner as usize || r == 0 {
            self.fail(format!(
                "{l} of {} learners and {r} of {} rollout workers registered within {} s (workers.register_timeout_ms): a worker did not start; see its log or the job output",
                self.cfg.workers.learner,
                self.cfg.workers.rollout,
                self.cfg.workers.register_timeout_ms / 1000
            ));
        }
    }

    /// Re-queues rollout tasks whose lease ran out (a stuck but still heartbeating worker).
    fn expire_leases(&mut self) {
        let lease = Duration::from_millis(self.cfg.workers.task_lease_ms);
        let expired: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.kind, TaskKind::Rollout(_)) && matches!(t.state, TaskState::Running { since, .. } if since.elapsed() > lease))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let t = self.tasks.get_mut(&id).unwrap();
            let worker = t.worker();
            t.state = TaskState::Queued;
            // The worker stays busy until it reports (its report is then ignored as stale): a
            // stuck worker is not handed more work, and the task goes to another one.
            tracing::warn!(task_id = id, worker_id = ?worker, "task lease expired; re-queued");
            self.queue.push_back(id);
        }
    }

    /// Worker `id` no longer holds task `task`: idle again unless it was lost meanwhile.
    fn release(&mut self, id: u64, task: u64) {
        if self.workers.get(&id).is_some_and(|w| w.task() == Some(task)) {
            self.set_state(id, WorkerState::Idle);
        }
    }

    /// A learner is gone or its task failed (e.g. a collective with a dead peer): restart the
    /// learners from the newest valid checkpoint when this is a `--local` run with restarts
    /// left, else fail the run.
    fn learner_failed(&mut self, why: String) {
        if self.finished() {
            return;
        }
        let max = self.cfg.run.max_restarts as usize;
        if self.eval.is_some() {
            return self.fail(format!("{why}; the evaluation stopped (run it again)"));
        }
        if let Some(reason) = crate::failure::permanent(&why) {
            return self.fail(format!(
                "{why}; not retried: {reason}, which a restart would meet again (make room, then `--resume`)"
            ));
        }
        if self.respawn.is_none() {
            return self.fail(format!(
                "{why}; continue the run with `coordinator --config ... --resume` (restarts are automatic with --local)"
            ));
        }
        if self.restarts.len() >= max {
            return self.fail(format!("{why}; the learners were already restarted {max} times (run.max_restarts)"));
        }
        let choice = ckpt::newest_valid(&self.run_dir, Some(&self.config_hash));
        for (dir, e) in &choice.skipped {
            tracing::warn!(checkpoint = %dir.display(), error = %e, "skipping a checkpoint that failed its checks");
        }
        let Some((dir, manifest)) = choice.chosen else {
            return self.fail(format!(
                "{why}; there is no valid checkpoint to restart from (checkpoint.every = {})",
                self.cfg.checkpoint.every
            ));
        };
        // Iterations started after the checkpoint are done again.
        let reached = self.learning.unwrap_or(self.learned_upto).max(self.learned_upto);
        let redone: Vec<u64> = (manifest.iteration + 1..=reached).collect();
        tracing::warn!(reason = %why, checkpoint = %dir.display(), ?redone, restart = self.restarts.len() + 1, max, "restarting the learners from a checkpoint");
        // Everything in flight belongs to the failed attempt: its reports will be ignored.
        let unfinished: Vec<(u64, Option<u64>)> = self.tasks.iter().filter(|(_, t)| !t.done()).map(|(&id, t)| (id, t.worker())).collect();
        for (id, worker) in unfinished {
            self.tasks.get_mut(&id).unwrap().state = TaskState::Done;
            if let Some(w) = worker {
                self.release(w, id);
            }
        }
        self.queue.clear();
        let learners: Vec<u64> = self.workers.iter().filter(|(_, w)| w.live_as(pb::Role::Learner)).map(|(&id, _)| id).collect();
        for id in learners {
            self.send(
                id,
                Msg::Shutdown(pb::Shutdown {
                    reason: format!("restarting the learners: {why}"),
                }),
            );
            self.workers.get_mut(&id).unwrap().outbox = None;
            self.set_state(
                id,
                WorkerState::Lost {
                    why: "stopped for a learner restart".into(),
                },
            );
        }
        self.restarts.push((manifest.iteration, redone.clone(), why.clone()));
        self.record(serde_json::json!({ "restart": self.restarts.len(), "from_checkpoint": dir.display().to_string(), "checkpoint_iteration": manifest.iteration, "redone": redone, "reason": why }));
        self.resume_from(ResumePoint { dir, manifest });
        self.phase = Phase::WaitingForWorkers;
        self.rendezvous_sent = false;
        self.awaiting_nccl_id = false;
        self.warm_tasks.clear();
        self.learner_generation += 1;
        if let Some(tx) = &self.respawn {
            let _ = tx.send(self.learner_generation);
        }
    }

    fn fail(&mut self, why: String) {
        if self.finished() {
            return;
        }
        tracing::error!(reason = %why, "run failed");
        self.phase = Phase::Failed(why.clone());
        self.shutdown_all(&why);
    }

    fn shutdown_all(&mut self, reason: &str) {
        let ids: Vec<u64> = self.workers.keys().copied().collect();
        for id in ids {
            self.send(id, Msg::Shutdown(pb::Shutdown { reason: reason.into() }));
        }
    }

    fn learners_by_rank(&self) -> Vec<u64> {
        let mut v: Vec<(u32, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.live_as(pb::Role::Learner))
            .filter_map(|(&id, w)| w.rank.map(|r| (r, id)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Moves the run forward as far as the current state allows.
    fn progress(&mut self) {
        if self.finished() {
            return;
        }
        if !self.rendezvous_sent {
            if let Some(why) = self.draining.clone() {
                // Nothing was trained in this attempt: nothing to save.
                self.phase = Phase::Stopped(why.clone());
                self.shutdown_all(&format!("run stopped: {why}"));
                return;
            }
            self.try_rendezvous();
            if !self.rendezvous_sent {
                return;
            }
        }
        if self.phase == Phase::WarmStart {
            return;
        }
        if self.eval.is_some() {
            return self.eval_progress();
        }
        if let Some(why) = self.draining.clone() {
            if self.learning.is_some() || self.checkpointing.is_some() {
                return;
            }
            if self.checkpointed != Some(self.learned_upto) {
                tracing::info!(iteration = self.learned_upto, "stopping: checkpoint before exit");
                return self.start_checkpoint(self.learned_upto);
            }
            tracing::warn!(iteration = self.learned_upto, checkpoint = ?self.last_checkpoint, "stopped; continue with --resume");
            self.phase = Phase::Stopped(why.clone());
            self.shutdown_all(&format!("run stopped: {why}"));
            return;
        }
        if self.learned_upto >= self.cfg.run.iterations && self.learning.is_none() && self.checkpointing.is_none() {
            self.phase = Phase::Done;
            self.shutdown_all("run complete");
            tracing::info!(secs = self.started.elapsed().as_secs_f64() as u64, "run complete");
            return;
        }
        // Queue rollouts within the staleness bound.
        while self.queued_upto < self.cfg.run.iterations && self.queued_upto < self.learned_upto + 1 + self.cfg.run.max_staleness {
            self.queue_rollouts(self.queued_upto + 1);
        }
        self.dispatch();
        self.maybe_learn();
    }

    fn try_rendezvous(&mut self) {
        if self.awaiting_nccl_id {
            return;
        }
        let w = self.cfg.workers.learner as usize;
        let mut learners: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, x)| x.live_as(pb::Role::Learner) && x.outbox.is_some())
            .map(|(&id, _)| id)
            .collect();
        if learners.len() < w {
            return;
        }
        learners.truncate(w);
        // Ranks: honour asked ranks when valid and unique, fill the rest in registration order.
        let mut taken = vec![false; w];
        for id in &learners {
            let asked = self.workers[id].asked_rank as usize;
            if asked < w && !taken[asked] {
                taken[asked] = true;
                self.workers.get_mut(id).unwrap().rank = Some(asked as u32);
            }
        }
        for id in &learners {
            if self.workers[id].rank.is_none() {
                let r = taken.iter().position(|t| !t).unwrap();
                taken[r] = true;
                self.workers.get_mut(id).unwrap().rank = Some(r as u32);
            }
        }
        if self.cfg.workers.device == "cuda" {
            // Rank 0 creates the NCCL unique id and answers with it (WorkerMessage.nccl_id).
            let rank0 = self.learners_by_rank()[0];
            let addrs = self.learner_collective_addrs();
            self.send(
                rank0,
                Msg::Rendezvous(pb::Rendezvous {
                    rank: 0,
                    world_size: w as u32,
                    collective_addrs: addrs,
                    nccl_unique_id: Vec::new(),
                    resume_checkpoint: self.resume.as_ref().map(|p| p.dir.display().to_string()).unwrap_or_default(),
                }),
            );
            self.awaiting_nccl_id = true;
            tracing::info!(learners = w, "rendezvous sent to rank 0; waiting for its NCCL unique id");
            return;
        }
        self.complete_rendezvous(Vec::new(), 0);
    }

    fn learner_collective_addrs(&self) -> Vec<String> {
        self.learners_by_rank().iter().map(|id| self.workers[id].collective_addr.clone()).collect()
    }

    /// Sends the rendezvous to ranks `first_rank..` and starts the SFT phase (or the iterations).
    fn complete_rendezvous(&mut self, nccl_unique_id: Vec<u8>, first_rank: usize) {
        let w = self.cfg.workers.learner as usize;
        let by_rank = self.learners_by_rank();
        let addrs = self.learner_collective_addrs();
        let resume = self.resume.as_ref().map(|p| p.dir.display().to_string()).unwrap_or_default();
        for (r, id) in by_rank.iter().enumerate().skip(first_rank) {
            let rdv = pb::Rendezvous {
                rank: r as u32,
                world_size: w as u32,
                collective_addrs: addrs.clone(),
                nccl_unique_id: nccl_unique_id.clone(),
                resume_checkpoint: resume.clone(),
            };
            self.send(*id, Msg::Rendezvous(rdv));
        }
        self.rendezvous_sent = true;
        tracing::info!(learners = w, resume = %resume, "rendezvous sent");
        if self.resume.is_some() || self.eval.is_some() {
            self.run_iterations();
        } else if self.cfg.sft.steps > 0 {
            self.start_warm(pb::LearnerTaskKind::SftWarmStart);
        } else if self.cfg.reward.warm_start_steps > 0 {
            self.start_warm(pb::LearnerTaskKind::RewardWarmStart);
        } else {
            self.run_iterations();
        }
    }

    /// The iterations (or the evaluation job's tasks) may run; the console shows them.
    fn run_iterations(&mut self) {
        self.phase = Phase::Running;
        if self.eval.is_none() && self.learned_upto < self.cfg.run.iterations {
            self.console.begin("AIRL iterations", "iterations", self.learned_upto, self.cfg.run.iterations);
        }
    }

    /// Starts one warm-start task per rank. The problems: SFT step k of rank r uses ids
    /// `SFT_FIRST_ID + (k·W + r)·batch ..` (batch per rank); reward warm-start step k splits
    /// `REWARD_WARM_FIRST_ID + k·batch ..` (batch in total) over the ranks.
    fn start_warm(&mut self, kind: pb::LearnerTaskKind) {
        self.phase = Phase::WarmStart;
        self.warm_kind = kind;
        self.warm_tasks.clear();
        let by_rank = self.learners_by_rank();
        let w = by_rank.len() as u64;
        for (r, id) in by_rank.into_iter().enumerate() {
            let r = r as u64;
            let (steps, ids, next_version) = match kind {
                pb::LearnerTaskKind::SftWarmStart => {
                    let (steps, b) = (self.cfg.sft.steps as u64, self.cfg.sft.batch as u64);
                    let ids = (0..steps).flat_map(|k| (0..b).map(move |j| SFT_FIRST_ID + (k * w + r) * b + j)).collect();
                    (steps, ids, self.policy_version + 1)
                }
                _ => {
                    let (steps, b) = (self.cfg.reward.warm_start_steps as u64, self.cfg.reward.warm_start_batch as u64);
                    let counts = ckpt::split_counts(b as usize, w as usize);
                    let first: u64 = counts[..r as usize].iter().sum::<usize>() as u64;
                    let mine = counts[r as usize] as u64;
                    let ids = (0..steps)
                        .flat_map(|k| (0..mine).map(move |j| REWARD_WARM_FIRST_ID + k * b + first + j))
                        .collect();
                    (steps, ids, 0)
                }
            };
            let t = self.new_task(
                0,
                TaskKind::Learner(pb::LearnerTask {
                    kind: kind as i32,
                    steps: steps as u32,
                    prompt_ids: ids,
                    next_policy_version: next_version,
                    ..Default::default()
                }),
            );
            self.warm_tasks.push(t);
            self.start(t, id);
        }
        let (name, steps) = match kind {
            pb::LearnerTaskKind::SftWarmStart => ("SFT warm start (behaviour cloning of the policy on expert traces)", self.cfg.sft.steps as u64),
            _ => (
                "reward warm start (discriminator on experts against their corruptions)",
                self.cfg.reward.warm_start_steps as u64,
            ),
        };
        self.console.begin(name.split(" (").next().unwrap_or(name), "steps", 0, steps);
        tracing::info!("{name}: started");
    }

    /// Whether a checkpoint follows iteration `i` (0 = the warm starts).
    fn checkpoint_after(&self, i: u64) -> bool {
        let c = &self.cfg.checkpoint;
        (c.every > 0 && i.is_multiple_of(c.every)) || (c.at_end && i == self.cfg.run.iterations)
    }

    /// Sends every rank a checkpoint task for the state after iteration `iteration`.
    fn start_checkpoint(&mut self, iteration: u64) {
        let dir = ckpt::step_dir(&self.run_dir, iteration);
        // A folder left by a failed attempt is not a checkpoint (no manifest): start it afresh.
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return self.fail(format!("{}: cannot create the checkpoint folder: {e}", dir.display()));
        }
        let by_rank = self.learners_by_rank();
        let mut tasks = Vec::new();
        for _ in &by_rank {
            let t = self.new_task(
                iteration,
                TaskKind::Learner(pb::LearnerTask {
                    kind: pb::LearnerTaskKind::Checkpoint as i32,
                    iteration,
                    checkpoint_dir: dir.display().to_string(),
                    ..Default::default()
                }),
            );
            tasks.push(t);
        }
        // Recorded after the tasks are numbered: a resumed run numbers its next tasks from here.
        let sft = [
            SFT_FIRST_ID,
            SFT_FIRST_ID + self.cfg.sft.steps as u64 * self.cfg.sft.batch as u64 * by_rank.len() as u64,
        ];
        let rw = [
            REWARD_WARM_FIRST_ID,
            REWARD_WARM_FIRST_ID + self.cfg.reward.warm_start_steps as u64 * self.cfg.reward.warm_start_batch as u64,
        ];
        let data = DataFrontier {
            prompts_trained: self.prompts_trained,
            sft_prompts: sft,
            reward_warm_prompts: rw,
            next_task_id: self.next_task,
        };
        for (t, id) in tasks.iter().zip(by_rank) {
            self.start(*t, id);
        }
        tracing::info!(iteration, dir = %dir.display(), "checkpoint");
        self.checkpointing = Some(PendingCheckpoint {
            iteration,
            dir,
            tasks,
            reports: BTreeMap::new(),
            policy_version: self.policy_version,
            data,
            started: Instant::now(),
        });
    }

    /// All ranks wrote their shards: write the manifest (atomically) and prune old checkpoints.
    fn finish_checkpoint(&mut self) {
        let Some(p) = self.checkpointing.take() else { return };
        let r0 = &p.reports[&0];
        fn parse<T: serde::de::DeserializeOwned>(v: &serde_json::Value, what: &str) -> Result<T, String> {
            serde_json::from_value(v.clone()).map_err(|e| format!("rank report `{what}`: {e}"))
        }
        let built = (|| -> Result<Manifest, String> {
            let mut files = Vec::new();
            for (rank, rep) in &p.reports {
                let f: ckpt::FileEntry = parse(&rep["file"], "file")?;
                if f.rank != *rank || rep["optimizer_steps"] != r0["optimizer_steps"] {
                    return Err(format!(
                        "rank {rank} reported rank {} with optimizer steps {} (rank 0: {})",
                        f.rank, rep["optimizer_steps"], r0["optimizer_steps"]
                    ));
                }
                files.push(f);
            }
            Ok(Manifest {
                format_version: ckpt::FORMAT_VERSION,
                airlift_version: env!("CARGO_PKG_VERSION").into(),
                run_name: self.cfg.run.name.clone(),
                iteration: p.iteration,
                policy_version: p.policy_version,
                world_size: p.reports.len() as u32,
                created_unix_s: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                layouts: parse(&r0["layouts"], "layouts")?,
                optimizer_steps: parse(&r0["optimizer_steps"], "optimizer_steps")?,
                files,
                rng: ckpt::RngState {
                    run_seed: self.cfg.run.seed,
                    learners: "none: learners draw no random numbers after initialisation, which the saved parameters replace".into(),
                    rollouts: "per task: seed = f(run.seed, iteration, first prompt id), one stream per sequence".into(),
                },
                data: p.data.clone(),
                config_sha256: self.config_hash.clone(),
                config_may_differ: airlift_proto::config::RESUME_MAY_DIFFER.iter().map(|s| s.to_string()).collect(),
                config_toml: self.config_toml.clone(),
            })
        })();
        let m = match built {
            Ok(m) => m,
            Err(e) => return self.fail(format!("checkpoint {}: {e}", p.dir.display())),
        };
        if let Err(e) = ckpt::write_manifest(&p.dir, &m) {
            return self.fail(format!("checkpoint: {e}"));
        }
        let mb = m.files.iter().map(|f| f.bytes).sum::<u64>() as f64 / 1e6;
        let secs = p.started.elapsed().as_secs_f64();
        tracing::info!(dir = %p.dir.display(), iteration = p.iteration, mb = format!("{mb:.1}"), secs = format!("{secs:.2}"), "checkpoint written");
        for old in ckpt::prune(&self.run_dir, self.cfg.checkpoint.keep as usize, self.cfg.checkpoint.keep_warm_start) {
            tracing::info!(dir = %old.display(), "deleted an old checkpoint (checkpoint.keep = {})", self.cfg.checkpoint.keep);
        }
        self.last_checkpoint = Some(p.dir);
        self.checkpointed = Some(p.iteration);
    }

    /// Evaluation job: queue the rollout tasks once (problems in chunks of
    /// `data.prompts_per_task`, their rows going to the learners in turn), then hand them out;
    /// done once the report task has reported.
    fn eval_progress(&mut self) {
        if let Some(why) = self.draining.clone() {
            return self.fail(format!("evaluation stopped ({why}); it has nothing to resume from: run it again"));
        }
        let Some(job) = self.eval.as_ref() else { return };
        if !job.queued {
            let plan = job.plan.clone();
            let by_rank = self.learners_by_rank();
            let weights_addr = self.workers[&by_rank[0]].flight_addr.clone();
            if let ProblemSource::ProcessBench(_) = plan.source {
                // Fixed traces: no sampling; one score task per learner straight away (a worker
                // holds one task at a time), which reads its items itself.
                let mut n = 0;
                for (k, chunk) in plan.problems.chunks(plan.problems.len().div_ceil(by_rank.len()).max(1)).enumerate() {
                    self.eval_score_items(chunk.to_vec(), k % by_rank.len());
                    n += 1;
                }
                tracing::info!(items = plan.problems.len(), tasks = n, problem_set = %plan.source.wire(), "evaluation: score tasks queued");
                let job = self.eval.as_mut().unwrap();
                job.expected_scores = n;
                job.queued = true;
                // The score tasks and the report.
                self.console.begin("evaluation", "tasks", 0, n as u64 + 1);
            } else {
                let mut ranks = HashMap::new();
                let per_task = (self.cfg.data.prompts_per_task as usize).max(1);
                for (k, chunk) in plan.problems.chunks(per_task).enumerate() {
                    let rank = k % by_rank.len();
                    let t = pb::RolloutTask {
                        iteration: EVAL_ITERATION,
                        policy_version: self.policy_version,
                        prompt_ids: chunk.to_vec(),
                        samples_per_prompt: plan.samples,
                        sampling: Some(pb::SamplingParams {
                            temperature: self.cfg.sampling.temperature,
                            top_p: self.cfg.sampling.top_p,
                            max_new_tokens: self.cfg.sampling.max_new_tokens,
                        }),
                        seed: self.cfg.run.seed.wrapping_mul(1_000_003).wrapping_add(0xE7A1 + chunk[0]),
                        learner_flight_addr: self.workers[&by_rank[rank]].flight_addr.clone(),
                        weights_flight_addr: weights_addr.clone(),
                        problem_set: plan.source.wire(),
                        ..Default::default()
                    };
                    let id = self.new_task(EVAL_ITERATION, TaskKind::Rollout(t));
                    ranks.insert(id, rank);
                    self.queue.push_back(id);
                }
                tracing::info!(problems = plan.problems.len(), samples = plan.samples, tasks = ranks.len(), problem_set = %plan.source.wire(), "evaluation: rollouts queued");
                let job = self.eval.as_mut().unwrap();
                job.expected_scores = ranks.len();
                let n = ranks.len() as u64;
                job.rollout_rank = ranks;
                job.queued = true;
                // Each rollout task, the score task it becomes, and the report.
                self.console.begin("evaluation", "tasks", 0, 2 * n + 1);
            }
        }
        self.dispatch();
        // Every task of an evaluation is its own (the job holds no training tasks).
        let done = self.tasks.values().filter(|t| t.done()).count() as u64;
        self.console.update(done, self.console.total().unwrap_or(done), Vec::new());
        if self.eval.as_ref().is_some_and(|j| j.report_task.is_some_and(|t| self.tasks[&t].done())) {
            self.phase = Phase::Done;
            self.shutdown_all("evaluation complete");
            tracing::info!(secs = self.started.elapsed().as_secs_f64() as u64, "evaluation complete");
        }
    }

    /// Evaluation job on fixed traces (ProcessBench): learner `rank` scores items `ids`.
    fn eval_score_items(&mut self, ids: Vec<u64>, rank: usize) {
        let Some(job) = self.eval.as_ref() else { return };
        let problem_set = job.plan.source.wire();
        self.start_score_task(ids, Vec::new(), 1, problem_set, rank);
    }

    /// Evaluation job: rollout task `t` is done; its learner scores its rows.
    fn eval_score(&mut self, t: &pb::RolloutTask) {
        let Some(job) = self.eval.as_ref() else { return };
        let rank = job.rollout_rank.get(&t.task_id).copied().unwrap_or(0);
        self.start_score_task(t.prompt_ids.clone(), vec![t.task_id], t.samples_per_prompt, t.problem_set.clone(), rank);
    }

    /// Starts a score task of the evaluation job on learner `rank`.
    fn start_score_task(&mut self, prompt_ids: Vec<u64>, rollout_task_ids: Vec<u64>, samples_per_prompt: u32, problem_set: String, rank: usize) {
        let Some(job) = self.eval.as_ref() else { return };
        let lt = pb::LearnerTask {
            kind: pb::LearnerTaskKind::EvalScore as i32,
            iteration: EVAL_ITERATION,
            prompt_ids,
            rollout_task_ids,
            samples_per_prompt,
            problem_set,
            output_dir: job.plan.dir.display().to_string(),
            ..Default::default()
        };
        let id = self.new_task(EVAL_ITERATION, TaskKind::Learner(lt));
        self.eval.as_mut().unwrap().score_tasks.push(id);
        let learner = self.learners_by_rank()[rank];
        self.start(id, learner);
    }

    /// Evaluation job: a learner task reported. After the last score task, rank 0 reports.
    fn eval_scored(&mut self, t: &pb::LearnerTask, task_id: u64, metrics: serde_json::Value) {
        let kind = pb::LearnerTaskKind::try_from(t.kind).unwrap_or(pb::LearnerTaskKind::Unspecified);
        let done = |s: &RunState, id: &u64| s.tasks.get(id).is_some_and(|t| t.done());
        match kind {
            pb::LearnerTaskKind::EvalScore => {
                let job = self.eval.as_mut().unwrap();
                job.scored.push(metrics);
                let job = self.eval.as_ref().unwrap();
                let (n, all) = (job.score_tasks.len(), job.expected_scores);
                let finished = job.score_tasks.iter().filter(|id| done(self, id)).count();
                tracing::info!(task_id, "evaluation: {finished} of {all} score tasks done");
                if n == all && finished == all && job.report_task.is_none() {
                    let plan = job.plan.clone();
                    let lt = pb::LearnerTask {
                        kind: pb::LearnerTaskKind::EvalReport as i32,
                        iteration: EVAL_ITERATION,
                        prompt_ids: plan.problems.clone(),
                        samples_per_prompt: plan.samples,
                        problem_set: plan.source.wire(),
                        output_dir: plan.dir.display().to_string(),
                        compare_dirs: plan.compare.iter().map(|d| d.display().to_string()).collect(),
                        label: plan.label.clone(),
                        ..Default::default()
                    };
                    let id = self.new_task(EVAL_ITERATION, TaskKind::Learner(lt));
                    self.eval.as_mut().unwrap().report_task = Some(id);
                    let rank0 = self.learners_by_rank()[0];
                    self.start(id, rank0);
                }
            }
            pb::LearnerTaskKind::EvalReport => {
                let scored = std::mem::take(&mut self.eval.as_mut().unwrap().scored);
                let mut rec = metrics;
                rec["score_tasks"] = serde_json::json!(scored);
                rec["elapsed_s"] = serde_json::json!(self.started.elapsed().as_secs_f64());
                self.record(rec);
            }
            other => self.fail(format!("evaluation job: unexpected report of a {} task", other.as_str_name())),
        }
    }

    fn new_task(&mut self, iteration: u64, kind: TaskKind) -> u64 {
        let id = self.next_task;
        self.next_task += 1;
        let kind = match kind {
            TaskKind::Rollout(mut t) => {
                t.task_id = id;
                TaskKind::Rollout(t)
            }
            TaskKind::Learner(mut t) => {
                t.task_id = id;
                TaskKind::Learner(t)
            }
        };
        self.tasks.insert(
            id,
            Task {
                kind,
                iteration,
                attempts: 0,
                state: TaskState::Queued,
            },
        );
        id
    }

    fn start(&mut self, task_id: u64, worker_id: u64) {
        let task = self.tasks.get_mut(&task_id).unwrap();
        task.state = TaskState::Running {
            worker: worker_id,
            since: Instant::now(),
        };
        task.attempts += 1;
        let msg = match &task.kind {
            TaskKind::Rollout(t) => {
                tracing::info!(
                    task_id,
                    worker_id,
                    iteration = t.iteration,
                    prompts = t.prompt_ids.len(),
                    "rollout task started"
                );
                Msg::Rollout(t.clone())
            }
            TaskKind::Learner(t) => Msg::Learner(t.clone()),
        };
        self.set_state(worker_id, WorkerState::Busy { task: task_id });
        if !self.send(worker_id, msg) {
            self.lose(worker_id, "its stream is not accepting messages");
        }
    }

    fn queue_rollouts(&mut self, iteration: u64) {
        let w = self.cfg.workers.learner as usize;
        let p = self.cfg.data.prompts_per_iteration as u64;
        let ids: Vec<u64> = (self.prompt_cursor..self.prompt_cursor + p).collect();
        self.prompt_cursor += p;
        let by_rank = self.learners_by_rank();
        let weights_addr = self.workers[&by_rank[0]].flight_addr.clone();
        let per = ids.len() / w;
        let mut st = IterationState {
            policy_version: self.policy_version,
            queued_at: Some(Instant::now()),
            prompt_end: self.prompt_cursor,
            ..Default::default()
        };
        for r in 0..w {
            let shard: Vec<u64> = ids[r * per..(r + 1) * per].to_vec();
            let dest = self.workers[&by_rank[r]].flight_addr.clone();
            for chunk in shard.chunks(self.cfg.data.prompts_per_task as usize) {
                let t = pb::RolloutTask {
                    task_id: 0,
                    iteration,
                    policy_version: self.policy_version,
                    prompt_ids: chunk.to_vec(),
                    samples_per_prompt: self.cfg.data.samples_per_prompt,
                    sampling: Some(pb::SamplingParams {
                        temperature: self.cfg.sampling.temperature,
                        top_p: self.cfg.sampling.top_p,
                        max_new_tokens: self.cfg.sampling.max_new_tokens,
                    }),
                    seed: self.cfg.run.seed.wrapping_mul(1_000_003).wrapping_add(iteration * 7_919 + chunk[0]),
                    learner_flight_addr: dest.clone(),
                    weights_flight_addr: weights_addr.clone(),
                    problem_set: String::new(),
                };
                let id = self.new_task(iteration, TaskKind::Rollout(t));
                st.rollout_tasks.push(id);
                self.queue.push_back(id);
            }
            st.shards.push(shard);
        }
        tracing::info!(
            iteration,
            tasks = st.rollout_tasks.len(),
            policy_version = self.policy_version,
            "rollouts queued"
        );
        self.iterations.insert(iteration, st);
        self.queued_upto = iteration;
    }

    fn dispatch(&mut self) {
        loop {
            let Some(&task_id) = self.queue.front() else { return };
            let Some(&worker_id) = self.idle.first() else { return };
            self.queue.pop_front();
            self.start(task_id, worker_id);
        }
    }

    fn maybe_learn(&mut self) {
        if self.learning.is_some() || self.checkpointing.is_some() {
            return;
        }
        let next = self.learned_upto + 1;
        let Some(st) = self.iterations.get(&next) else { return };
        if st.rollouts_done < st.rollout_tasks.len() {
            return;
        }
        let by_rank = self.learners_by_rank();
        let shards = st.shards.clone();
        let rollout_ids = st.rollout_tasks.clone();
        // Each rank waits only for the rollout tasks that fed its shard (one pass over the
        // tasks: with 1,000 workers and 64 ranks a scan per rank held the loop for milliseconds).
        let rank_of: HashMap<u64, usize> = shards.iter().enumerate().flat_map(|(r, s)| s.iter().map(move |&p| (p, r))).collect();
        let mut feeding_by_rank: Vec<Vec<u64>> = vec![Vec::new(); by_rank.len()];
        for t in &rollout_ids {
            if let TaskKind::Rollout(rt) = &self.tasks[t].kind {
                if let Some(&r) = rt.prompt_ids.first().and_then(|p| rank_of.get(p)) {
                    feeding_by_rank[r].push(*t);
                }
            }
        }
        let mut learner_tasks = Vec::new();
        for (r, id) in by_rank.iter().enumerate() {
            let feeding = std::mem::take(&mut feeding_by_rank[r]);
            let lt = pb::LearnerTask {
                task_id: 0,
                iteration: next,
                prompt_ids: shards[r].clone(),
                rollout_task_ids: feeding,
                samples_per_prompt: self.cfg.data.samples_per_prompt,
                next_policy_version: self.policy_version + 1,
                kind: pb::LearnerTaskKind::Iteration as i32,
                ..Default::default()
            };
            let t = self.new_task(next, TaskKind::Learner(lt));
            learner_tasks.push(t);
            self.start(t, *id);
        }
        let st = self.iterations.get_mut(&next).unwrap();
        st.learner_tasks = learner_tasks;
        st.learn_started = Some(Instant::now());
        self.learning = Some(next);
        tracing::info!(iteration = next, "learning");
    }

    fn report(&mut self, r: pb::TaskReport) -> Result<pb::TaskAck, Status> {
        let Some(task) = self.tasks.get_mut(&r.task_id) else {
            if r.task_id < self.next_task {
                // A task of an iteration already learned (and forgotten): a late duplicate.
                tracing::info!(task_id = r.task_id, worker_id = r.worker_id, "ignoring a report of a finished task");
                self.release(r.worker_id, r.task_id);
                return Ok(pb::TaskAck {});
            }
            return Err(Status::not_found(format!("unknown task {}", r.task_id)));
        };
        if task.worker() != Some(r.worker_id) {
            // A late report from a worker whose task was re-queued (its lease ran out): its rows
            // were deduplicated by the learner; the worker may take new work.
            tracing::info!(task_id = r.task_id, worker_id = r.worker_id, "ignoring a stale report");
            self.release(r.worker_id, r.task_id);
            return Ok(pb::TaskAck {});
        }
        let iteration = task.iteration;
        let kind = task.kind.clone();
        let attempts = task.attempts;
        let elapsed = match task.state {
            TaskState::Running { since, .. } => since.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        task.state = if r.ok { TaskState::Done } else { TaskState::Queued };
        self.release(r.worker_id, r.task_id);
        if !r.ok {
            tracing::warn!(task_id = r.task_id, error = %r.error, "task failed");
            match kind {
                TaskKind::Rollout(_) if attempts < MAX_ATTEMPTS => self.queue.push_back(r.task_id),
                TaskKind::Rollout(_) => self.fail(format!("task {} failed: {}", r.task_id, r.error)),
                TaskKind::Learner(_) => self.learner_failed(format!("learner task {} (iteration {iteration}) failed: {}", r.task_id, r.error)),
            }
            return Ok(pb::TaskAck {});
        }
        let metrics: serde_json::Value = serde_json::from_str(&r.metrics_json).unwrap_or(serde_json::Value::Null);
        match kind {
            TaskKind::Rollout(t) if self.eval.is_some() => {
                if let Some(w) = self.workers.get_mut(&r.worker_id) {
                    w.policy_version = t.policy_version;
                }
                self.eval_score(&t);
            }
            TaskKind::Learner(t) if self.eval.is_some() => self.eval_scored(&t, r.task_id, metrics),
            TaskKind::Rollout(t) => {
                if let Some(w) = self.workers.get_mut(&r.worker_id) {
                    w.policy_version = t.policy_version;
                }
                let st = self.iterations.get_mut(&iteration).unwrap();
                let mut m = metrics;
                m["task_s"] = serde_json::json!(elapsed);
                st.rollout_metrics.push(m);
                st.rollouts_done += 1;
            }
            TaskKind::Learner(t) => {
                let rank = self.workers.get(&r.worker_id).and_then(|w| w.rank).unwrap_or(0);
                match pb::LearnerTaskKind::try_from(t.kind).unwrap_or(pb::LearnerTaskKind::Unspecified) {
                    pb::LearnerTaskKind::SftWarmStart | pb::LearnerTaskKind::RewardWarmStart => {
                        let entry = self.warm_metrics.entry(rank).or_insert_with(|| serde_json::json!({}));
                        if let (Some(into), Some(from)) = (entry.as_object_mut(), metrics.as_object()) {
                            into.extend(from.clone());
                        }
                        if self.warm_tasks.iter().all(|id| self.tasks[id].done()) {
                            self.policy_version = self.policy_version.max(t.next_policy_version);
                            if self.warm_kind == pb::LearnerTaskKind::SftWarmStart && self.cfg.reward.warm_start_steps > 0 {
                                self.start_warm(pb::LearnerTaskKind::RewardWarmStart);
                            } else {
                                let learners: Vec<serde_json::Value> = std::mem::take(&mut self.warm_metrics).into_values().collect();
                                let rec = serde_json::json!({ "iteration": 0, "phase": "sft", "policy_version": self.policy_version, "learners": learners });
                                self.record(rec);
                                tracing::info!(policy_version = self.policy_version, "warm start done");
                                self.run_iterations();
                                if self.checkpoint_after(0) {
                                    self.start_checkpoint(0);
                                }
                            }
                        }
                    }
                    pb::LearnerTaskKind::Checkpoint => {
                        let all = match self.checkpointing.as_mut() {
                            Some(p) if p.tasks.contains(&r.task_id) => {
                                p.reports.insert(rank, metrics);
                                p.tasks.iter().all(|id| self.tasks[id].done())
                            }
                            _ => false,
                        };
                        if all {
                            self.finish_checkpoint();
                        }
                    }
                    pb::LearnerTaskKind::Evaluation => {
                        let st = self.iterations.get_mut(&iteration).unwrap();
                        if let Some(m0) = st.learner_metrics.get_mut(&0) {
                            m0["eval"] = metrics["eval"].clone();
                            m0["time_eval_s"] = metrics["time_eval_s"].clone();
                        }
                        self.learned(iteration);
                    }
                    _ => {
                        let st = self.iterations.get_mut(&iteration).unwrap();
                        st.learner_metrics.insert(rank, metrics);
                        if st.learner_tasks.iter().all(|id| self.tasks[id].done()) {
                            self.policy_version = t.next_policy_version;
                            if self.cfg.data.eval_prompts > 0 {
                                // Held-out metrics of the new policy and reward, on rank 0.
                                let lt = pb::LearnerTask {
                                    kind: pb::LearnerTaskKind::Evaluation as i32,
                                    iteration,
                                    prompt_ids: (0..self.cfg.data.eval_prompts as u64).collect(),
                                    ..Default::default()
                                };
                                let id = self.new_task(iteration, TaskKind::Learner(lt));
                                self.iterations.get_mut(&iteration).unwrap().eval_task = Some(id);
                                let rank0 = self.learners_by_rank()[0];
                                self.start(id, rank0);
                            } else {
                                self.learned(iteration);
                            }
                        }
                    }
                }
            }
        }
        Ok(pb::TaskAck {})
    }

    /// Iteration `iteration` is trained (and evaluated): record it, then checkpoint if due.
    fn learned(&mut self, iteration: u64) {
        self.learned_upto = iteration;
        self.learning = None;
        self.finish_iteration(iteration);
        if self.checkpoint_after(iteration) {
            self.start_checkpoint(iteration);
        }
    }

    fn finish_iteration(&mut self, iteration: u64) {
        let st = self.iterations.remove(&iteration).unwrap();
        self.prompts_trained = st.prompt_end;
        // The iteration's tasks are finished for good: forget them, so that the loop's scans
        // (leases, status) stay the size of the work in flight, not of the whole run.
        for id in st.rollout_tasks.iter().chain(&st.learner_tasks).chain(&st.eval_task) {
            self.tasks.remove(id);
        }
        let sum = |k: &str| st.rollout_metrics.iter().filter_map(|m| m[k].as_f64()).sum::<f64>();
        let gen_s = sum("generation_ms") / 1e3;
        let tokens = sum("tokens");
        let rows = sum("rows");
        let rollout = serde_json::json!({
            "tasks": st.rollout_metrics.len(), "rows": rows, "tokens": tokens, "correct": sum("correct"),
            "generation_s": gen_s, "transfer_s": sum("transfer_ms") / 1e3, "weight_sync_s": sum("weight_sync_ms") / 1e3,
            "tokens_per_s": if gen_s > 0.0 { tokens / gen_s } else { 0.0 },
            "accuracy": if rows > 0.0 { sum("correct") / rows } else { 0.0 },
        });
        let learners: Vec<serde_json::Value> = st.learner_metrics.into_values().collect();
        let rec = serde_json::json!({
            "iteration": iteration,
            "policy_version": self.policy_version,
            "behaviour_policy_version": st.policy_version,
            "rollout": rollout,
            "learners": learners,
            "time_rollout_wall_s": st.queued_at.zip(st.learn_started).map(|(a, b)| (b - a).as_secs_f64()),
            "time_learn_wall_s": st.learn_started.map(|s| s.elapsed().as_secs_f64()),
            "elapsed_s": self.started.elapsed().as_secs_f64(),
        });
        let m0 = &rec["learners"][0];
        tracing::info!(
            iteration,
            disc_loss = format!("{:.4}", m0["disc_loss"].as_f64().unwrap_or(f64::NAN)),
            auroc_expert_policy = format!("{:.3}", m0["auroc_expert_policy_seq"].as_f64().unwrap_or(f64::NAN)),
            auroc_expert_corrupted = format!("{:.3}", m0["auroc_expert_corrupted_seq"].as_f64().unwrap_or(f64::NAN)),
            "iteration done"
        );
        let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        let headline = vec![
            ("disc loss".to_string(), num(&m0["disc_loss"])),
            ("rollout accuracy".to_string(), num(&rec["rollout"]["accuracy"])),
            ("held-out AUROC expert/policy".to_string(), num(&m0["eval"]["auroc_expert_policy_seq"])),
            ("held-out error-line hit@1".to_string(), num(&m0["eval"]["error_step_hit1"])),
            ("tok/s".to_string(), num(&rec["rollout"]["tokens_per_s"])),
        ];
        self.console.update(iteration, self.cfg.run.iterations, headline);
        self.record(rec);
    }

    fn record(&mut self, rec: serde_json::Value) {
        use std::io::Write;
        let path = self.run_dir.join("metrics.jsonl");
        let line = rec.to_string();
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = r {
            tracing::error!(path = %path.display(), error = %e, "cannot append metrics");
        }
        if self.eval.is_none() {
            if self.tensorboard.is_none() {
                self.rewrite_tensorboard();
            }
            if let Some(tb) = self.tensorboard.as_mut() {
                if let Err(e) = tb.append(&rec) {
                    tracing::error!(path = %tb.path().display(), error = %e, "cannot append TensorBoard events");
                }
            }
        }
        self.records.push(rec);
    }

    /// `<run>/tensorboard/` afresh from the records kept (a fresh run, a resume, a restart).
    fn rewrite_tensorboard(&mut self) {
        match EventWriter::rewrite(&self.run_dir, &self.records) {
            Ok(w) => self.tensorboard = Some(w),
            Err(e) => {
                tracing::error!(dir = %self.run_dir.join("tensorboard").display(), error = %e, "cannot write TensorBoard events");
                self.tensorboard = None;
            }
        }
    }

    fn status(&self) -> pb::StatusResponse {
        pb::StatusResponse {
            state: self.phase.name(),
            iteration: self.learning.unwrap_or(self.learned_upto),
            policy_version: self.policy_version,
            workers: self
                .workers
                .iter()
                .map(|(&id, w)| pb::WorkerStatus {
                    worker_id: id,
                    role: w.role as i32,
                    host: w.host.clone(),
                    state: match &w.state {
                        WorkerState::Lost { .. } => "lost".into(),
                        WorkerState::Busy { task } => format!("busy (task {task})"),
                        WorkerState::Idle => "idle".into(),
                        WorkerState::Registered => "registered".into(),
                    },
                    policy_version: w.policy_version,
                })
                .collect(),
            last_metrics_json: self.records.last().map(|r| r.to_string()).unwrap_or_default(),
            queued_tasks: self.queue.len() as u64,
            running_tasks: self.tasks.values().filter(|t| matches!(t.state, TaskState::Running { .. })).count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuda_run(learners: u32) -> RunState {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/default.toml")).unwrap();
        let mut cfg = RunConfig::from_toml(&text).unwrap();
        cfg.workers.device = "cuda".into();
        cfg.workers.learner = learners;
        RunState::new(cfg, std::env::temp_dir().join("airlift-state-test"))
    }

    fn register(st: &mut RunState, device: &str, rank: u32) -> Result<u64, Status> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let req = pb::RegisterRequest {
            role: pb::Role::Learner as i32,
            host: "h".into(),
            pid: 1,
            device: device.into(),
            flight_addr: format!("127.0.0.1:{}", 7000 + rank),
            collective_addr: format!("127.0.0.1:{}", 8000 + rank),
            rank,
        };
        st.handle(Event::Register { req, reply: tx });
        rx.try_recv().unwrap().map(|r| r.worker_id)
    }

    fn attach(st: &mut RunState, worker_id: u64) -> mpsc::Receiver<Result<pb::CoordinatorMessage, Status>> {
        let (tx, rx) = mpsc::channel(16);
        st.handle(Event::Attach { worker_id, outbox: tx });
        rx
    }

    fn rendezvous(rx: &mut mpsc::Receiver<Result<pb::CoordinatorMessage, Status>>) -> Option<pb::Rendezvous> {
        match rx.try_recv() {
            Ok(Ok(pb::CoordinatorMessage {
                kind: Some(Msg::Rendezvous(r)),
            })) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn cuda_rendezvous_waits_for_rank_zeros_nccl_id() {
        let mut st = cuda_run(2);
        let a = register(&mut st, "cuda:0", 1).unwrap();
        let b = register(&mut st, "cuda:0", 0).unwrap();
        let mut ra = attach(&mut st, a);
        let mut rb = attach(&mut st, b);
        // Only rank 0 (worker b, which asked for it) has its rendezvous, without an id.
        let r0 = rendezvous(&mut rb).expect("rank 0's rendezvous");
        assert_eq!((r0.rank, r0.world_size), (0, 2));
        assert!(r0.nccl_unique_id.is_empty());
        assert!(rendezvous(&mut ra).is_none(), "rank 1 must wait for the NCCL id");
        assert_eq!(st.phase, Phase::WaitingForWorkers);
        // An id from rank 1 is ignored.
        let id = vec![7u8; 128];
        let msg = |uid: Vec<u8>, worker_id| Event::Message {
            worker_id,
            msg: pb::WorkerMessage {
                worker_id,
                kind: Some(pb::worker_message::Kind::NcclId(pb::NcclId { unique_id: uid })),
            },
        };
        st.handle(msg(vec![1u8; 128], a));
        assert!(rendezvous(&mut ra).is_none());
        st.handle(msg(id.clone(), b));
        let r1 = rendezvous(&mut ra).expect("rank 1's rendezvous after the id");
        assert_eq!((r1.rank, r1.world_size), (1, 2));
        assert_eq!(r1.nccl_unique_id, id);
        assert_eq!(r1.collective_addrs, r0.collective_addrs);
        assert_eq!(st.phase, Phase::WarmStart);
    }

    #[test]
    fn rollout_workers_beyond_workers_rollout_are_refused() {
        let mut st = cuda_run(1);
        st.cfg.workers.rollout = 2;
        let req = || pb::RegisterRequest {
            role: pb::Role::Rollout as i32,
            host: "h".into(),
            pid: 1,
            device: "cuda:0".into(),
            ..Default::default()
        };
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (tx, mut rx) = tokio::sync::oneshot::channel();
            st.handle(Event::Register { req: req(), reply: tx });
            ids.push(rx.try_recv().unwrap().unwrap().worker_id);
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        st.handle(Event::Register { req: req(), reply: tx });
        let e = rx.try_recv().unwrap().unwrap_err();
        assert!(e.code() == tonic::Code::ResourceExhausted && e.message().contains("workers.rollout"), "{e}");
        // A lost worker's place is free again.
        st.set_state(ids[0], WorkerState::Lost { why: "test".into() });
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        st.handle(Event::Register { req: req(), reply: tx });
        assert!(rx.try_recv().unwrap().is_ok());
    }

    #[test]
    fn a_cpu_worker_is_refused_by_a_cuda_run() {
        let mut st = cuda_run(1);
        let e = register(&mut st, "cpu", 0).unwrap_err();
        assert!(
            e.message().contains("workers.device = \"cuda\"") && e.message().contains("`cpu`"),
            "{}",
            e.message()
        );
    }
}
