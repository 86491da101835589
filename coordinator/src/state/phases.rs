//! The run's phases: the learners' rendezvous (CUDA: after rank 0's NCCL id), the warm starts
//! (SFT, then the reward), the iterations, and the end (done, stopped, failed, or a learner
//! restart from the newest checkpoint).

use super::*;

impl RunState {
    pub(super) fn try_rendezvous(&mut self) {
        if self.rendezvous == Rendezvous::AwaitingNcclId {
            return;
        }
        let w = self.cfg.workers.learner as usize;
        let mut learners: Vec<WorkerId> = self
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
        if self.cfg.workers.device == Device::Cuda {
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
            self.rendezvous = Rendezvous::AwaitingNcclId;
            tracing::info!(learners = w, "rendezvous sent to rank 0; waiting for its NCCL unique id");
            return;
        }
        self.complete_rendezvous(Vec::new(), 0);
    }

    /// Sends the rendezvous to ranks `first_rank..` and starts the SFT phase (or the iterations).
    pub(super) fn complete_rendezvous(&mut self, nccl_unique_id: Vec<u8>, first_rank: usize) {
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
        self.rendezvous = Rendezvous::Sent;
        tracing::info!(learners = w, resume = %resume, "rendezvous sent");
        if self.resume.is_some() || self.evaluating() {
            self.run_iterations();
        } else if self.cfg.sft.steps > 0 {
            self.start_warm(WarmKind::Sft);
        } else if self.cfg.reward.warm_start_steps > 0 {
            self.start_warm(WarmKind::Reward);
        } else {
            self.run_iterations();
        }
    }

    /// The iterations (or the evaluation job's tasks) may run; the console shows them.
    pub(super) fn run_iterations(&mut self) {
        self.phase = Phase::Running(Learners::Free);
        if !self.evaluating() && self.learned_upto < self.cfg.run.iterations {
            self.console.begin("AIRL iterations", "iterations", self.learned_upto, self.cfg.run.iterations);
        }
    }

