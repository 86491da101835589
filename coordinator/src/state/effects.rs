//! What the state decides and the loop does: file writes and slow checks, as values.
//!
//! [`RunState::handle`] never touches the disk. It returns the [`Effect`]s an event led to, in
//! order; the coordinator hands them to one executor thread ([`crate::effects`]) that carries
//! them out in that order, off the loop, and reports the ones the run waits for back as an
//! [`Event`] (a checkpoint's folder made, its manifest written, the checkpoints verified).
//! Tests of the state alone run the same executor inline.

use super::*;

/// One thing to do outside the loop.
#[derive(Debug)]
pub enum Effect {
    /// Append `rec` to `<run>/metrics.jsonl` and, with `tensorboard`, to the TensorBoard events.
    Record { rec: serde_json::Value, tensorboard: bool },
    /// A resume or a restart from the checkpoint of iteration `after`: rewrite
    /// `<run>/metrics.jsonl` (and, with `tensorboard`, `<run>/tensorboard/`) with exactly
    /// `records`, and remove the trajectory files of the iterations after it (they run again).
    Rewind {
        records: Vec<serde_json::Value>,
        after: u64,
        tensorboard: bool,
    },
    /// Remove what a failed attempt left in a checkpoint's folder and create it afresh;
    /// answered by [`Event::CheckpointFolder`].
    PrepareCheckpoint { attempt: u32, iteration: u64, dir: PathBuf },
    /// Write a checkpoint's manifest (atomically: the checkpoint exists from then on); answered
    /// by [`Event::ManifestWritten`].
    WriteManifest { attempt: u32, dir: PathBuf, manifest: Box<Manifest> },
    /// Delete old checkpoints beyond `checkpoint.keep` (GBs).
    Prune { keep: u32, keep_warm_start: bool },
    /// Verify every checkpoint (SHA-256 of every shard, GBs) and choose the newest valid one to
    /// restart from after a learner failure; answered by [`Event::RestartPoint`].
    FindRestartPoint { why: String, reached: u64, config_hash: String },
}

impl RunState {
    /// Queues an effect; [`RunState::handle`] returns the queue.
    pub(super) fn emit(&mut self, e: Effect) {
        self.effects.push(e);
    }

    /// The effects decided so far (by [`RunState::resume_from`] before the loop starts, say),
    /// to be carried out in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }
}
