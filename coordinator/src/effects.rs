//! The doing half of the coordinator: carries out the [`Effect`]s the run state decided, in
//! the order it decided them, on one thread of its own, so that the event loop (heartbeats,
//! dispatch) never waits on a disk. What the run waits for comes back as an [`Event`].

use crate::state::{Effect, Event};
use crate::tensorboard::EventWriter;
use airlift_proto::checkpoint as ckpt;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Carries out effects for the run in `run_dir`.
pub struct Executor {
    run_dir: PathBuf,
    /// The records in `metrics.jsonl` (TensorBoard's file is rewritten from them when it has to
    /// be opened again).
    records: Vec<serde_json::Value>,
    /// `<run>/tensorboard/`'s event file (training runs; opened at the first record or a rewind).
    tensorboard: Option<EventWriter>,
}

impl Executor {
    pub fn new(run_dir: PathBuf) -> Self {
        Executor {
            run_dir,
            records: Vec::new(),
            tensorboard: None,
        }
    }

    /// Carries out one effect; returns the event the loop must hear, if the run waits for it.
    /// Errors the run can go on with (a record that could not be appended) are logged.
    pub fn run(&mut self, effect: Effect) -> Option<Event> {
        match effect {
            Effect::Record { rec, tensorboard } => {
                let path = self.run_dir.join("metrics.jsonl");
                let r = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| writeln!(f, "{rec}"));
                if let Err(e) = r {
                    tracing::error!(path = %path.display(), error = %e, "cannot append metrics");
                }
                if tensorboard {
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
                None
            }
            Effect::Rewind { records, after, tensorboard } => {
                let path = self.run_dir.join("metrics.jsonl");
                let text: String = records.iter().map(|r| format!("{r}\n")).collect();
                if let Err(e) = std::fs::write(&path, text) {
                    tracing::error!(path = %path.display(), error = %e, "cannot rewrite metrics");
                }
                self.records = records;
                if tensorboard {
                    self.rewrite_tensorboard();
                }
                let removed = remove_trajectories_after(&self.run_dir.join("trajectories"), after);
                if removed > 0 {
                    tracing::info!(
                        files = removed,
                        after_iteration = after,
                        "removed trajectory files of iterations the checkpoint does not cover (they are run again)"
                    );
                }
                None
            }
            Effect::PrepareCheckpoint { attempt, iteration, dir } => {
                let _ = std::fs::remove_dir_all(&dir);
                let error = std::fs::create_dir_all(&dir).err().map(|e| e.to_string());
                Some(Event::CheckpointFolder { attempt, iteration, error })
            }
            Effect::WriteManifest { attempt, dir, manifest } => {
                let error = ckpt::write_manifest(&dir, &manifest).err().map(|e| e.to_string());
                Some(Event::ManifestWritten { attempt, error })
            }
            Effect::Prune { keep, keep_warm_start } => {
                for old in ckpt::prune(&self.run_dir, keep as usize, keep_warm_start) {
                    tracing::info!(dir = %old.display(), "deleted an old checkpoint (checkpoint.keep = {keep})");
                }
                None
            }
            Effect::FindRestartPoint { why, reached, config_hash } => {
                let choice = ckpt::newest_valid(&self.run_dir, Some(&config_hash));
                Some(Event::RestartPoint {
                    why,
                    reached,
                    choice: Box::new(choice),
                })
            }
        }
    }

    /// `<run>/tensorboard/` afresh from the records kept.
    fn rewrite_tensorboard(&mut self) {
        match EventWriter::rewrite(&self.run_dir, &self.records) {
            Ok(w) => self.tensorboard = Some(w),
            Err(e) => {
                tracing::error!(dir = %self.run_dir.join("tensorboard").display(), error = %e, "cannot write TensorBoard events");
                self.tensorboard = None;
            }
        }
    }

    /// Runs the executor on a blocking thread: effects from the returned sender are carried out
    /// in order, and the events they answer go to `events` (the loop's queue). The thread ends
    /// once the sender is dropped and every effect sent before is done: await the handle to know
    /// the files are written.
    pub fn spawn(mut self, events: mpsc::Sender<Event>) -> (mpsc::UnboundedSender<Effect>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Effect>();
        let handle = tokio::task::spawn_blocking(move || {
            while let Some(effect) = rx.blocking_recv() {
                if let Some(ev) = self.run(effect) {
                    // The loop may have ended (the run finished): nothing waits for this then.
                    let _ = events.blocking_send(ev);
                }
            }
        });
        (tx, handle)
    }
}

/// The records an earlier coordinator appended to `<run>/metrics.jsonl` (none if it has none);
/// a line that is not JSON (cut off by a crash) is left out.
pub fn read_records(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

/// Removes `trajectories/iter-NNNNNN*` files of iterations after `after`; returns how many.
fn remove_trajectories_after(dir: &Path, after: u64) -> usize {
    let mut removed = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let it = name.strip_prefix("iter-").and_then(|r| r.get(..6)).and_then(|n| n.parse::<u64>().ok());
        if it.is_some_and(|i| i > after) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
