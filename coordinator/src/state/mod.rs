//! The run state machine, changed only by [`RunState::handle`] inside the coordinator's one
//! event loop. It never touches tensors or files: it decides, sends messages down the workers'
//! attached streams (non-blocking), and returns the [`Effect`]s the event led to (append a
//! record, rewrite the records on a resume, make a checkpoint's folder, write its manifest,
//! prune old checkpoints, verify the checkpoints after a learner failure). One executor thread
//! ([`crate::effects`]) carries them out in order, off the loop, and reports those the run waits
//! for back as an event ([`Event::CheckpointFolder`], [`Event::ManifestWritten`],
//! [`Event::RestartPoint`]).
//!
//! Where each part lives:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Phase`], [`Event`], [`RunState`] and its fields, [`RunState::handle`], `progress` (moves the run on) |
//! | `effects.rs` | [`Effect`]: what the state decided and the executor does (files, slow checks) |
//! | `workers.rs` | `Worker`, `WorkerState`, registration, loss, learners by rank |
//! | `tasks.rs` | `Task`, `TaskState`, the queue, dispatch, leases, the learner tasks of an iteration |
//! | `phases.rs` | rendezvous, warm starts, the start of the iterations, failure and learner restarts |
//! | `reports.rs` | what a finished task of each kind moves forward |
//! | `checkpoint.rs` | checkpoint tasks and the manifest |
//! | `eval_job.rs` | an evaluation job's rollouts, score tasks and report |
//! | `records.rs` | `metrics.jsonl`, TensorBoard, the status answer |
//!
//! Lifecycles (impossible combinations are not representable):
//!
//! ```text
//!  worker:  Registered ──attach──▶ Idle ◀──report / stale report──▶ Busy{task}
//!              └──────────── heartbeats missed, stream closed, fatal ────────────▶ Lost{why}
//!  task:    Queued ──start──▶ Running{worker, since} ──report ok──▶ Done
//!              ▲                  │ worker lost, lease ran out (the worker stays Busy until
//!              └──────────────────┘ it reports), failed with attempts left
//!           learner restart: every unfinished task ─▶ Done (later reports are ignored)
//!  rendezvous (per attempt): Pending ─all learners attached─▶ Sent
//!                            (CUDA: Pending ─▶ AwaitingNcclId ─rank 0's id─▶ Sent)
//!  job: Training | Evaluation(progress of the evaluation job)
//! ```
//!
//! The run:
//!
//! ```text
//!  WaitingForWorkers ──all learners attached──▶ (rendezvous sent, naming the checkpoint to
//!        │   load when resuming; CUDA runs: rank 0's rendezvous first, the others' once rank 0
//!        │   sent its NCCL id)
//!        ├─ fresh run with warm starts ─▶ WarmStart{kind: Sft, tasks, metrics}, then
//!        │                                 WarmStart{kind: Reward, ..} (one task per rank) ─┐
//!        └─ resume, or no warm starts ──────────────────────────────────────────────────────┴─▶ Running(Learners)
//!  Running: iteration i's rollout tasks are queued once i ≤ learned + 1 + max_staleness,
//!           whatever the learners do; the learners do one thing at a time:
//!             Free ──i's rollouts done, i − 1 learned──▶ Learning(i) (learner tasks, then
//!                  (data.eval_prompts > 0) an evaluation task on rank 0) ──▶ Free, or
//!                  ──▶ Checkpointing after iterations that are multiples of checkpoint.every
//!                  (and the last one, and the SFT warm start with keep_warm_start):
//!                  Folder ─▶ Shards (one task per rank) ─▶ Manifest ─▶ Free
//!           Free after the last iteration (and its checkpoint) ─▶ Done (workers shut down)
//!  beside the phase: a stop asked for (SIGTERM: the iteration being learned finishes, a
//!           checkpoint is written ─▶ Stopped; before the rendezvous ─▶ Stopped at once)
//!  learner lost / learner task failed, `--local` with restarts left and a valid checkpoint:
//!           learners stopped and started again ─▶ WaitingForWorkers (resume from it)
//!  under Slurm (`--requeue`) with a checkpoint and requeues left ─▶ Stopped (exit 75: the job
//!           requeues and resumes)
//!  otherwise, and rollout tasks that failed too often, or no rollout worker left ──▶ Failed
//! ```
//!
//! The coordinator owns the data frontier: which problems each warm-start step and each
//! iteration uses is decided here and sent in the tasks.

