//! Task reports: what each kind of finished task moves forward.

use super::*;

impl RunState {
    pub(super) fn report(&mut self, r: pb::TaskReport) -> Result<pb::TaskAck, Status> {
        let (task_id, worker_id) = (TaskId(r.task_id), WorkerId(r.worker_id));
        let Some(task) = self.tasks.get_mut(&task_id) else {
            if r.task_id < self.next_task {
                // A task of an iteration already learned (and forgotten): a late duplicate.
                tracing::info!(task_id = r.task_id, worker_id = r.worker_id, "ignoring a report of a finished task");
                self.release(worker_id, task_id);
                return Ok(pb::TaskAck {});
            }
            return Err(Status::not_found(format!("unknown task {}", r.task_id)));
        };
        if task.worker() != Some(worker_id) {
            // A late report from a worker whose task was re-queued (its lease ran out): its rows
            // were deduplicated by the learner; the worker may take new work.
            tracing::info!(task_id = r.task_id, worker_id = r.worker_id, "ignoring a stale report");
            self.release(worker_id, task_id);
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
        self.release(worker_id, task_id);
        if !r.ok {
            tracing::warn!(task_id = r.task_id, error = %r.error, "task failed");
            match kind {
                TaskKind::Rollout(_) if attempts < MAX_ATTEMPTS => self.queue.push_back(task_id),
                TaskKind::Rollout(_) => self.fail(format!("task {} failed: {}", r.task_id, r.error)),
                TaskKind::Learner(_) => self.learner_failed(format!("learner task {} (iteration {iteration}) failed: {}", r.task_id, r.error)),
            }
            return Ok(pb::TaskAck {});
        }
        let metrics: serde_json::Value = serde_json::from_str(&r.metrics_json).unwrap_or(serde_json::Value::Null);
        match kind {
            TaskKind::Rollout(t) if self.evaluating() => {
                if let Some(w) = self.workers.get_mut(&worker_id) {
                    w.policy_version = t.policy_version;
                }
                self.eval_score(&t);
            }
            TaskKind::Learner(t) if self.evaluating() => self.eval_scored(&t, task_id, metrics),
            TaskKind::Rollout(t) => {
                if let Some(w) = self.workers.get_mut(&worker_id) {
                    w.policy_version = t.policy_version;
                }
                let st = self.iterations.get_mut(&iteration).unwrap();
                let mut m = metrics;
                m["task_s"] = serde_json::json!(elapsed);
                st.rollout_metrics.push(m);
                st.rollouts_done += 1;
            }
            TaskKind::Learner(t) => {
                let rank = self.workers.get(&worker_id).and_then(|w| w.rank).unwrap_or(0);
                match &t.work {
                    Some(Work::SftWarmStart(_) | Work::RewardWarmStart(_)) => {
                        let Phase::WarmStart(warm) = &mut self.phase else {
                            tracing::info!(task_id = r.task_id, phase = %self.phase.name(), "ignoring a warm-start report outside the warm start");
                            return Ok(pb::TaskAck {});
                        };
                        let entry = warm.metrics.entry(rank).or_insert_with(|| serde_json::json!({}));
                        if let (Some(into), Some(from)) = (entry.as_object_mut(), metrics.as_object()) {
                            into.extend(from.clone());
                        }
                        if warm.tasks.iter().all(|id| self.tasks[id].done()) {
                            let (kind, learners) = (warm.kind, std::mem::take(&mut warm.metrics));
                            self.policy_version = self.policy_version.max(t.next_policy_version);
                            if kind == WarmKind::Sft && self.cfg.reward.warm_start_steps > 0 {
                                self.start_warm(WarmKind::Reward);
                                // One record for both warm starts: each rank's SFT metrics are
                                // joined by its reward warm-start metrics.
                                if let Phase::WarmStart(reward) = &mut self.phase {
                                    reward.metrics = learners;
                                }
                            } else {
                                let learners: Vec<serde_json::Value> = learners.into_values().collect();
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
                    Some(Work::Checkpoint(_)) => {
                        let shard = match r.result {
                            Some(pb::task_report::Result::Shard(s)) => ckpt::wire::from_shard_written(s),
                            _ => Err("the report carries no shard".to_string()),
                        };
                        let shard = match shard {
                            Ok(s) => s,
                            Err(e) => {
                                self.fail(format!("checkpoint task {} (rank {rank}): {e}", r.task_id));
                                return Ok(pb::TaskAck {});
                            }
                        };
                        let all = match &mut self.phase {
                            Phase::Running(Learners::Checkpointing(p)) if p.tasks.contains(&task_id) => {
                                p.reports.insert(rank, shard);
                                p.tasks.iter().all(|id| self.tasks[id].done())
                            }
                            _ => false,
                        };
                        if all {
                            self.finish_checkpoint();
                        }
                    }
                    Some(Work::HeldOut(_)) => {
                        let st = self.iterations.get_mut(&iteration).unwrap();
                        if let Some(m0) = st.learner_metrics.get_mut(&0) {
                            m0["eval"] = metrics["eval"].clone();
                            m0["time_eval_s"] = metrics["time_eval_s"].clone();
                        }
                        self.learned(iteration);
                    }
                    Some(Work::IterationWork(_)) => {
                        let st = self.iterations.get_mut(&iteration).unwrap();
                        st.learner_metrics.insert(rank, metrics);
                        if st.learner_tasks.iter().all(|id| self.tasks[id].done()) {
                            self.policy_version = t.next_policy_version;
                            if self.cfg.data.eval_prompts > 0 {
                                // Held-out metrics of the new policy and reward, on rank 0.
                                let held_out = pb::HeldOut {
                                    prompt_ids: (0..self.cfg.data.eval_prompts as u64).collect(),
                                };
                                let lt = pb::LearnerTask::new(iteration, Work::HeldOut(held_out));
                                let id = self.new_task(iteration, TaskKind::Learner(lt));
                                self.iterations.get_mut(&iteration).unwrap().eval_task = Some(id);
                                let rank0 = self.learners_by_rank()[0];
                                self.start(id, rank0);
                            } else {
                                self.learned(iteration);
                            }
                        }
                    }
                    _ => self.fail(format!("training run: unexpected report of a {} task ({})", t.kind_name(), r.task_id)),
                }
            }
        }
        Ok(pb::TaskAck {})
    }

    /// Iteration `iteration` is trained (and evaluated): record it, then checkpoint if due.
    pub(super) fn learned(&mut self, iteration: u64) {
        self.learned_upto = iteration;
        if self.learning().is_some() {
            self.phase = Phase::Running(Learners::Free);
        }
        self.finish_iteration(iteration);
        if self.checkpoint_after(iteration) {
            self.start_checkpoint(iteration);
        }
    }
}
