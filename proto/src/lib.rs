//! The contract between airlift processes.
//!
//! Owns what the coordinator and the workers must agree on: the protocol version, the gRPC
//! service (`proto/airlift.proto`, generated code committed under `src/generated/`), typed ids,
//! the run config, the call metadata (version + shared token) and its checks, and the Arrow
//! schema of trajectory records, and the sharded checkpoint format. Roles depend on this crate and never on each other.

pub mod auth;
pub mod checkpoint;
pub mod config;
pub mod conn;
pub mod gsm8k;
pub mod host;
pub mod ids;
pub mod processbench;
pub mod tls;
pub mod trajectory;

/// Generated gRPC / protobuf code (do not edit; see `build.rs`).
#[rustfmt::skip]
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!("generated/airlift.v1.rs");
}

pub use ids::{PolicyVersion, PromptId, TaskId, WorkerId};

/// Makes every file and folder this process creates private to its user (mode 0600 / 0700):
/// checkpoints, metrics, trajectories, logs and the token file of a run hold the run's data and
/// its secret. `AIRLIFT_UMASK` (octal, e.g. `022` for world-readable outputs) overrides the
/// default `077`. Call first thing in `main`, before any thread starts.
pub fn private_files() -> Result<(), String> {
    let v = std::env::var("AIRLIFT_UMASK").unwrap_or_else(|_| "077".into());
    let mask = u32::from_str_radix(v.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("AIRLIFT_UMASK = `{v}`: expected an octal file-mode mask such as 077 or 022"))?;
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
    Ok(())
}

/// Version of the wire protocol. Every RPC carries it; a peer with another version is refused
/// with a message naming both versions. Bump it on any incompatible change to the contract
/// (2: checkpoint shards reported typed, `TaskReport.shard`; learner tasks a `oneof` of kinds).
pub const PROTOCOL_VERSION: u32 = 2;

impl pb::LearnerTask {
    /// A learner task of one kind.
    pub fn new(iteration: u64, work: pb::learner_task::Work) -> Self {
        pb::LearnerTask {
            iteration,
            work: Some(work),
            ..Default::default()
        }
    }

    /// The task's kind, for logs and error messages.
    pub fn kind_name(&self) -> &'static str {
        use pb::learner_task::Work;
        match &self.work {
            Some(Work::SftWarmStart(_)) => "SFT warm start",
            Some(Work::RewardWarmStart(_)) => "reward warm start",
            Some(Work::IterationWork(_)) => "iteration",
            Some(Work::Checkpoint(_)) => "checkpoint",
            Some(Work::HeldOut(_)) => "held-out evaluation",
            Some(Work::EvalScore(_)) => "evaluation scoring",
            Some(Work::EvalReport(_)) => "evaluation report",
            None => "unknown (no work)",
        }
    }

    /// The problems the task uses (none for a checkpoint).
    pub fn prompt_ids(&self) -> &[u64] {
        use pb::learner_task::Work;
        match &self.work {
            Some(Work::SftWarmStart(w) | Work::RewardWarmStart(w)) => &w.prompt_ids,
            Some(Work::IterationWork(w)) => &w.prompt_ids,
            Some(Work::HeldOut(w)) => &w.prompt_ids,
            Some(Work::EvalScore(w)) => &w.prompt_ids,
            Some(Work::EvalReport(w)) => &w.prompt_ids,
            Some(Work::Checkpoint(_)) | None => &[],
        }
    }
}