use crate::eval::EvalPlan;
use crate::progress::Console;
use airlift_proto::checkpoint::{self as ckpt, DataFrontier, Manifest};
use airlift_proto::config::{Device, RunConfig};
use airlift_proto::gsm8k::ProblemSource;
use airlift_proto::pb::{self, coordinator_message::Kind as Msg, learner_task::Work};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
// tokio's clock: the same as std's in a run, and pausable in the scheduler tests (coordinator/tests/scheduler.rs).
pub use airlift_proto::{TaskId, WorkerId};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

mod checkpoint;
mod effects;
mod eval_job;
mod phases;
mod records;
mod reports;
mod tasks;
#[cfg(test)]
mod tests;
mod workers;

pub use airlift_proto::checkpoint::ResumePoint;
pub use checkpoint::PendingCheckpoint;
pub use effects::Effect;
use eval_job::EvalJob;
use tasks::{Task, TaskKind, TaskState};
use workers::{Worker, WorkerState};

/// A rollout task is retried this many times before the run fails (a bad task, not a lost
/// worker, would otherwise loop forever).
const MAX_ATTEMPTS: u32 = 3;

/// The warm starts' problems are train-split ids far from the RL prompts (which count up from
/// 0): SFT from here ...
const SFT_FIRST_ID: u64 = 50_000;
/// ... and the reward warm start from here.
const REWARD_WARM_FIRST_ID: u64 = 70_000;

/// The iteration number of an evaluation job's tasks and rows.
const EVAL_ITERATION: u64 = 1;

/// Where the run is. What only one phase has lives in it: the warm start's tasks and metrics,
/// what the learners do during the iterations (learn one, or write a checkpoint). (A requested
/// stop is beside the phase, in `RunState`: it can come in any phase and is acted on in two.)
#[derive(Debug, PartialEq)]
pub enum Phase {
    /// Until every learner has attached and the rendezvous is sent (also after a restart).
    WaitingForWorkers,
    /// The SFT or the reward warm start.
    WarmStart(WarmStart),
    /// The iterations (or an evaluation job's tasks), rollouts running ahead as far as the
    /// staleness bound allows; what the learners do meanwhile.
    Running(Learners),
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
            Phase::WarmStart(w) => format!("warm-start ({})", w.kind.name()),
            Phase::Running(Learners::Checkpointing(_)) => "running (checkpoint)".into(),
            Phase::Running(_) => "running".into(),
            Phase::Done => "done".into(),
            Phase::Stopped(why) => format!("stopped: {why}"),
            Phase::Failed(why) => format!("failed: {why}"),
        }
    }
}

/// What a lost learner (or a failed learner task) leads to.
#[derive(Debug)]
enum Recovery {
    /// The run fails, saying how to continue it (`--resume`).
    None,
    /// `--local`: the launcher starts learner processes of a new generation (it receives the
    /// number), which resume from the newest valid checkpoint.
    Respawn(mpsc::UnboundedSender<u32>),
    /// Under Slurm: the run stops at once and the coordinator exits with
    /// [`crate::EXIT_STOPPED`]; the job requeues itself and resumes from the newest checkpoint.
    Requeue,
}

/// The learners' rendezvous in one attempt (a learner restart starts a new one).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rendezvous {
    /// Waiting for every learner to attach.
    Pending,
    /// CUDA runs: rank 0 has its rendezvous and the others wait for its NCCL unique id.
    AwaitingNcclId,
    /// Every rank has its rendezvous: learners take tasks.
    Sent,
}

/// What the learners do during the iterations: one thing at a time.
#[derive(Debug, PartialEq)]
pub enum Learners {
    /// Nothing: waiting for the next iteration's rollouts.
    Free,
    /// The learner tasks of this iteration (then its held-out evaluation) run.
    Learning(u64),
    /// A checkpoint is being written (after the SFT warm start with
    /// `checkpoint.keep_warm_start`, after an iteration, or before a requested stop).
    Checkpointing(Box<PendingCheckpoint>),
}

