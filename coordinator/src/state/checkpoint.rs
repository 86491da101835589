//! Checkpoints: one task per learner rank, then the manifest written by the coordinator.

use super::*;

/// A checkpoint being written: one task per learner rank, then the manifest.
#[derive(Debug)]
pub(super) struct PendingCheckpoint {
    pub(super) iteration: u64,
    pub(super) dir: PathBuf,
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

    /// Sends every rank a checkpoint task for the state after iteration `iteration`.
    pub(super) fn start_checkpoint(&mut self, iteration: u64) {
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
    pub(super) fn finish_checkpoint(&mut self) {
        let Some(p) = self.checkpointing.take() else { return };
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
        // Deleting old checkpoints (GBs) runs off the loop when it can.
        let (run_dir, keep, keep_warm) = (self.run_dir.clone(), self.cfg.checkpoint.keep, self.cfg.checkpoint.keep_warm_start);
        let prune = move || {
            for old in ckpt::prune(&run_dir, keep as usize, keep_warm) {
                tracing::info!(dir = %old.display(), "deleted an old checkpoint (checkpoint.keep = {keep})");
            }
        };
        if self.loopback.is_some() {
            tokio::task::spawn_blocking(prune);
        } else {
            prune();
        }
        self.last_checkpoint = Some(p.dir);
        self.checkpointed = Some(p.iteration);
    }
}
