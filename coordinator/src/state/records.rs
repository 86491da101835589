//! What a run records: one JSON line per iteration in `<run>/metrics.jsonl`, TensorBoard
//! events, and the status answer.

use super::*;

impl RunState {
    pub(super) fn finish_iteration(&mut self, iteration: u64) {
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

    /// Keeps `rec` and has it appended to `<run>/metrics.jsonl` (and TensorBoard, in training).
    pub(super) fn record(&mut self, rec: serde_json::Value) {
        let tensorboard = !self.evaluating();
        self.emit(Effect::Record { rec: rec.clone(), tensorboard });
        self.records.push(rec);
    }

    pub(super) fn status(&self) -> pb::StatusResponse {
        pb::StatusResponse {
            state: self.phase.name(),
            iteration: self.learning().unwrap_or(self.learned_upto),
            policy_version: self.policy_version,
            workers: self
                .workers
                .iter()
                .map(|(&id, w)| pb::WorkerStatus {
                    worker_id: id.0,
                    role: w.role as i32,
                    host: w.host.clone(),
                    node: w.node.clone(),
                    state: match &w.state {
                        WorkerState::Lost { .. } => "lost".into(),
                        WorkerState::Busy { task } => format!("busy (task {})", task.0),
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