/// Which warm start is running: the SFT one (behaviour cloning of the policy), then the reward's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmKind {
    Sft,
    Reward,
}

/// A warm start in progress: one task per rank, and the metrics of the ranks that reported.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmStart {
    pub kind: WarmKind,
    tasks: Vec<TaskId>,
    metrics: BTreeMap<u32, serde_json::Value>,
}

impl WarmKind {
    /// For status output.
    pub fn name(self) -> &'static str {
        match self {
            WarmKind::Sft => "sft",
            WarmKind::Reward => "reward",
        }
    }

    /// The learner task's work: `steps` steps over `prompt_ids`.
    fn work(self, prompt_ids: Vec<u64>, steps: u32) -> Work {
        let w = pb::WarmStart { prompt_ids, steps };
        match self {
            WarmKind::Sft => Work::SftWarmStart(w),
            WarmKind::Reward => Work::RewardWarmStart(w),
        }
    }
}

/// What the coordinator is running.
enum Job {
    Training,
    /// `coordinator eval`: no training; rollouts, score tasks and a report.
    Evaluation(Box<EvalJob>),
}

/// Outbound half of a worker's attached stream.
pub type Outbox = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

/// Per-iteration bookkeeping.
#[derive(Debug, Default)]
struct IterationState {
    rollout_tasks: Vec<TaskId>,
    /// How many of `rollout_tasks` are done (learning starts when all are).
    rollouts_done: usize,
    /// Prompt ids by learner rank.
    shards: Vec<Vec<u64>>,
    policy_version: u64,
    rollout_metrics: Vec<serde_json::Value>,
    learner_tasks: Vec<TaskId>,
    learner_metrics: BTreeMap<u32, serde_json::Value>,
    queued_at: Option<Instant>,
    learn_started: Option<Instant>,
    /// RL prompts `..prompt_end` are used once this iteration is learned.
    prompt_end: u64,
    /// The held-out evaluation after the learner tasks (rank 0), when `data.eval_prompts > 0`.
    eval_task: Option<TaskId>,
}

/// Events of the coordinator's loop.
pub enum Event {
    Register {
        req: pb::RegisterRequest,
        reply: tokio::sync::oneshot::Sender<Result<pb::RegisterResponse, Status>>,
    },
    Attach {
        worker_id: WorkerId,
        outbox: Outbox,
    },
    Message {
        worker_id: WorkerId,
        msg: pb::WorkerMessage,
    },
    Detached {
        worker_id: WorkerId,
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
    /// A checkpoint's folder is ready (or could not be made): its tasks can go out.
    /// `attempt`: the learner generation that asked ([`Effect::PrepareCheckpoint`]).
    CheckpointFolder {
        attempt: u32,
        iteration: u64,
        error: Option<String>,
    },
    /// A checkpoint's manifest is written (or could not be): the checkpoint exists.
    ManifestWritten {
        attempt: u32,
        error: Option<String>,
    },
    /// The checkpoints were verified (off the loop) after a learner failure: restart from the
    /// newest valid one.
    RestartPoint {
        why: String,
        /// The newest iteration the failed attempt had started.
        reached: u64,
        choice: Box<ckpt::Choice>,
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
    workers: BTreeMap<WorkerId, Worker>,
    /// Idle rollout workers, lowest id first (the dispatch order).
    idle: BTreeSet<WorkerId>,
    next_worker: u64,
    tasks: HashMap<TaskId, Task>,
    queue: VecDeque<TaskId>,
    next_task: u64,
    iterations: BTreeMap<u64, IterationState>,
    /// Iterations whose rollouts have been queued / learned.
    queued_upto: u64,
    learned_upto: u64,
    policy_version: u64,
    prompt_cursor: u64,
    /// RL prompts `..prompts_trained` have been trained on.
    prompts_trained: u64,
    /// The learners' rendezvous of this attempt.
    rendezvous: Rendezvous,
    /// The checkpoint the learners load at their rendezvous (resume and restarts).
    resume: Option<ResumePoint>,
    /// The newest checkpoint whose manifest is in place.
    pub last_checkpoint: Option<PathBuf>,
    config_hash: String,
    /// What a lost learner leads to (a restart by the launcher, a requeue by Slurm, or neither).
    recovery: Recovery,
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
    /// When the run last began waiting for its workers (its start, or a learner restart): they
    /// have `workers.register_timeout_ms` from then.
    waiting_since: Instant,
    /// When the last live rollout worker was lost, while none has registered since: the run
    /// fails once this is `workers.register_timeout_ms` old (no one would do its rollouts).
    rollouts_gone_since: Option<Instant>,
    /// Decided and not yet handed out: [`RunState::handle`] returns them.
    effects: Vec<Effect>,
    /// A training run, or an evaluation job with its progress.
    job: Job,
    /// What the run is doing, on the console (bar or plain lines).
    console: Console,
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
            policy_version: 0,
            prompt_cursor: 0,
            prompts_trained: 0,
            rendezvous: Rendezvous::Pending,
            resume: None,
            last_checkpoint: None,
            recovery: Recovery::None,
            learner_generation: 0,
            restarts: Vec::new(),
            draining: None,
            checkpointed: None,
            records: Vec::new(),
            started: Instant::now(),
            waiting_since: Instant::now(),
            rollouts_gone_since: None,
            effects: Vec::new(),
            job: Job::Training,
            console: Console::stderr(),
        }
    }

