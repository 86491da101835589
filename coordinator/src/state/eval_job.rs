//! An evaluation job (`coordinator eval`): rollouts, the score tasks they become, the report.

use super::*;

/// An evaluation job's progress: rollout tasks (with the learner rank their rows go to), the
/// score tasks they became, and the report task.
pub(super) struct EvalJob {
    pub(super) plan: EvalPlan,
    pub(super) queued: bool,
    pub(super) rollout_rank: HashMap<TaskId, usize>,
    /// Score tasks the job will have: one per rollout task, or per chunk of fixed traces.
    pub(super) expected_scores: usize,
    pub(super) score_tasks: Vec<TaskId>,
    pub(super) report_task: Option<TaskId>,
    pub(super) scored: Vec<serde_json::Value>,
}

impl RunState {
    /// Whether this is an evaluation job.
    pub(super) fn evaluating(&self) -> bool {
        matches!(self.job, Job::Evaluation(_))
    }

    pub(super) fn eval_job(&self) -> Option<&EvalJob> {
        match &self.job {
            Job::Evaluation(j) => Some(j),
            Job::Training => None,
        }
    }

    pub(super) fn eval_job_mut(&mut self) -> Option<&mut EvalJob> {
        match &mut self.job {
            Job::Evaluation(j) => Some(j),
            Job::Training => None,
        }
    }

    /// Evaluation job: queue the rollout tasks once (problems in chunks of
    /// `data.prompts_per_task`, their rows going to the learners in turn), then hand them out;
    /// done once the report task has reported.
    pub(super) fn eval_progress(&mut self) {
        if let Some(why) = self.draining.clone() {
            return self.fail(format!("evaluation stopped ({why}); it has nothing to resume from: run it again"));
        }
        let Some(job) = self.eval_job() else { return };
        if !job.queued {
            let plan = job.plan.clone();
            let by_rank = self.learners_by_rank();
            let weights_addr = self.workers[&by_rank[0]].flight_addr.clone();
            if let ProblemSource::ProcessBench(_) = plan.source {
                // Fixed traces: no sampling; one score task per learner straight away (a worker
                // holds one task at a time), which reads its items itself.
                let mut n = 0;
                for (k, chunk) in plan.problems.chunks(plan.problems.len().div_ceil(by_rank.len()).max(1)).enumerate() {
                    self.eval_score_items(chunk.to_vec(), k % by_rank.len());
                    n += 1;
                }
                tracing::info!(items = plan.problems.len(), tasks = n, problem_set = %plan.source.wire(), "evaluation: score tasks queued");
                let job = self.eval_job_mut().unwrap();
                job.expected_scores = n;
                job.queued = true;
                // The score tasks and the report.
                self.console.begin("evaluation", "tasks", 0, n as u64 + 1);
            } else {
                let mut ranks = HashMap::new();
                let per_task = (self.cfg.data.prompts_per_task as usize).max(1);
                for (k, chunk) in plan.problems.chunks(per_task).enumerate() {
                    let rank = k % by_rank.len();
                    let t = pb::RolloutTask {
                        iteration: EVAL_ITERATION,
                        policy_version: self.policy_version,
                        prompt_ids: chunk.to_vec(),
                        samples_per_prompt: plan.samples,
                        sampling: Some(pb::SamplingParams {
                            temperature: self.cfg.sampling.temperature,
                            top_p: self.cfg.sampling.top_p,
                            max_new_tokens: self.cfg.sampling.max_new_tokens,
                        }),
                        seed: self.cfg.run.seed.wrapping_mul(1_000_003).wrapping_add(0xE7A1 + chunk[0]),
                        learner_flight_addr: self.workers[&by_rank[rank]].flight_addr.clone(),
                        weights_flight_addr: weights_addr.clone(),
                        problem_set: plan.source.wire(),
                        ..Default::default()
                    };
                    let id = self.new_task(EVAL_ITERATION, TaskKind::Rollout(t));
                    ranks.insert(id, rank);
                    self.queue.push_back(id);
                }
                tracing::info!(problems = plan.problems.len(), samples = plan.samples, tasks = ranks.len(), problem_set = %plan.source.wire(), "evaluation: rollouts queued");
                let job = self.eval_job_mut().unwrap();
                job.expected_scores = ranks.len();
                let n = ranks.len() as u64;
                job.rollout_rank = ranks;
                job.queued = true;
                // Each rollout task, the score task it becomes, and the report.
                self.console.begin("evaluation", "tasks", 0, 2 * n + 1);
            }
        }
        self.dispatch();
        // Every task of an evaluation is its own (the job holds no training tasks).
        let done = self.tasks.values().filter(|t| t.done()).count() as u64;
        self.console.update(done, self.console.total().unwrap_or(done), Vec::new());
        if self.eval_job().is_some_and(|j| j.report_task.is_some_and(|t| self.tasks[&t].done())) {
            self.phase = Phase::Done;
            self.shutdown_all("evaluation complete");
            tracing::info!(secs = self.started.elapsed().as_secs_f64() as u64, "evaluation complete");
        }
    }

