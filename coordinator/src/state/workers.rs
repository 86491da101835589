//! Workers: who registered, their lifecycle ([`WorkerState`]), loss, and the learners by rank.

use super::*;

/// A worker's lifecycle: registered → idle (its stream attached) ⇄ busy (holding one task) →
/// lost (declared gone; never comes back: a returning process registers again as a new worker).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum WorkerState {
    Registered,
    Idle,
    Busy { task: TaskId },
    Lost { why: String },
}

#[derive(Debug)]
pub(super) struct Worker {
    pub(super) role: pb::Role,
    pub(super) host: String,
    /// The machine's name (Slurm's node name, or the hostname), as the worker sent it.
    pub(super) node: String,
    pub(super) flight_addr: String,
    pub(super) collective_addr: String,
    pub(super) asked_rank: u32,
    pub(super) rank: Option<u32>,
    pub(super) outbox: Option<Outbox>,
    pub(super) last_seen: Instant,
    pub(super) state: WorkerState,
    pub(super) policy_version: u64,
}

impl Worker {
    /// Not declared lost.
    pub(super) fn live(&self) -> bool {
        !matches!(self.state, WorkerState::Lost { .. })
    }

    /// A live worker of `role`.
    pub(super) fn live_as(&self, role: pb::Role) -> bool {
        self.role == role && self.live()
    }

    /// The task it holds.
    pub(super) fn task(&self) -> Option<TaskId> {
        match self.state {
            WorkerState::Busy { task } => Some(task),
            _ => None,
        }
    }
}

impl RunState {
    pub(super) fn register(&mut self, req: pb::RegisterRequest) -> Result<pb::RegisterResponse, Status> {
        if !matches!(self.phase, Phase::WaitingForWorkers | Phase::WarmStart(_) | Phase::Running { .. }) {
            return Err(Status::failed_precondition(format!("the run is {}", self.phase.name())));
        }
        let role = pb::Role::try_from(req.role).unwrap_or(pb::Role::Unspecified);
        match role {
            pb::Role::Rollout => {
                let live = self.workers.values().filter(|w| w.live_as(pb::Role::Rollout)).count();
                if live >= self.cfg.workers.rollout as usize {
                    return Err(Status::resource_exhausted(format!(
                        "the run already has its {} rollout workers (workers.rollout); one more is taken only after one of them is lost",
                        self.cfg.workers.rollout
                    )));
                }
            }
            pb::Role::Learner => {
                let attached = self.workers.values().filter(|w| w.live_as(pb::Role::Learner)).count();
                if self.rendezvous != Rendezvous::Pending || attached >= self.cfg.workers.learner as usize {
                    return Err(Status::failed_precondition(format!(
                        "the run already has its {} learners (workers.learner); a lost learner is replaced by restarting all learners from a checkpoint (`--local` does it; otherwise run the coordinator again with --resume)",
                        self.cfg.workers.learner
                    )));
                }
                if req.flight_addr.is_empty() || req.collective_addr.is_empty() {
                    return Err(Status::invalid_argument("a learner must send flight_addr and collective_addr"));
                }
            }
            pb::Role::Unspecified => return Err(Status::invalid_argument("role must be rollout or learner")),
        }
        if self.cfg.workers.device == Device::Cuda && !req.device.starts_with("cuda") {
            return Err(Status::failed_precondition(format!(
                "the run has workers.device = \"cuda\" but this worker on {} has device `{}`",
                req.host, req.device
            )));
        }
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.workers.insert(
            id,
            Worker {
                role,
                host: req.host.clone(),
                node: req.node.clone(),
                flight_addr: req.flight_addr,
                collective_addr: req.collective_addr,
                asked_rank: req.rank,
                rank: None,
                outbox: None,
                last_seen: Instant::now(),
                state: WorkerState::Registered,
                policy_version: 0,
            },
        );
        if role == pb::Role::Rollout {
            self.rollouts_gone_since = None;
        }
        tracing::info!(worker_id = id.0, ?role, host = %req.host, node = %req.node, pid = req.pid, "worker registered");
        Ok(pb::RegisterResponse {
            worker_id: id.0,
            config_toml: self.config_toml.clone(),
            run_dir: self.run_dir.display().to_string(),
        })
    }

