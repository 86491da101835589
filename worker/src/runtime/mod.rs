//! The worker process: registers with the coordinator, keeps one attached stream (tasks down,
//! heartbeats up), and runs the rollout or learner role.
//!
//! Threads: a tokio runtime carries the gRPC stream, the heartbeat timer and (learners) the
//! Flight server; the role's compute loop runs on the calling thread and blocks on the runtime
//! only for its own RPCs, so heartbeats keep flowing during long generation or training steps.

pub mod bench_flight;
pub mod data;
pub mod flight;
mod learner;
mod rollout;

use crate::airl::iteration::AirlConfig;
use airlift_proto::auth::Stamp;
use airlift_proto::config::{AdvantageForm, BehaviourLogprobs, Device, RewardSource, RunConfig};
use airlift_proto::pb::{self, coordinator_client::CoordinatorClient, coordinator_message::Kind as Msg, worker_message};
use std::time::Duration;
use tokio::runtime::Runtime;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Errors of a worker process.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("coordinator {addr}: {what}")]
    Connect { addr: String, what: String },
    #[error("coordinator refused the call: {0}")]
    Refused(String),
    /// The stream to the coordinator ended without its shutdown: the coordinator, its node or
    /// the link to it is gone (or it dropped this worker as lost).
    #[error("lost the coordinator: {0}")]
    Lost(String),
    #[error("{0}")]
    Other(String),
}

impl From<tonic::Status> for WorkerError {
    fn from(s: tonic::Status) -> Self {
        WorkerError::Refused(format!("{} ({:?})", s.message(), s.code()))
    }
}

/// The role of a worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Rollout,
    Learner,
}

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub role: Role,
    /// Coordinator URL, e.g. `http://10.0.0.1:50051`.
    pub coordinator: String,
    /// Learners: the rank to ask for.
    pub rank: u32,
    /// Address this worker's servers bind to and advertise (learners).
    pub host: String,
    /// Run token (else none).
    pub token: Option<String>,
}

pub(crate) type Client = CoordinatorClient<InterceptedService<Channel, Stamp>>;

/// Delay between connection attempts while the coordinator is not up yet (or restarting).
const CONNECT_BACKOFF: Duration = Duration::from_millis(250);
/// How long a worker keeps trying to reach its coordinator before giving up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

async fn connect(addr: &str, stamp: Stamp) -> Result<Client, WorkerError> {
    let start = std::time::Instant::now();
    // https:// and the job's certificates when AIRLIFT_TLS is set (proto/src/tls.rs).
    let endpoint = airlift_proto::tls::endpoint(addr).map_err(|what| WorkerError::Connect { addr: addr.into(), what })?;
    loop {
        match endpoint.connect().await {
            Ok(ch) => return Ok(CoordinatorClient::with_interceptor(ch, stamp).max_decoding_message_size(64 << 20)),
            Err(e) if start.elapsed() < CONNECT_PATIENCE => {
                tracing::debug!(error = %e, "coordinator not reachable yet, retrying");
                tokio::time::sleep(CONNECT_BACKOFF).await;
            }
            Err(e) => {
                return Err(WorkerError::Connect {
                    addr: addr.into(),
                    what: format!("not reachable for {} s: {e}", CONNECT_PATIENCE.as_secs()),
                })
            }
        }
    }
}

/// What registration gave the worker.
pub(crate) struct Session {
    pub rt: Runtime,
    pub client: Client,
    pub worker_id: u64,
    pub config: RunConfig,
    pub run_dir: std::path::PathBuf,
    pub stamp: Stamp,
    /// Coordinator messages (the attached stream's inbound side), then why the stream ended
    /// if it ended without the coordinator's shutdown; read with [`Session::next_message`].
    inbox: std::sync::mpsc::Receiver<Result<Msg, WorkerError>>,
    /// The attached stream's outbound side (heartbeats go up it too).
    pub up: tokio::sync::mpsc::Sender<pb::WorkerMessage>,
}

/// What a finished task reports: the rows it produced, its metrics for the run's records (JSON),
/// and the typed result the coordinator acts on (e.g. a checkpoint shard).
#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: u64,
    pub metrics: String,
    pub result: Option<pb::task_report::Result>,
}

impl Session {
    /// Sends one message up the attached stream.
    pub fn send_up(&self, kind: worker_message::Kind) -> Result<(), WorkerError> {
        let m = pb::WorkerMessage {
            worker_id: self.worker_id,
            kind: Some(kind),
        };
        let up = self.up.clone();
        self.rt
            .block_on(async move { up.send(m).await })
            .map_err(|_| WorkerError::Other("the stream to the coordinator is closed".into()))
    }