    /// Evaluation job on fixed traces (ProcessBench): learner `rank` scores items `ids`.
    pub(super) fn eval_score_items(&mut self, ids: Vec<u64>, rank: usize) {
        let Some(job) = self.eval_job() else { return };
        let problem_set = job.plan.source.wire();
        self.start_score_task(ids, Vec::new(), 1, problem_set, rank);
    }

    /// Evaluation job: rollout task `t` is done; its learner scores its rows.
    pub(super) fn eval_score(&mut self, t: &pb::RolloutTask) {
        let Some(job) = self.eval_job() else { return };
        let rank = job.rollout_rank.get(&TaskId(t.task_id)).copied().unwrap_or(0);
        self.start_score_task(t.prompt_ids.clone(), vec![t.task_id], t.samples_per_prompt, t.problem_set.clone(), rank);
    }

    /// Starts a score task of the evaluation job on learner `rank`.
    pub(super) fn start_score_task(&mut self, prompt_ids: Vec<u64>, rollout_task_ids: Vec<u64>, samples_per_prompt: u32, problem_set: String, rank: usize) {
        let Some(job) = self.eval_job() else { return };
        let lt = pb::LearnerTask::new(
            EVAL_ITERATION,
            Work::EvalScore(pb::EvalScore {
                prompt_ids,
                rollout_task_ids,
                samples_per_prompt,
                problem_set,
                output_dir: job.plan.dir.display().to_string(),
            }),
        );
        let id = self.new_task(EVAL_ITERATION, TaskKind::Learner(lt));
        self.eval_job_mut().unwrap().score_tasks.push(id);
        let learner = self.learners_by_rank()[rank];
        self.start(id, learner);
    }

    /// Evaluation job: a learner task reported. After the last score task, rank 0 reports.
    pub(super) fn eval_scored(&mut self, t: &pb::LearnerTask, task_id: TaskId, metrics: serde_json::Value) {
        let done = |s: &RunState, id: &TaskId| s.tasks.get(id).is_some_and(|t| t.done());
        match &t.work {
            Some(Work::EvalScore(_)) => {
                let job = self.eval_job_mut().unwrap();
                job.scored.push(metrics);
                let job = self.eval_job().unwrap();
                let (n, all) = (job.score_tasks.len(), job.expected_scores);
                let finished = job.score_tasks.iter().filter(|id| done(self, id)).count();
                tracing::info!(task_id = task_id.0, "evaluation: {finished} of {all} score tasks done");
                if n == all && finished == all && job.report_task.is_none() {
                    let plan = job.plan.clone();
                    let lt = pb::LearnerTask::new(
                        EVAL_ITERATION,
                        Work::EvalReport(pb::EvalReport {
                            prompt_ids: plan.problems.clone(),
                            samples_per_prompt: plan.samples,
                            problem_set: plan.source.wire(),
                            output_dir: plan.dir.display().to_string(),
                            compare_dirs: plan.compare.iter().map(|d| d.display().to_string()).collect(),
                            label: plan.label.clone(),
                        }),
                    );
                    let id = self.new_task(EVAL_ITERATION, TaskKind::Learner(lt));
                    self.eval_job_mut().unwrap().report_task = Some(id);
                    let rank0 = self.learners_by_rank()[0];
                    self.start(id, rank0);
                }
            }
            Some(Work::EvalReport(_)) => {
                let scored = std::mem::take(&mut self.eval_job_mut().unwrap().scored);
                let mut rec = metrics;
                rec["score_tasks"] = serde_json::json!(scored);
                rec["elapsed_s"] = serde_json::json!(self.started.elapsed().as_secs_f64());
                self.record(rec);
            }
            _ => self.fail(format!("evaluation job: unexpected report of a {} task", t.kind_name())),
        }
    }
}
