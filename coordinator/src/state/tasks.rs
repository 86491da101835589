//! Tasks: their lifecycle ([`TaskState`]), the queue, dispatch to idle rollout workers, leases,
//! and the learner tasks an iteration becomes once its rollouts are done.

use super::*;

#[derive(Debug, Clone)]
pub(super) enum TaskKind {
    Rollout(pb::RolloutTask),
    Learner(pb::LearnerTask),
}

/// A task's lifecycle: queued (made, waiting for a worker) → running on one worker → done; a
/// running task goes back to queued when its worker is lost, its lease runs out, or it failed
/// with attempts left. A learner restart ends every unfinished task (their reports are ignored).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum TaskState {
    Queued,
    Running { worker: WorkerId, since: Instant },
    Done,
}

#[derive(Debug)]
pub(super) struct Task {
    pub(super) kind: TaskKind,
    pub(super) iteration: u64,
    pub(super) attempts: u32,
    pub(super) state: TaskState,
}

impl Task {
    pub(super) fn done(&self) -> bool {
        self.state == TaskState::Done
    }

    pub(super) fn worker(&self) -> Option<WorkerId> {
        match self.state {
            TaskState::Running { worker, .. } => Some(worker),
            _ => None,
        }
    }
}

impl RunState {
    /// Re-queues rollout tasks whose lease ran out (a stuck but still heartbeating worker).
    pub(super) fn expire_leases(&mut self) {
        let lease = self.cfg.workers.task_lease_ms.duration();
        let expired: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.kind, TaskKind::Rollout(_)) && matches!(t.state, TaskState::Running { since, .. } if since.elapsed() > lease))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let t = self.tasks.get_mut(&id).unwrap();
            let worker = t.worker();
            t.state = TaskState::Queued;
            // The worker stays busy until it reports (its report is then ignored as stale): a
            // stuck worker is not handed more work, and the task goes to another one.
            tracing::warn!(task_id = id.0, worker_id = ?worker.map(|w| w.0), "task lease expired; re-queued");
            self.queue.push_back(id);
        }
    }

    pub(super) fn new_task(&mut self, iteration: u64, kind: TaskKind) -> TaskId {
        let id = TaskId(self.next_task);
        self.next_task += 1;
        let kind = match kind {
            TaskKind::Rollout(mut t) => {
                t.task_id = id.0;
                TaskKind::Rollout(t)
            }
            TaskKind::Learner(mut t) => {
                t.task_id = id.0;
                TaskKind::Learner(t)
            }
        };
        self.tasks.insert(
            id,
            Task {
                kind,
                iteration,
                attempts: 0,
                state: TaskState::Queued,
            },
        );
        id
    }

    pub(super) fn start(&mut self, task_id: TaskId, worker_id: WorkerId) {
        let task = self.tasks.get_mut(&task_id).unwrap();
        task.state = TaskState::Running {
            worker: worker_id,
            since: Instant::now(),
        };
        task.attempts += 1;
        let msg = match &task.kind {
            TaskKind::Rollout(t) => {
                tracing::info!(
                    task_id = task_id.0,
                    worker_id = worker_id.0,
                    iteration = t.iteration,
                    prompts = t.prompt_ids.len(),
                    "rollout task started"
                );
                Msg::Rollout(t.clone())
            }
            TaskKind::Learner(t) => Msg::Learner(t.clone()),
        };
        self.set_state(worker_id, WorkerState::Busy { task: task_id });
        if !self.send(worker_id, msg) {
            self.lose(worker_id, "its stream is not accepting messages");
        }
    }

    pub(super) fn queue_rollouts(&mut self, iteration: u64) {
        let w = self.cfg.workers.learner as usize;
        let p = self.cfg.data.prompts_per_iteration as u64;
        let ids: Vec<u64> = (self.prompt_cursor..self.prompt_cursor + p).collect();
        self.prompt_cursor += p;
        let by_rank = self.learners_by_rank();
        let weights_addr = self.workers[&by_rank[0]].flight_addr.clone();
        let per = ids.len() / w;
        let mut st = IterationState {
            policy_version: self.policy_version,
            queued_at: Some(Instant::now()),
            prompt_end: self.prompt_cursor,
            ..Default::default()
        };
        for r in 0..w {
            let shard: Vec<u64> = ids[r * per..(r + 1) * per].to_vec();
            let dest = self.workers[&by_rank[r]].flight_addr.clone();
            for chunk in shard.chunks(self.cfg.data.prompts_per_task as usize) {
                let t = pb::RolloutTask {
                    task_id: 0,
                    iteration,
                    policy_version: self.policy_version,
                    prompt_ids: chunk.to_vec(),
                    samples_per_prompt: self.cfg.data.samples_per_prompt,
                    sampling: Some(pb::SamplingParams {
                        temperature: self.cfg.sampling.temperature,
                        top_p: self.cfg.sampling.top_p,
                        max_new_tokens: self.cfg.sampling.max_new_tokens,
                    }),
                    seed: self.cfg.run.seed.wrapping_mul(1_000_003).wrapping_add(iteration * 7_919 + chunk[0]),
                    learner_flight_addr: dest.clone(),
                    weights_flight_addr: weights_addr.clone(),
                    problem_set: String::new(),
                };
                let id = self.new_task(iteration, TaskKind::Rollout(t));
                st.rollout_tasks.push(id);
                self.queue.push_back(id);
            }
            st.shards.push(shard);
        }
        tracing::info!(
            iteration,
            tasks = st.rollout_tasks.len(),
            policy_version = self.policy_version,
            "rollouts queued"
        );
        self.iterations.insert(iteration, st);
        self.queued_upto = iteration;
    }

    pub(super) fn dispatch(&mut self) {
        loop {
            let Some(&task_id) = self.queue.front() else { return };
            let Some(&worker_id) = self.idle.first() else { return };
            self.queue.pop_front();
            self.start(task_id, worker_id);
        }
    }

    pub(super) fn maybe_learn(&mut self) {
        if self.phase != Phase::Running(Learners::Free) {
            return;
        }
        let next = self.learned_upto + 1;
        let Some(st) = self.iterations.get(&next) else { return };
        if st.rollouts_done < st.rollout_tasks.len() {
            return;
        }
        let by_rank = self.learners_by_rank();
        let shards = st.shards.clone();
        let rollout_ids = st.rollout_tasks.clone();
        // Each rank waits only for the rollout tasks that fed its shard (one pass over the
        // tasks: with 1,000 workers and 64 ranks a scan per rank held the loop for milliseconds).
        let rank_of: HashMap<u64, usize> = shards.iter().enumerate().flat_map(|(r, s)| s.iter().map(move |&p| (p, r))).collect();
        let mut feeding_by_rank: Vec<Vec<TaskId>> = vec![Vec::new(); by_rank.len()];
        for t in &rollout_ids {
            if let TaskKind::Rollout(rt) = &self.tasks[t].kind {
                if let Some(&r) = rt.prompt_ids.first().and_then(|p| rank_of.get(p)) {
                    feeding_by_rank[r].push(*t);
                }
            }
        }
        let mut learner_tasks = Vec::new();
        for (r, id) in by_rank.iter().enumerate() {
            let feeding = std::mem::take(&mut feeding_by_rank[r]);
            let work = Work::IterationWork(pb::IterationWork {
                prompt_ids: shards[r].clone(),
                rollout_task_ids: feeding.iter().map(|t| t.0).collect(),
                samples_per_prompt: self.cfg.data.samples_per_prompt,
            });
            let lt = pb::LearnerTask {
                next_policy_version: self.policy_version + 1,
                ..pb::LearnerTask::new(next, work)
            };
            let t = self.new_task(next, TaskKind::Learner(lt));
            learner_tasks.push(t);
            self.start(t, *id);
        }
        let st = self.iterations.get_mut(&next).unwrap();
        st.learner_tasks = learner_tasks;
        st.learn_started = Some(Instant::now());
        self.phase = Phase::Running(Learners::Learning(next));
        tracing::info!(iteration = next, "learning");
    }
}
