//! Checkpoints: the folder made, one task per learner rank, then the manifest written by the
//! coordinator (the folder and the manifest by the effect executor, off the loop).
//!
//! ```text
//!  Folder ──Event::CheckpointFolder──▶ Shards (one task per rank) ──all reported──▶
//!  Manifest ──Event::ManifestWritten──▶ (done: last_checkpoint, then old ones pruned)
//! ```

use super::*;

/// Where a checkpoint being written is.
#[derive(Debug, PartialEq)]
pub enum Stage {
    /// Its folder is being made ([`Effect::PrepareCheckpoint`]).
    Folder,
    /// Its tasks run on the learners.
    Shards,
    /// Its manifest is being written ([`Effect::WriteManifest`]).
    Manifest,
}

/// A checkpoint being written: one task per learner rank, then the manifest.
#[derive(Debug, PartialEq)]
pub struct PendingCheckpoint {
    pub(super) iteration: u64,
    pub(super) dir: PathBuf,
    pub(super) stage: Stage,
    pub(super) tasks: Vec<TaskId>,
    pub(super) reports: BTreeMap<u32, ckpt::wire::Shard>,
    pub(super) policy_version: u64,
    pub(super) data: DataFrontier,
    pub(super) started: Instant,
}

impl RunState {
    /// Whether a checkpoint follows iteration `i` (0 = the warm starts).
    pub(super) fn checkpoint_after(&self, i: u64) -> bool {
        let c = &self.cfg.checkpoint;
        (c.every > 0 && i.is_multiple_of(c.every)) || (c.at_end && i == self.cfg.run.iterations)
    }

    /// Starts a checkpoint of the state after iteration `iteration`: its folder first (a
    /// folder left by a failed attempt is not a checkpoint, having no manifest: it is made
    /// afresh), then ([`RunState::checkpoint_folder`]) a task for every rank.
    pub(super) fn start_checkpoint(&mut self, iteration: u64) {
        debug_assert_eq!(self.phase, Phase::Running(Learners::Free), "a checkpoint starts when the learners are free");
        let dir = ckpt::step_dir(&self.run_dir, iteration);
        let by_rank = self.learners_by_rank();
        let mut tasks = Vec::new();
        for _ in &by_rank {
            let t = self.new_task(
                iteration,
                TaskKind::Learner(pb::LearnerTask::new(
                    iteration,
                    Work::Checkpoint(pb::WriteCheckpoint {
                        dir: dir.display().to_string(),
                    }),
                )),
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
        tracing::info!(iteration, dir = %dir.display(), "checkpoint");
        let attempt = self.learner_generation;
        self.emit(Effect::PrepareCheckpoint {
            attempt,
            iteration,
            dir: dir.clone(),
        });
        self.phase = Phase::Running(Learners::Checkpointing(Box::new(PendingCheckpoint {
            iteration,
            dir,
            stage: Stage::Folder,
            tasks,
            reports: BTreeMap::new(),
            policy_version: self.policy_version,
            data,
            started: Instant::now(),
        })));
    }

    /// The folder of the checkpoint being written is ready: every rank gets its task.
    pub(super) fn checkpoint_folder(&mut self, attempt: u32, iteration: u64, error: Option<String>) {
        let ours = |p: &PendingCheckpoint| p.iteration == iteration && p.stage == Stage::Folder;
        if attempt != self.learner_generation || !self.checkpointing().is_some_and(ours) {
            // An earlier attempt's (a learner restart came between).
            return;
        }
        let p = self.checkpointing_mut().unwrap();
        if let Some(e) = error {
            let why = format!("{}: cannot create the checkpoint folder: {e}", p.dir.display());
            return self.fail(why);
        }
        p.stage = Stage::Shards;
        let tasks = p.tasks.clone();
        for (t, id) in tasks.into_iter().zip(self.learners_by_rank()) {
            self.start(t, id);
        }
    }

    /// All ranks wrote their shards: the manifest is written (atomically; then the checkpoint
    /// exists) off the loop.
    pub(super) fn finish_checkpoint(&mut self) {
        let Some(p) = self.checkpointing_mut() else { return };
        p.stage = Stage::Manifest;
        let p = self.checkpointing().unwrap();
        let built = (|| -> Result<Manifest, String> {
            let (_, layouts, steps) = p.reports.get(&0).ok_or("rank 0 reported no shard")?;
            let mut files = Vec::new();
            for (rank, (f, their_layouts, their_steps)) in &p.reports {
                if f.rank != *rank || their_steps != steps || their_layouts != layouts {
                    return Err(format!(
                        "rank {rank} reported the shard of rank {} with optimizer steps {their_steps:?} (rank 0: {steps:?}){}",
                        f.rank,
                        if their_layouts != layouts { " and other layouts than rank 0's" } else { "" }
                    ));
                }
                files.push(f.clone());
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
                layouts: layouts.clone(),
                optimizer_steps: steps.clone(),
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
        let manifest = match built {
            Ok(m) => Box::new(m),
            Err(e) => return self.fail(format!("checkpoint {}: {e}", p.dir.display())),
        };
        let (attempt, dir) = (self.learner_generation, p.dir.clone());
        self.emit(Effect::WriteManifest { attempt, dir, manifest });
    }

    /// The manifest of the checkpoint being written is in place: the checkpoint exists, and old
    /// ones are deleted (off the loop).
    pub(super) fn manifest_written(&mut self, attempt: u32, error: Option<String>) {
        let ours = |p: &PendingCheckpoint| p.stage == Stage::Manifest;
        if attempt != self.learner_generation || !self.checkpointing().is_some_and(ours) {
            return;
        }
        let Phase::Running(Learners::Checkpointing(p)) = std::mem::replace(&mut self.phase, Phase::Running(Learners::Free)) else {
            unreachable!("checked above")
        };
        if let Some(e) = error {
            return self.fail(format!("checkpoint: {e}"));
        }
        let mb = p.reports.values().map(|(f, _, _)| f.bytes).sum::<u64>() as f64 / 1e6;
        let secs = p.started.elapsed().as_secs_f64();
        tracing::info!(dir = %p.dir.display(), iteration = p.iteration, mb = format!("{mb:.1}"), secs = format!("{secs:.2}"), "checkpoint written");
        let (keep, keep_warm_start) = (self.cfg.checkpoint.keep, self.cfg.checkpoint.keep_warm_start);
        self.emit(Effect::Prune { keep, keep_warm_start });
        self.last_checkpoint = Some(p.dir);
        self.checkpointed = Some(p.iteration);
    }
}