    /// Makes this an evaluation job: the learners load `point` (none: the configured models),
    /// then the problems of `plan` are sampled, scored and reported instead of training.
    pub fn evaluate(&mut self, plan: EvalPlan, point: Option<ResumePoint>) {
        self.policy_version = point.as_ref().map_or(0, |p| p.manifest.policy_version);
        self.resume = point;
        self.job = Job::Evaluation(Box::new(EvalJob {
            plan,
            queued: false,
            rollout_rank: HashMap::new(),
            expected_scores: 0,
            score_tasks: Vec::new(),
            report_task: None,
            scored: Vec::new(),
        }));
    }

    /// `--local` runs: learner losses restart the learners (through `respawn`, which receives
    /// the new generation number) from the newest checkpoint, up to `run.max_restarts` times.
    pub fn enable_restarts(&mut self, respawn: mpsc::UnboundedSender<u32>) {
        self.recovery = Recovery::Respawn(respawn);
    }

    /// Runs under Slurm (`--requeue`): a lost learner stops the run at once with
    /// [`crate::EXIT_STOPPED`], so that the job requeues itself and resumes from the newest
    /// checkpoint, up to `run.max_restarts` times over the run's life.
    pub fn enable_requeue(&mut self) {
        self.recovery = Recovery::Requeue;
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
        self.last_checkpoint = Some(point.dir.clone());
        self.checkpointed = Some(m.iteration);
        // Records: keep those of iterations the checkpoint covers (on a fresh coordinator, those
        // `load_records` read back from the file), and rewrite the files with exactly those.
        self.records
            .retain(|r| r["iteration"].as_u64().is_some_and(|i| i <= m.iteration) || r.get("restart").is_some());
        let rewind = Effect::Rewind {
            records: self.records.clone(),
            after: m.iteration,
            tensorboard: !self.evaluating(),
        };
        self.emit(rewind);
        self.resume = Some(point);
    }

    /// The records an earlier coordinator of this run appended to `<run>/metrics.jsonl`, read
    /// back before [`RunState::resume_from`] (which keeps those its checkpoint covers).
    pub fn load_records(&mut self, records: Vec<serde_json::Value>) {
        self.records = records;
    }

    /// Drops every worker's outbound stream (after the shutdown messages were queued), so the
    /// server can stop.
    pub fn close_streams(&mut self) {
        for w in self.workers.values_mut() {
            w.outbox = None;
        }
    }

    /// The iteration whose learner tasks run now, if one does.
    pub fn learning(&self) -> Option<u64> {
        match self.phase {
            Phase::Running(Learners::Learning(i)) => Some(i),
            _ => None,
        }
    }