    /// The next message from the coordinator. An error when the stream to it ended without its
    /// shutdown, so that the worker exits with a failure status (a coordinator that ends a run
    /// always says so first).
    pub fn next_message(&self) -> Result<Msg, WorkerError> {
        match self.inbox.recv() {
            Ok(m) => m,
            Err(_) => Err(WorkerError::Lost("the stream to the coordinator ended".into())),
        }
    }

    /// Tells the coordinator this worker cannot go on and why (it reports the reason instead of
    /// a lost stream), giving the message a moment to leave before the process exits. A worker
    /// that lost its coordinator has no one to tell.
    pub fn fatal(&self, e: &WorkerError) {
        if matches!(e, WorkerError::Lost(_)) {
            return;
        }
        if self.send_up(worker_message::Kind::Fatal(pb::Fatal { error: e.to_string() })).is_ok() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A progress callback for task `task_id` (`done` of `total` units, with the headline
    /// numbers of the unit just done), sent up the stream without waiting; the coordinator
    /// shows it on its console.
    pub fn progress(&self, task_id: u64) -> impl Fn(u32, u32, &[(&str, f64)]) + use<> {
        let (up, worker_id) = (self.up.clone(), self.worker_id);
        move |done, total, values| {
            let values = values.iter().filter(|(_, v)| v.is_finite()).map(|&(k, v)| (k.to_string(), v)).collect();
            let m = pb::WorkerMessage {
                worker_id,
                kind: Some(worker_message::Kind::Progress(pb::Progress { task_id, done, total, values })),
            };
            let _ = up.try_send(m);
        }
    }

    /// Reports a task's outcome.
    pub fn report(&mut self, task_id: u64, result: Result<Outcome, String>) -> Result<(), WorkerError> {
        let (ok, error, out) = match result {
            Ok(out) => (true, String::new(), out),
            Err(e) => (false, e, Outcome::default()),
        };
        let req = pb::TaskReport {
            worker_id: self.worker_id,
            task_id,
            ok,
            error,
            rows: out.rows,
            metrics_json: out.metrics,
            result: out.result,
        };
        let mut client = self.client.clone();
        match self
            .rt
            .block_on(async move { tokio::time::timeout(REPORT_TIMEOUT, client.report_task(req)).await })
        {
            Ok(answer) => answer.map(|_| ()).map_err(WorkerError::from),
            Err(_) => Err(WorkerError::Connect {
                addr: "(this worker's coordinator)".into(),
                what: format!("reporting task {task_id}: no answer within {} s", REPORT_TIMEOUT.as_secs()),
            }),
        }
    }
}

/// Registers, attaches and returns the session. `extra` fills the learner-only fields.
pub(crate) fn register(opts: &WorkerOptions, mut req: pb::RegisterRequest, rt: Runtime) -> Result<Session, WorkerError> {
    let stamp = Stamp::new(opts.token.clone());
    req.role = match opts.role {
        Role::Rollout => pb::Role::Rollout as i32,
        Role::Learner => pb::Role::Learner as i32,
    };
    req.host = opts.host.clone();
    req.pid = std::process::id();
    req.node = node_name();
    let client = rt.block_on(connect(&opts.coordinator, stamp.clone()))?;
    let resp = rt.block_on({
        let mut c = client.clone();
        async move { c.register(req).await }
    })?;
    let resp = resp.into_inner();
    let config = RunConfig::from_toml(&resp.config_toml).map_err(|e| WorkerError::Other(format!("config from the coordinator: {e}")))?;
    let worker_id = resp.worker_id;
    tracing::info!(worker_id, role = ?opts.role, "registered");

    // The attached stream: heartbeats up, messages down (forwarded to a std channel).
    let (up_tx, up_rx) = tokio::sync::mpsc::channel::<pb::WorkerMessage>(16);
    let (down_tx, down_rx) = std::sync::mpsc::channel::<Result<Msg, WorkerError>>();
    let heartbeat = config.workers.heartbeat_ms.duration();
    let mut c = client.clone();
    let up = up_tx.clone();
    rt.spawn(async move {
        let _ = up_tx
            .send(pb::WorkerMessage {
                worker_id,
                kind: Some(worker_message::Kind::Heartbeat(pb::Heartbeat {})),
            })
            .await;
        let hb = up_tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat);
            loop {
                tick.tick().await;
                let m = pb::WorkerMessage {
                    worker_id,
                    kind: Some(worker_message::Kind::Heartbeat(pb::Heartbeat {})),
                };
                if hb.send(m).await.is_err() {
                    break;
                }
            }
        });
        match c.attach(tokio_stream::wrappers::ReceiverStream::new(up_rx)).await {
            Ok(resp) => {
                let mut s = resp.into_inner();
                loop {
                    match s.message().await {
                        Ok(Some(m)) => {
                            if let Some(k) = m.kind {
                                if down_tx.send(Ok(k)).is_err() {
                                    break;
                                }
                            }
                        }
                        Ok(None) => {
                            let _ = down_tx.send(Err(WorkerError::Lost("the coordinator closed the stream without a shutdown".into())));
                            exit_if_stuck();
                            break;
                        }
                        Err(e) => {
                            let _ = down_tx.send(Err(WorkerError::Lost(format!("the stream to the coordinator broke: {}", e.message()))));
                            exit_if_stuck();
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                // Before the coordinator's first answer: it died or was cut off while the stream
                // opened, or it refused the stream.
                let _ = down_tx.send(Err(WorkerError::Lost(format!(
                    "opening the stream to the coordinator: {} ({:?})",
                    e.message(),
                    e.code()
                ))));
            }
        }
    });
    let run_dir = std::path::PathBuf::from(resp.run_dir);
    Ok(Session {
        rt,
        client,
        worker_id,
        config,
        run_dir,
        stamp,
        inbox: down_rx,
        up,
    })
}

/// How long a task report may wait for the coordinator's answer (it answers at once; a report
/// unanswered this long went to a coordinator that is gone or cut off).
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a worker may go on after its stream to the coordinator ended before it exits anyway.
const EXIT_AFTER_STREAM_END: Duration = Duration::from_secs(60);

/// The stream to the coordinator is gone (the run ended, or the coordinator's node or link did):
/// the compute loop exits when it next reads its messages, but it may be blocked (a collective
/// whose peer vanished without closing its socket); after [`EXIT_AFTER_STREAM_END`] the process
/// exits anyway, so that no worker outlives its coordinator on any node.
fn exit_if_stuck() {
    tokio::spawn(async {
        tokio::time::sleep(EXIT_AFTER_STREAM_END).await;
        tracing::error!(
            "the stream to the coordinator ended {} s ago and this worker has not stopped (blocked in a collective or a transfer?): exiting",
            EXIT_AFTER_STREAM_END.as_secs()
        );
        std::process::exit(1);
    });
}

/// The machine this worker runs on, as a cluster user names it: Slurm's node name under Slurm,
/// else the hostname.
fn node_name() -> String {
    if let Ok(n) = std::env::var("SLURMD_NODENAME") {
        if !n.is_empty() {
            return n;
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Runs a worker process until the coordinator shuts it down.
pub fn run(opts: WorkerOptions) -> Result<(), WorkerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| WorkerError::Other(format!("tokio runtime: {e}")))?;
    match opts.role {
        Role::Rollout => rollout::run(&opts, rt),
        Role::Learner => learner::run(&opts, rt),
    }
}

/// The AIRL settings of a run config (`pad_id`: the policy's padding token).
pub fn airl_config(cfg: &RunConfig, pad_id: i64) -> AirlConfig {
    AirlConfig {
        discriminator: cfg.reward.discriminator,
        label_smoothing: cfg.reward.label_smoothing,
        class_balance: cfg.reward.class_balance,
        reward_temperature: cfg.reward.temperature,
        reward_clip: cfg.reward.clip,
        outcome_weight: cfg.reward.outcome_weight,
        disc_steps: cfg.reward.disc_steps as usize,
        gamma: cfg.policy.gamma,
        expert_in_group: cfg.policy.expert_in_group,
        sequence_advantage: cfg.policy.advantage == AdvantageForm::Sequence,
        grade_scores: cfg.policy.reward_source == RewardSource::Grade,
        clip_eps: cfg.policy.clip_eps,
        kl_coef: cfg.policy.kl_coef,
        sft_coef: cfg.policy.sft_coef,
        policy_steps: cfg.policy.steps as usize,
        micro_batch: cfg.policy.micro_batch as usize,
        pack_prefixes: cfg.policy.pack_prefixes.unwrap_or(cfg.workers.device != Device::Cuda),
        pad_id,
        ignore_corrupted_prefix: cfg.reward.ignore_corrupted_prefix,
        ignore_corrupted_suffix: cfg.reward.ignore_corrupted_suffix,
        wrong_answer_line_weight: cfg.wrong_answer_line_weight() as f32,
        learner_behaviour: cfg.policy.behaviour_logprobs == BehaviourLogprobs::Learner,
        correct_policy_samples: cfg.reward.correct_policy_samples,
    }
}

/// The libtorch kind this worker computes `dtype` (config key `key`) in: fp32 for bf16 on a CPU
/// that multiplies bf16 slowly (`airlift_proto::host`), with a warning in the worker's log.
pub(crate) fn compute_kind(cfg: &RunConfig, dtype: airlift_proto::config::Dtype, key: &str) -> tch::Kind {
    use airlift_proto::host;
    let (d, note) = host::cpu_compute_kind(cfg, dtype, key, host::cpu_bf16_slow(), host::force_cpu_bf16());
    if let Some(note) = note {
        tracing::warn!("{note}");
    }
    match d {
        airlift_proto::config::Dtype::Bf16 => tch::Kind::BFloat16,
        airlift_proto::config::Dtype::Fp32 => tch::Kind::Float,
    }
}

/// What a worker reports as its device when it registers: `cuda:0` where libtorch sees a GPU.
/// Sets libtorch's intra-op thread count for this worker process and returns it, with where it
/// came from: `workers.threads` when set; otherwise `OMP_NUM_THREADS` when the user set it
/// (libtorch reads it itself); otherwise the CPUs this process may run on — its CPU affinity
/// and cgroup quota (`available_parallelism`), capped by Slurm's `SLURM_CPUS_PER_TASK`.
/// libtorch's own default (libgomp's) follows the affinity mask (`taskset -c 0` gives 1 thread
/// here) but not a cgroup CPU quota: a container limited to 4 CPUs of a 64-core node would start
/// 64 threads that fight over 4.
pub(crate) fn set_threads(cfg: &RunConfig) -> (i32, &'static str) {
    if cfg.workers.threads > 0 {
        let n = cfg.workers.threads.min(i32::MAX as u32) as i32;
        tch::set_num_threads(n);
        return (n, "workers.threads");
    }
    if std::env::var_os("OMP_NUM_THREADS").is_some() {
        return (tch::get_num_threads(), "OMP_NUM_THREADS");
    }
    let (n, from) = cpus_allowed();
    tch::set_num_threads(n);
    (n, from)
}

/// The CPUs this process may use, and what decided it.
pub fn cpus_allowed() -> (i32, &'static str) {
    let mine = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(i32::MAX as usize) as i32;
    let slurm = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|&n| n > 0);
    match slurm {
        Some(s) if s < mine => (s, "SLURM_CPUS_PER_TASK"),
        _ => (mine, "CPU affinity"),
    }
}

pub(crate) fn local_device_name() -> String {
    if tch::Cuda::is_available() {
        "cuda:0".into()
    } else {
        "cpu".into()
    }
}

/// The device of this worker's models: `workers.device = "cuda"` takes GPU 0 (one GPU per worker
/// process; set CUDA_VISIBLE_DEVICES per process).
pub(crate) fn device(cfg: &RunConfig) -> Result<tch::Device, WorkerError> {
    if cfg.workers.device == Device::Cuda {
        if !tch::Cuda::is_available() {
            return Err(WorkerError::Other(format!(
                "workers.device = \"cuda\" but libtorch sees no CUDA device on this host ({})",
                crate::cuda::support()
            )));
        }
        return Ok(tch::Device::Cuda(0));
    }
    Ok(tch::Device::Cpu)
}

/// FNV-1a over the bytes of f32 values: a cheap fingerprint for "bitwise identical".
pub fn fingerprint(values: &[f32]) -> String {
    let h = values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

/// Flat fp32 values of every trainable variable of `vs`, in the flat order of
/// [`crate::train::flat`].
pub fn flat_params(vs: &tch::nn::VarStore) -> Vec<f32> {
    crate::train::flat::values(vs)
}

/// Copies flat values (that order) into the variables of `vs`, converting to their kinds.
pub fn load_flat_params(vs: &tch::nn::VarStore, flat: &[f32]) -> Result<(), WorkerError> {
    crate::train::flat::load_values(vs, flat).map_err(WorkerError::Other)
}