    /// Starts one warm-start task per rank. The problems: SFT step k of rank r uses ids
    /// `SFT_FIRST_ID + (k·W + r)·batch ..` (batch per rank); reward warm-start step k splits
    /// `REWARD_WARM_FIRST_ID + k·batch ..` (batch in total) over the ranks.
    pub(super) fn start_warm(&mut self, kind: WarmKind) {
        let mut tasks = Vec::new();
        let by_rank = self.learners_by_rank();
        let w = by_rank.len() as u64;
        for (r, id) in by_rank.into_iter().enumerate() {
            let r = r as u64;
            let (steps, ids, next_version) = match kind {
                WarmKind::Sft => {
                    let (steps, b) = (self.cfg.sft.steps as u64, self.cfg.sft.batch as u64);
                    let ids = (0..steps).flat_map(|k| (0..b).map(move |j| SFT_FIRST_ID + (k * w + r) * b + j)).collect();
                    (steps, ids, self.policy_version + 1)
                }
                WarmKind::Reward => {
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
                    next_policy_version: next_version,
                    ..pb::LearnerTask::new(0, kind.work(ids, steps as u32))
                }),
            );
            tasks.push(t);
            self.start(t, id);
        }
        self.phase = Phase::WarmStart(WarmStart {
            kind,
            tasks,
            metrics: BTreeMap::new(),
        });
        let (name, steps) = match kind {
            WarmKind::Sft => ("SFT warm start (behaviour cloning of the policy on expert traces)", self.cfg.sft.steps as u64),
            WarmKind::Reward => (
                "reward warm start (discriminator on experts against their corruptions)",
                self.cfg.reward.warm_start_steps as u64,
            ),
        };
        self.console.begin(name.split(" (").next().unwrap_or(name), "steps", 0, steps);
        tracing::info!("{name}: started");
    }

    /// A learner is gone or its task failed (e.g. a collective with a dead peer): restart the
    /// learners from the newest valid checkpoint when this is a `--local` run with restarts
    /// left, else fail the run.
    pub(super) fn learner_failed(&mut self, why: String) {
        if self.finished() {
            return;
        }
        let max = self.cfg.run.max_restarts as usize;
        if self.evaluating() {
            return self.fail(format!("{why}; the evaluation stopped (run it again)"));
        }
        if let Some(reason) = crate::failure::permanent(&why) {
            return self.fail(format!(
                "{why}; not retried: {reason}, which a restart would meet again (make room, then `--resume`)"
            ));
        }
        match self.recovery {
            Recovery::None => {
                return self.fail(format!(
                    "{why}; continue the run with `coordinator --config ... --resume` (restarts are automatic with --local and under Slurm)"
                ))
            }
            Recovery::Requeue => return self.stop_for_requeue(why),
            Recovery::Respawn(_) => {}
        }
        if self.restarts.len() >= max {
            return self.fail(format!("{why}; the learners were already restarted {max} times (run.max_restarts)"));
        }
        // Stop the failed attempt now; which checkpoint to restart from is decided once they are
        // verified (SHA-256 of every shard: GBs), off the loop (`Effect::FindRestartPoint`).
        let reached = self.learning().unwrap_or(self.learned_upto).max(self.learned_upto);
        // Everything in flight belongs to the failed attempt: its reports will be ignored.
        let unfinished: Vec<(TaskId, Option<WorkerId>)> = self.tasks.iter().filter(|(_, t)| !t.done()).map(|(&id, t)| (id, t.worker())).collect();
        for (id, worker) in unfinished {
            self.tasks.get_mut(&id).unwrap().state = TaskState::Done;
            if let Some(w) = worker {
                self.release(w, id);
            }
        }
        self.queue.clear();
        let learners: Vec<WorkerId> = self.workers.iter().filter(|(_, w)| w.live_as(pb::Role::Learner)).map(|(&id, _)| id).collect();
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
        self.phase = Phase::WaitingForWorkers;
        self.waiting_since = Instant::now();
        self.rendezvous = Rendezvous::Pending;
        // The stopped processes' exits belong to the old generation and are ignored.
        self.learner_generation += 1;
        tracing::warn!(reason = %why, "learners stopped; verifying the checkpoints to restart from");
        let config_hash = self.config_hash.clone();
        self.emit(Effect::FindRestartPoint { why, reached, config_hash });
    }

    /// The checkpoints were verified after a learner failure: restart the learners from the
    /// newest valid one (iterations after it, up to `reached`, are done again), or fail.
    pub(super) fn restart_from(&mut self, why: String, reached: u64, choice: ckpt::Choice) {
        if self.finished() {
            return;
        }
        for (dir, e) in &choice.skipped {
            tracing::warn!(checkpoint = %dir.display(), error = %e, "skipping a checkpoint that failed its checks");
        }
        let Some((dir, manifest)) = choice.chosen else {
            return self.fail(format!(
                "{why}; there is no valid checkpoint to restart from (checkpoint.every = {})",
                self.cfg.checkpoint.every
            ));
        };
        let redone: Vec<u64> = (manifest.iteration + 1..=reached).collect();
        let max = self.cfg.run.max_restarts;
        tracing::warn!(reason = %why, checkpoint = %dir.display(), ?redone, restart = self.restarts.len() + 1, max, "restarting the learners from a checkpoint");
        self.restarts.push((manifest.iteration, redone.clone(), why.clone()));
        self.record(serde_json::json!({ "restart": self.restarts.len(), "from_checkpoint": dir.display().to_string(), "checkpoint_iteration": manifest.iteration, "redone": redone, "reason": why }));
        self.resume_from(ResumePoint { dir, manifest });
        // The new learners have workers.register_timeout_ms from now to register.
        self.waiting_since = Instant::now();
        if let Recovery::Respawn(tx) = &self.recovery {
            let _ = tx.send(self.learner_generation);
        }
    }

    /// Under Slurm, a learner is gone: stop now (the other workers are told to exit) so that the
    /// coordinator exits with the requeue status and the job resumes from the newest checkpoint
    /// on the nodes Slurm gives it. Each such stop is a `"requeue": true` record in
    /// `metrics.jsonl` (kept across resumes), which bounds them by `run.max_restarts`.
    fn stop_for_requeue(&mut self, why: String) {
        let max = self.cfg.run.max_restarts as usize;
        let before = self.records.iter().filter(|r| r["requeue"] == serde_json::Value::Bool(true)).count();
        if before >= max {
            return self.fail(format!("{why}; the job was already requeued for lost learners {max} times (run.max_restarts)"));
        }
        let Some(ckpt) = self.last_checkpoint.clone() else {
            return self.fail(format!(
                "{why}; no checkpoint was written yet, so a requeue would start the run again from nothing: submit it again (checkpoint.every = {})",
                self.cfg.checkpoint.every
            ));
        };
        let n = before + 1;
        let from = self.checkpointed.unwrap_or(0);
        let reached = self.learning().unwrap_or(self.learned_upto).max(self.learned_upto);
        let redone: Vec<u64> = (from + 1..=reached).collect();
        tracing::warn!(reason = %why, checkpoint = %ckpt.display(), restart = n, max, "a learner is lost: stopping so that the job requeues and resumes");
        self.record(serde_json::json!({ "restart": n, "requeue": true, "from_checkpoint": ckpt.display().to_string(), "checkpoint_iteration": from, "redone": redone, "reason": why }));
        let stop = format!("{why}; the job requeues and resumes from the newest checkpoint (restart {n} of at most {max})");
        self.phase = Phase::Stopped(stop.clone());
        self.shutdown_all(&stop);
    }

    pub(super) fn fail(&mut self, why: String) {
        if self.finished() {
            return;
        }
        tracing::error!(reason = %why, "run failed");
        self.phase = Phase::Failed(why.clone());
        self.shutdown_all(&why);
    }

    pub(super) fn shutdown_all(&mut self, reason: &str) {
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in ids {
            self.send(id, Msg::Shutdown(pb::Shutdown { reason: reason.into() }));
        }
    }
}