    /// The checkpoint being written, if one is.
    fn checkpointing(&self) -> Option<&PendingCheckpoint> {
        match &self.phase {
            Phase::Running(Learners::Checkpointing(p)) => Some(p),
            _ => None,
        }
    }

    fn checkpointing_mut(&mut self) -> Option<&mut PendingCheckpoint> {
        match &mut self.phase {
            Phase::Running(Learners::Checkpointing(p)) => Some(p),
            _ => None,
        }
    }

    /// Whether the run has ended (done or failed).
    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Stopped(_) | Phase::Failed(_))
    }

    /// Applies one event; returns the effects it led to, to be carried out in order
    /// ([`crate::effects::Executor`]; what they report back are events for this method).
    pub fn handle(&mut self, ev: Event) -> Vec<Effect> {
        self.apply(ev);
        self.take_effects()
    }

    fn apply(&mut self, ev: Event) {
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
                        tracing::info!(worker_id = worker_id.0, role = ?w.role, host = %w.host, "worker attached");
                        if w.state == WorkerState::Registered {
                            self.set_state(worker_id, WorkerState::Idle);
                        }
                    }
                    _ => {
                        let _ = outbox.try_send(Err(Status::not_found(format!(
                            "worker {} is not registered (or was declared lost): register again",
                            worker_id.0
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
                            if self.rendezvous == Rendezvous::AwaitingNcclId && rank == Some(0) {
                                tracing::info!(bytes = id.unique_id.len(), "NCCL unique id from rank 0");
                                self.complete_rendezvous(id.unique_id, 1);
                                self.progress();
                            } else {
                                tracing::warn!(worker_id = worker_id.0, ?rank, "ignored an NCCL id that is not rank 0's answer to its rendezvous");
                            }
                        }
                        Some(pb::worker_message::Kind::Fatal(f)) => {
                            let (role, rank, host) = (w.role, w.rank, w.host.clone());
                            tracing::error!(worker_id = worker_id.0, ?role, host = %host, error = %f.error, "worker cannot go on");
                            if role == pb::Role::Learner {
                                // An error at start-up repeats on a restart: fail with it.
                                let who = rank.map_or(format!("learner {}", worker_id.0), |r| format!("learner rank {r}"));
                                self.fail(format!("{who} on {host}: {}", f.error));
                            } else {
                                self.lose(worker_id, &format!("it failed: {}", f.error));
                                if !self.workers.values().any(|w| w.live_as(pb::Role::Rollout)) {
                                    self.fail(format!("no rollout worker left: worker {} on {host}: {}", worker_id.0, f.error));
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
                let limit = self.cfg.workers.lost_after_ms.duration();
                let silent: Vec<WorkerId> = self
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
                self.check_rollouts_left();
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
            Event::CheckpointFolder { attempt, iteration, error } => {
                self.checkpoint_folder(attempt, iteration, error);
                self.progress();
            }
            Event::ManifestWritten { attempt, error } => {
                self.manifest_written(attempt, error);
                self.progress();
            }
            Event::RestartPoint { why, reached, choice } => {
                self.restart_from(why, reached, *choice);
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

    /// Moves the run forward as far as the current state allows.
    fn progress(&mut self) {
        if self.finished() {
            return;
        }
        if self.rendezvous != Rendezvous::Sent {
            if let Some(why) = self.draining.clone() {
                // Nothing was trained in this attempt: nothing to save.
                self.phase = Phase::Stopped(why.clone());
                self.shutdown_all(&format!("run stopped: {why}"));
                return;
            }
            self.try_rendezvous();
            if self.rendezvous != Rendezvous::Sent {
                return;
            }
        }
        if matches!(self.phase, Phase::WarmStart(_)) {
            return;
        }
        if self.evaluating() {
            return self.eval_progress();
        }
        if let Some(why) = self.draining.clone() {
            if self.phase != Phase::Running(Learners::Free) {
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
        if self.learned_upto >= self.cfg.run.iterations && self.phase == Phase::Running(Learners::Free) {
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
}