    pub(super) fn send(&mut self, worker_id: WorkerId, msg: Msg) -> bool {
        let Some(w) = self.workers.get_mut(&worker_id) else { return false };
        match &w.outbox {
            Some(tx) => tx.try_send(Ok(pb::CoordinatorMessage { kind: Some(msg) })).is_ok(),
            None => false,
        }
    }

    /// Moves worker `id` to `state`, keeping the idle index in step.
    pub(super) fn set_state(&mut self, id: WorkerId, state: WorkerState) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        if w.role == pb::Role::Rollout {
            if state == WorkerState::Idle {
                self.idle.insert(id);
            } else {
                self.idle.remove(&id);
            }
        }
        w.state = state;
    }

    pub(super) fn lose(&mut self, worker_id: WorkerId, why: &str) {
        let Some(w) = self.workers.get_mut(&worker_id) else { return };
        if !w.live() {
            return;
        }
        w.outbox = None;
        let role = w.role;
        let task = w.task();
        self.set_state(worker_id, WorkerState::Lost { why: why.into() });
        tracing::warn!(worker_id = worker_id.0, ?role, why, "worker lost");
        if self.finished() {
            return;
        }
        if role == pb::Role::Learner {
            self.learner_failed(format!("learner {} lost ({why})", worker_id.0));
            return;
        }
        if !self.workers.values().any(|w| w.live_as(pb::Role::Rollout)) {
            self.rollouts_gone_since = Some(Instant::now());
            tracing::warn!(
                "no rollout worker is left: the run waits {} s (workers.register_timeout_ms) for one to register",
                self.cfg.workers.register_timeout_ms.0 / 1000
            );
        }
        if let Some(t) = task {
            if let Some(task) = self.tasks.get_mut(&t) {
                if !task.done() {
                    task.state = TaskState::Queued;
                    self.queue.push_front(t);
                    tracing::info!(task_id = t.0, "re-queued the lost worker's task");
                }
            }
        }
    }

    /// Fails the run when the workers have not all registered in `workers.register_timeout_ms`.
    pub(super) fn check_registration(&mut self) {
        if self.phase != Phase::WaitingForWorkers || self.waiting_since.elapsed() < self.cfg.workers.register_timeout_ms.duration() {
            return;
        }
        let count = |role| self.workers.values().filter(|w| w.live_as(role)).count();
        let (l, r) = (count(pb::Role::Learner), count(pb::Role::Rollout));
        if l < self.cfg.workers.learner as usize || r == 0 {
            self.fail(format!(
                "{l} of {} learners and {r} of {} rollout workers registered within {} s (workers.register_timeout_ms): a worker did not start; see its log or the job output",
                self.cfg.workers.learner,
                self.cfg.workers.rollout,
                self.cfg.workers.register_timeout_ms.0 / 1000
            ));
        }
    }

    /// Fails the run when every rollout worker has been lost for `workers.register_timeout_ms`
    /// and none registered since.
    pub(super) fn check_rollouts_left(&mut self) {
        let Some(since) = self.rollouts_gone_since else { return };
        if self.finished() || since.elapsed() < self.cfg.workers.register_timeout_ms.duration() {
            return;
        }
        self.fail(format!(
            "every rollout worker was lost and none registered within {} s (workers.register_timeout_ms); see the lost workers' logs or the job output",
            self.cfg.workers.register_timeout_ms.0 / 1000
        ));
    }

    /// Worker `id` no longer holds task `task`: idle again unless it was lost meanwhile.
    pub(super) fn release(&mut self, id: WorkerId, task: TaskId) {
        if self.workers.get(&id).is_some_and(|w| w.task() == Some(task)) {
            self.set_state(id, WorkerState::Idle);
        }
    }

    pub(super) fn learners_by_rank(&self) -> Vec<WorkerId> {
        let mut v: Vec<(u32, WorkerId)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.live_as(pb::Role::Learner))
            .filter_map(|(&id, w)| w.rank.map(|r| (r, id)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    pub(super) fn learner_collective_addrs(&self) -> Vec<String> {
        self.learners_by_rank().iter().map(|id| self.workers[id].collective_addr.clone()).collect()
    }
}
