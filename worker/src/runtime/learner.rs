//! The learner role: rank r of W data-parallel learners. Receives its shard of each iteration's
//! trajectories over Flight (deduplicated), builds the expert and corrupted rows for the same
//! prompts, runs [`Learner::iteration`] with gradients all-reduced (CPU ring or NCCL) and
//! optimizer state sharded (ZeRO-1), appends the rows to `<run>/trajectories/` as Parquet, and
//! (rank 0) serves the new policy weights. Every kind of work (warm starts, iterations,
//! checkpoint shards) and the problems it uses come from the coordinator's tasks; a resume
//! loads a checkpoint named by the rendezvous before the first task.

use super::data::RunData;
use super::flight::{LearnerFlight, LearnerStore, RowLimits};
use super::{airl_config, fingerprint, flat_params, register, Outcome, Session, WorkerError, WorkerOptions};
use crate::airl::iteration::{AirlConfig, IterationBatch, Learner, Sample};
use crate::airl::localize;
use crate::airl::reward::RewardModel;
use crate::airl::synth::Split;
use crate::collective::nccl::{self, Nccl};
use crate::collective::{Collective, TcpRing};
use crate::eval::records::{self, CorruptionRecord, SampleRecord};
use crate::eval::{job, processbench};
use crate::generate::SamplingParams;
use crate::gsm8k;
use crate::model;
use crate::tokenizer::Tokenizer;
use crate::train::checkpoint::{self, ModelState};
use crate::train::optim::{AdamWConfig, FlatAdamW};
use crate::train::DataParallel;
use airlift_proto::auth::Guard;
use airlift_proto::checkpoint as ckpt;
use airlift_proto::config::{LrSchedule, RunConfig};
use airlift_proto::gsm8k::ProblemSource;
use airlift_proto::pb::learner_task::Work;
use airlift_proto::pb::{self, coordinator_message::Kind as Msg, worker_message};
use airlift_proto::trajectory::{self, TrajectoryRow};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Kind;

/// How long a learner waits for an iteration's rows after its task arrives. The coordinator
/// only sends the task once every rollout task has reported, so rows are normally there.
const ROWS_TIMEOUT: Duration = Duration::from_secs(300);

pub(super) fn run(opts: &WorkerOptions, rt: tokio::runtime::Runtime) -> Result<(), WorkerError> {
    // Servers first, so that their addresses go into the registration.
    let io = |e: std::io::Error| WorkerError::Other(format!("binding on {}: {e}", opts.host));
    let flight_listener = rt.block_on(tokio::net::TcpListener::bind(format!("{}:0", opts.host))).map_err(io)?;
    let flight_addr = flight_listener.local_addr().map_err(io)?.to_string();
    let ring_listener = std::net::TcpListener::bind(format!("{}:0", opts.host)).map_err(io)?;
    let ring_addr = ring_listener.local_addr().map_err(io)?.to_string();
    let store = Arc::new(LearnerStore::default());
    let svc = LearnerFlight::server(store.clone(), Guard::new(opts.token.clone()));
    // TLS when AIRLIFT_TLS names the job's certificates (proto/src/tls.rs).
    let mut flight_server = airlift_proto::tls::server().map_err(WorkerError::Other)?;
    rt.spawn(async move {
        // Bounded like the coordinator's: a connection cap, a first-byte deadline, keepalive.
        let incoming = airlift_proto::conn::incoming(flight_listener, airlift_proto::conn::cap());
        if let Err(e) = flight_server.add_service(svc).serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "flight server stopped");
        }
    });
    let req = pb::RegisterRequest {
        device: super::local_device_name(),
        flight_addr: flight_addr.clone(),
        collective_addr: ring_addr,
        rank: opts.rank,
        ..Default::default()
    };
    let mut s = register(opts, req, rt)?;
    // Errors from here on also go to the coordinator, which reports them as the reason.
    let result = (|| -> Result<(), WorkerError> {
        let cfg = s.config.clone();
        let device = super::device(&cfg)?;
        let (threads, from) = super::set_threads(&cfg);
        tracing::info!(threads, from, cpu = %airlift_proto::host::cpu_summary(), "libtorch intra-op threads");

        // Models: fp32 master weights, compute in the configured precision.
        let other = |e: &dyn std::fmt::Display| WorkerError::Other(e.to_string());
        let compute = super::compute_kind(&cfg, cfg.model.train_dtype, "model.train_dtype");
        let mut policy = model::load(&cfg.model.policy, device, Kind::Float).map_err(|e| other(&e))?;
        policy.model.set_compute_kind(compute);
        let tok = Tokenizer::from_dir(&cfg.model.policy).map_err(|e| other(&e))?;
        // The KL term's frozen reference: the policy as the adversarial phase starts (after the
        // SFT warm start, see `sft_warm_start`; a resume takes it from the warm start's
        // checkpoint). fp32 master weights like the policy's, so that the two flat buffers match.
        let reference = if cfg.policy.kl_coef > 0.0 {
            let mut r = model::load(&cfg.model.policy, device, Kind::Float).map_err(|e| other(&e))?;
            r.model.set_compute_kind(compute);
            Some(r)
        } else {
            None
        };
        let reward_base = cfg.model.reward.clone().unwrap_or_else(|| cfg.model.policy.clone());
        let mut reward = match &cfg.model.reward_weights {
            Some(dir) => RewardModel::load(dir, device).map_err(|e| other(&format!("model.reward_weights {}: {e}", dir.display())))?,
            None => {
                RewardModel::from_base(&reward_base, cfg.reward.backbone_layers.map(|k| k as usize), device, cfg.run.seed ^ 0x5EED).map_err(|e| other(&e))?
            }
        };
        reward.set_compute_kind(compute);
        // The checks pushed rows must pass (see `RowLimits`); set once the run and any checkpoint
        // are loaded, below.
        let limits = RowLimits {
            vocab: policy.model.config().vocab_size as u32,
            max_response_tokens: cfg.sampling.max_new_tokens as usize,
            max_prompt_tokens: policy.model.config().max_position_embeddings as usize,
            max_ahead: cfg.run.max_staleness.saturating_add(1),
        };
        let eos = policy.model.config().eos_token_ids.first().copied().unwrap_or(0);
        let pad = policy.model.config().pad_token_id.unwrap_or(eos);

        // Rendezvous: the first message the coordinator sends a learner.
        let rdv = match s.next_message()? {
            Msg::Rendezvous(r) => r,
            Msg::Shutdown(sd) => {
                tracing::info!(reason = %sd.reason, "shut down before the rendezvous");
                return Ok(());
            }
            other => return Err(WorkerError::Other(format!("expected a rendezvous first, got {other:?}"))),
        };
        let (rank, world) = (rdv.rank as usize, rdv.world_size as usize);
        let coll: Box<dyn Collective> = if device.is_cuda() {
            let id = if rank == 0 {
                let id = nccl::unique_id().map_err(|e| other(&e))?;
                s.send_up(worker_message::Kind::NcclId(pb::NcclId { unique_id: id.clone() }))?;
                id
            } else {
                rdv.nccl_unique_id.clone()
            };
            let c = Nccl::init(rank, world, &id).map_err(|e| other(&e))?;
            tracing::info!(rank, world, nccl = %nccl::version().unwrap_or_default(), "NCCL communicator formed");
            Box::new(c)
        } else {
            // Mutual TLS between ranks when AIRLIFT_TLS is set.
            let ring_tls = match airlift_proto::tls::current().map_err(|e| other(&e))? {
                Some(t) => Some(crate::collective::RingTls::new(t).map_err(|e| other(&e))?),
                None => None,
            };
            let ring = TcpRing::connect(rank, &rdv.collective_addrs, ring_listener, s.stamp_tag(), ring_tls.as_ref()).map_err(|e| other(&e))?;
            tracing::info!(rank, world, "collective ring formed");
            Box::new(ring)
        };
        let dp = DataParallel { coll };

        let total_iters = cfg.run.iterations.max(1);
        let policy_cfg = policy_optimizer_config(&cfg);
        let policy_opt = if cfg.policy.steps == 0 {
            FlatAdamW::frozen(&policy.vs, policy_cfg, rank, world)
        } else {
            FlatAdamW::sharded(&policy.vs, policy_cfg, rank, world)
        };
        let reward_opt = FlatAdamW::sharded(
            &reward.vs,
            AdamWConfig {
                lr: cfg.reward.lr,
                total_steps: total_iters * cfg.reward.disc_steps as u64,
                ..Default::default()
            },
            rank,
            world,
        );
        let policy_vs = policy.vs;
        let (reference, reference_state) = match reference {
            Some(r) => {
                let opt = FlatAdamW::frozen(&r.vs, AdamWConfig::default(), rank, world);
                (Some(r.model), Some((r.vs, opt)))
            }
            None => (None, None),
        };
        let learner = Learner {
            policy: policy.model,
            policy_opt,
            reference,
            reward,
            reward_opt,
        };
        let airl = airl_config(&cfg, pad);
        let data = RunData::new(&cfg, eos as u32);
        let traj_dir = s.run_dir.join("trajectories");
        let mut me = Rank {
            l: learner,
            policy_vs,
            reference_state,
            dp,
            cfg,
            airl,
            tok,
            data,
            store: store.clone(),
            rank,
            world,
            traj_dir,
        };
        if !rdv.resume_checkpoint.is_empty() {
            let version = me.resume(Path::new(&rdv.resume_checkpoint))?;
            if rank == 0 {
                store.publish(version, flat_params(&me.policy_vs));
            }
        } else if rank == 0 {
            store.publish(0, flat_params(&me.policy_vs));
        }
        // Rows are taken from here on, with the checkpoint's iteration as the floor: a learner
        // restarted mid-run may get rows for the iteration after its checkpoint from rollout
        // workers that kept the weights, before it has loaded the checkpoint; those wait (see
        // `LearnerFlight::do_put`) instead of being refused as too far ahead.
        store.set_limits(limits);

        loop {
            match s.next_message()? {
                Msg::Learner(task) => {
                    let task_id = task.task_id;
                    let result = me.run_task(&task, &s.progress(task_id));
                    if let Err(e) = &result {
                        tracing::error!(task_id, error = %e, "learner task failed");
                    }
                    s.report(task_id, result.map_err(|e| e.to_string()))?;
                }
                Msg::Shutdown(sd) => {
                    tracing::info!(reason = %sd.reason, "shutting down");
                    break;
                }
                other => tracing::warn!(?other, "learner ignores this message"),
            }
        }
        Ok(())
    })();
    if let Err(e) = &result {
        s.fatal(e);
    }
    result
}

/// A learner rank between tasks: its models and optimizers, data parallelism, the run's settings
/// and data, and where its outputs go. Each kind of learner task is one method.
struct Rank {
    l: Learner,
    policy_vs: tch::nn::VarStore,
    /// `policy.kl_coef > 0`: the reference policy's var store and its (frozen) flat buffer.
    reference_state: Option<(tch::nn::VarStore, FlatAdamW)>,
    dp: DataParallel,
    cfg: RunConfig,
    airl: AirlConfig,
    tok: Tokenizer,
    data: RunData,
    store: Arc<LearnerStore>,
    rank: usize,
    world: usize,
    traj_dir: std::path::PathBuf,
}

impl Rank {
    /// Runs one task and returns (rows, metrics JSON); rank 0 then publishes the policy version
    /// the task produced.
    fn run_task(&mut self, task: &pb::LearnerTask, progress: &dyn Fn(u32, u32, &[(&str, f64)])) -> Result<Outcome, WorkerError> {
        let (rows, mut metrics) = match &task.work {
            Some(Work::SftWarmStart(w)) => self.sft_warm_start(task, w, progress)?,
            Some(Work::RewardWarmStart(w)) => self.reward_warm_start(task, w, progress)?,
            Some(Work::IterationWork(w)) => self.iteration(task, w)?,
            Some(Work::Checkpoint(w)) => {
                // A checkpoint reports its shard only (no fingerprints: they would hash GBs).
                let (metrics, shard) = self.checkpoint(w)?;
                let result = Some(pb::task_report::Result::Shard(shard));
                return Ok(Outcome {
                    rows: 0,
                    metrics: metrics.to_string(),
                    result,
                });
            }
            Some(Work::HeldOut(w)) => {
                let t = Instant::now();
                let eval = self.held_out(&w.prompt_ids)?;
                (0, serde_json::json!({ "eval": eval, "time_eval_s": t.elapsed().as_secs_f64() }))
            }
            Some(Work::EvalScore(w)) => self.eval_score(task, w)?,
            Some(Work::EvalReport(w)) => self.eval_report(w)?,
            None => {
                return Err(WorkerError::Other(format!(
                    "task {}: a learner task with no work (a coordinator of another protocol version?)",
                    task.task_id
                )))
            }
        };
        metrics["policy_fingerprint"] = serde_json::json!(fingerprint(&flat_params(&self.policy_vs)));
        metrics["reward_fingerprint"] = serde_json::json!(fingerprint(&flat_params(&self.l.reward.vs)));
        metrics["rank"] = serde_json::json!(self.rank);
        metrics["duplicates_dropped"] = serde_json::json!(self.store.duplicates());
        metrics["stale_rows_dropped"] = serde_json::json!(self.store.stale());
        metrics["rows_refused"] = serde_json::json!(self.store.refused());
        // Optimizer steps refused for a non-finite gradient, so far (0 in a healthy run).
        metrics["policy_steps_skipped"] = serde_json::json!(self.l.policy_opt.skipped_steps());
        metrics["reward_steps_skipped"] = serde_json::json!(self.l.reward_opt.skipped_steps());
        if self.rank == 0 && task.next_policy_version > 0 {
            self.store.publish(task.next_policy_version, flat_params(&self.policy_vs));
        }
        Ok(Outcome {
            rows,
            metrics: metrics.to_string(),
            result: None,
        })
    }

    /// The SFT warm start: behaviour cloning of the policy on the expert traces of the task's
    /// problems, `task.steps` data-parallel steps at `sft.lr`.
    fn sft_warm_start(
        &mut self,
        task: &pb::LearnerTask,
        w: &pb::WarmStart,
        progress: &dyn Fn(u32, u32, &[(&str, f64)]),
    ) -> Result<(u64, serde_json::Value), WorkerError> {
        let Rank {
            l, dp, cfg, airl, tok, data, ..
        } = self;
        let steps = w.steps as usize;
        let per_step = per_step(task.task_id, w)?;
        let t = Instant::now();
        // The warm start uses its own learning rate on the same optimizer; restore afterwards.
        let policy_lr = l.policy_opt.config().lr;
        l.policy_opt.set_lr(cfg.sft.lr);
        let mut losses = Vec::with_capacity(steps);
        let mut lrs = Vec::with_capacity(steps);
        for (step, ids) in w.prompt_ids.chunks(per_step.max(1)).take(steps).enumerate() {
            let experts: Vec<Sample> = ids
                .iter()
                .map(|&id| data.expert(tok, Split::Train, id))
                .collect::<Result<_, _>>()
                .map_err(WorkerError::Other)?;
            let lr = l.policy_opt.config().lr_at(l.policy_opt.steps_taken());
            let loss = l.sft_step(&experts, airl, dp);
            tracing::info!(step = step + 1, steps, loss = format!("{loss:.4}"), lr, "sft");
            progress(step as u32 + 1, steps as u32, &[("loss", loss), ("lr", lr)]);
            losses.push(loss);
            lrs.push(lr);
        }
        l.policy_opt.set_lr(policy_lr);
        if let Some((_, reference)) = &self.reference_state {
            // The KL anchor is the policy the adversarial phase starts from, not the base model
            // (which never writes the `####` line).
            copy_flat(reference, &self.l.policy_opt);
        }
        Ok((
            0,
            serde_json::json!({
                "phase": "warm-start", "sft_steps": steps, "sft_loss_first": losses.first(), "sft_loss_last": losses.last(), "sft_losses": losses,
                "sft_lr_first": lrs.first(), "sft_lr_last": lrs.last(),
                "time_sft_s": t.elapsed().as_secs_f64(),
            }),
        ))
    }

    /// The reward warm start: `task.steps` discriminator steps on the experts of the task's
    /// problems against their own corruptions, with their own schedule (cosine over the warm start
    /// from `reward.warm_start_lr`); the iterations' optimizer settings afresh afterwards.
    fn reward_warm_start(
        &mut self,
        task: &pb::LearnerTask,
        w: &pb::WarmStart,
        progress: &dyn Fn(u32, u32, &[(&str, f64)]),
    ) -> Result<(u64, serde_json::Value), WorkerError> {
        let Rank {
            l, dp, cfg, airl, tok, data, ..
        } = self;
        let steps = w.steps as usize;
        let per_step = per_step(task.task_id, w)?;
        let t = Instant::now();
        let main = l.reward_opt.config().clone();
        l.reward_opt.restart(AdamWConfig {
            lr: cfg.reward.warm_start_lr,
            warmup_steps: 0,
            total_steps: steps as u64,
            ..main.clone()
        });
        let (mut loss_first, mut loss_last) = (f64::NAN, f64::NAN);
        let mut losses = Vec::with_capacity(steps);
        for (step, ids) in w.prompt_ids.chunks(per_step.max(1)).take(steps).enumerate() {
            let mut b = IterationBatch::default();
            for &id in ids {
                data.add_expert_and_corruptions(&mut b, tok, Split::Train, id).map_err(WorkerError::Other)?;
            }
            let d = l.discriminator_steps(&b, airl, 1, dp);
            if step == 0 {
                loss_first = d.loss_first;
            }
            loss_last = d.loss_last;
            losses.push(d.loss_last);
            tracing::info!(
                step = step + 1,
                steps,
                loss = format!("{:.4}", d.loss_last),
                rss_mb = crate::sysmem::rss_now_mb().round(),
                "reward warm start"
            );
            progress(step as u32 + 1, steps as u32, &[("loss", d.loss_last)]);
        }
        l.reward_opt.restart(main);
        Ok((
            0,
            serde_json::json!({
                "reward_warm_steps": steps, "reward_warm_loss_first": loss_first, "reward_warm_loss_last": loss_last, "reward_warm_losses": losses,
                "time_reward_warm_s": t.elapsed().as_secs_f64(),
            }),
        ))
    }

    fn iteration(&mut self, task: &pb::LearnerTask, w: &pb::IterationWork) -> Result<(u64, serde_json::Value), WorkerError> {
        let Rank {
            l,
            dp,
            airl,
            tok,
            data,
            store,
            rank,
            traj_dir,
            ..
        } = self;
        let rank = *rank;
        let other = |e: &dyn std::fmt::Display| WorkerError::Other(e.to_string());
        let t_wait = Instant::now();
        let want = Wanted {
            task_id: task.task_id,
            iteration: task.iteration,
            prompt_ids: &w.prompt_ids,
            rollout_task_ids: &w.rollout_task_ids,
            samples_per_prompt: w.samples_per_prompt,
        };
        let rows = take_rows(store, &want)?;
        let wait_s = t_wait.elapsed().as_secs_f64();
        check_rows(&want, &rows)?;
        let mut batch = IterationBatch::default();
        let mut rows_out = rows.clone();
        for r in &rows {
            let answer_line_start = if airl.wrong_answer_line_weight != 1.0 && r.correct == Some(false) {
                answer_line_start(tok, &r.response_tokens)
            } else {
                None
            };
            batch.policy.push(Sample {
                prompt: r.prompt_tokens.clone(),
                response: r.response_tokens.clone(),
                group: r.prompt_id as i64,
                behaviour_logprobs: Some(r.behaviour_logprobs.clone()),
                correct: r.correct,
                answer_line_start,
                ..Default::default()
            });
        }
        let version = rows.first().map_or(0, |r| r.policy_version);
        for &pid in &w.prompt_ids {
            let e = data.expert(tok, Split::Train, pid).map_err(WorkerError::Other)?;
            let text = tok.decode(&e.response).map_err(|e| other(&e))?;
            rows_out.push(expert_row(&e, &text, "expert", task.iteration, version, pid, 0));
            batch.experts.push(e);
            for (k, c) in data.corruptions(tok, Split::Train, pid).map_err(WorkerError::Other)?.into_iter().enumerate() {
                rows_out.push(expert_row(&c.sample, &c.text, "corrupted", task.iteration, version, pid, k as u32));
                batch.corrupted.push(c.sample);
            }
        }
        let before = crate::sysmem::Usage::now();
        let m = l.iteration(&batch, airl, dp);
        let after = crate::sysmem::Usage::now();
        let mut metrics = serde_json::to_value(&m).map_err(|e| other(&e))?;
        metrics["learner_peak_rss_mb"] = serde_json::json!(after.peak_rss_mb);
        metrics["learner_minor_faults"] = serde_json::json!(after.minor_faults - before.minor_faults);
        metrics["time_wait_rows_s"] = serde_json::json!(wait_s);

        // Parquet: this rank's rows of this iteration.
        std::fs::create_dir_all(&*traj_dir).map_err(|e| other(&format!("{}: {e}", traj_dir.display())))?;
        let path = traj_dir.join(format!("iter-{:06}-rank{rank}.parquet", task.iteration));
        records::write_parquet(&path, &trajectory::to_batch(&rows_out)).map_err(|e| other(&e))?;

        Ok((rows.len() as u64, metrics))
    }

    /// Held-out metrics on the eval-split problems `ids`: expert vs corrupted and expert vs fresh
    /// policy samples (one per problem, the run's sampling settings), and the accuracy of those
    /// samples.
    fn held_out(&mut self, ids: &[u64]) -> Result<serde_json::Value, WorkerError> {
        let Rank { l, cfg, airl, tok, data, .. } = self;
        let n = ids.len() as u64;
        let mut batch = IterationBatch::default();
        let mut prompts = Vec::new();
        for &id in ids {
            data.add_expert_and_corruptions(&mut batch, tok, Split::Eval, id).map_err(WorkerError::Other)?;
            prompts.push(data.prompt_tokens(tok, Split::Eval, id).map_err(WorkerError::Other)?);
        }
        let eos = l.policy.config().eos_token_ids.clone();
        let params = SamplingParams {
            temperature: cfg.sampling.temperature,
            top_p: cfg.sampling.top_p,
            max_new_tokens: cfg.sampling.max_new_tokens as usize,
            seed: cfg.run.seed ^ 0xE7A1,
            ignore_eos: false,
        };
        let mut correct = 0;
        let mut gen = crate::generate::Generator::new(&l.policy, cfg.sampling.max_batch as usize);
        let out = gen.generate(&l.policy, &prompts, &eos, airl.pad_id, &params);
        for ((&id, p), c) in ids.iter().zip(&prompts).zip(out.completions) {
            let text = tok.decode(&c.tokens).map_err(|e| WorkerError::Other(e.to_string()))?;
            let ok = gsm8k::grade(&text, &data.problem(Split::Eval, id).problem).1;
            correct += ok as usize;
            batch.policy.push(Sample {
                prompt: p.clone(),
                response: c.tokens,
                group: id as i64,
                correct: Some(ok),
                ..Default::default()
            });
        }
        let rewards = l.rewards(&batch, airl);
        let a = rewards.aurocs(&batch);
        // Error localisation on the corrupted traces: the lowest-reward line against the line of the
        // first wrong token.
        let mut traces = Vec::new();
        for (r, c) in rewards.corrupted.iter().zip(&batch.corrupted) {
            if let Some(fe) = c.first_error_token {
                traces.push((r.clone(), token_lines(tok, &c.response).into_iter().map(|l| l as usize).collect(), fe));
            }
        }
        let (hit1, chance) = localize::hit_at_1(&traces);
        Ok(serde_json::json!({
            "error_step_hit1": hit1, "error_step_chance": chance,
            "auroc_expert_policy_seq": a.expert_policy_seq, "auroc_expert_policy_tok": a.expert_policy_tok,
            "auroc_expert_corrupted_seq": a.expert_corrupted_seq, "auroc_expert_corrupted_seq_min": a.expert_corrupted_seq_min,
            "auroc_expert_corrupted_paired": a.expert_corrupted_paired, "auroc_expert_corrupted_tok": a.expert_corrupted_tok,
            "policy_accuracy": correct as f64 / n as f64, "problems": n,
        }))
    }

    /// Evaluation job: scores every token of the samples of the task's rollout tasks and of the
    /// controlled corruptions of its problems' expert answers (with the policy's log-probs), and
    /// writes both as Parquet parts of the evaluation in `task.output_dir`.
    fn eval_score(&mut self, task: &pb::LearnerTask, w: &pb::EvalScore) -> Result<(u64, serde_json::Value), WorkerError> {
        let Rank { l, airl, tok, data, store, .. } = self;
        let other = |e: &dyn std::fmt::Display| WorkerError::Other(e.to_string());
        let t = Instant::now();
        let source = ProblemSource::parse(&w.problem_set);
        if let ProblemSource::ProcessBench(file) = &source {
            let part = processbench::part_path(Path::new(&w.output_dir), task.task_id);
            let n = processbench::score_items(l, airl, tok, file, &w.prompt_ids, &part).map_err(WorkerError::Other)?;
            return Ok((n as u64, serde_json::json!({ "items": n, "time_score_s": t.elapsed().as_secs_f64() })));
        }
        let want = Wanted {
            task_id: task.task_id,
            iteration: task.iteration,
            prompt_ids: &w.prompt_ids,
            rollout_task_ids: &w.rollout_task_ids,
            samples_per_prompt: w.samples_per_prompt,
        };
        let rows = take_rows(store, &want)?;
        check_rows(&want, &rows)?;
        let mut batch = IterationBatch::default();
        for r in &rows {
            batch.policy.push(Sample {
                prompt: r.prompt_tokens.clone(),
                response: r.response_tokens.clone(),
                group: r.prompt_id as i64,
                ..Default::default()
            });
        }
        let mut kinds = Vec::new();
        for &pid in &w.prompt_ids {
            for (k, c) in data.corruptions_of(tok, &source, pid).map_err(WorkerError::Other)?.into_iter().enumerate() {
                kinds.push((pid, k as u32, c.kind, c.text));
                batch.corrupted.push(c.sample);
            }
        }
        let rewards = l.rewards(&batch, airl);
        let corrupted_lp = if batch.corrupted.is_empty() {
            Vec::new()
        } else {
            l.response_token_logprobs(&batch.corrupted, airl.pad_id)
        };
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let mut samples = Vec::with_capacity(rows.len());
        for (r, rw) in rows.iter().zip(&rewards.policy) {
            let p = data.problem_of(&source, r.prompt_id).map_err(WorkerError::Other)?;
            samples.push(SampleRecord {
                problem_id: r.prompt_id,
                sample_index: r.sample_index % w.samples_per_prompt.max(1),
                task_id: r.task_id,
                policy_version: r.policy_version,
                question: p.question.clone(),
                reference_answer: p.reference(),
                text: r.response_text.clone(),
                response_tokens: r.response_tokens.clone(),
                behaviour_logprobs: r.behaviour_logprobs.clone(),
                token_rewards: f32s(rw),
                token_lines: token_lines(tok, &r.response_tokens),
                predicted_answer: r.predicted_answer.clone(),
                correct: r.correct == Some(true),
                finish_reason: r.finish_reason.clone(),
            });
        }
        let mut corruptions = Vec::with_capacity(kinds.len());
        for (((pid, k, kind, text), c), (rw, lp)) in kinds.into_iter().zip(&batch.corrupted).zip(rewards.corrupted.iter().zip(&corrupted_lp)) {
            let lines = token_lines(tok, &c.response);
            let fe = c.first_error_token.unwrap_or(0).min(c.response.len().saturating_sub(1));
            corruptions.push(CorruptionRecord {
                problem_id: pid,
                corruption_index: k,
                kind: serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                text,
                response_tokens: c.response.clone(),
                policy_logprobs: f32s(lp),
                token_rewards: f32s(rw),
                first_error_line: lines.get(fe).copied().unwrap_or(0),
                token_lines: lines,
                first_error_token: fe as u32,
            });
        }
        let dir = Path::new(&w.output_dir);
        let parts = job::parts_dir(dir);
        std::fs::create_dir_all(&parts).map_err(|e| other(&format!("{}: {e}", parts.display())))?;
        records::write_parquet(&job::samples_part(dir, task.task_id), &records::samples_batch(&samples)).map_err(|e| other(&e))?;
        records::write_parquet(&job::corruptions_part(dir, task.task_id), &records::corruptions_batch(&corruptions)).map_err(|e| other(&e))?;
        let correct = samples.iter().filter(|s| s.correct).count();
        Ok((
            samples.len() as u64,
            serde_json::json!({ "samples": samples.len(), "corruptions": corruptions.len(), "correct": correct, "time_score_s": t.elapsed().as_secs_f64() }),
        ))
    }

    /// Evaluation job, rank 0 after every score task: merge the parts, write the Parquet files,
    /// `summary.json` and `report.html`; the metrics carry the summary and its table.
    fn eval_report(&mut self, w: &pb::EvalReport) -> Result<(u64, serde_json::Value), WorkerError> {
        let t = Instant::now();
        let tok = &self.tok;
        // Paths in what is written relative to the working folder (the run's launch folder).
        let cwd = std::env::current_dir().unwrap_or_default();
        let (label, problem_set) = (job::relative_paths(&w.label, &cwd), job::relative_paths(&w.problem_set, &cwd));
        if let ProblemSource::ProcessBench(file) = ProblemSource::parse(&w.problem_set) {
            let (summary, table) = processbench::finish(Path::new(&w.output_dir), &label, &problem_set, &file, &w.prompt_ids).map_err(WorkerError::Other)?;
            return Ok((
                0,
                serde_json::json!({ "summary": summary, "table": table, "time_report_s": t.elapsed().as_secs_f64() }),
            ));
        }
        let compare: Vec<std::path::PathBuf> = w.compare_dirs.iter().map(std::path::PathBuf::from).collect();
        let j = job::Job {
            dir: Path::new(&w.output_dir),
            label: &label,
            problem_set: &problem_set,
            problems: &w.prompt_ids,
            samples_per_problem: w.samples_per_prompt,
            compare: &compare,
        };
        let (summary, table) = job::finish(&j, &|t| tok.decode(&[t]).unwrap_or_default()).map_err(WorkerError::Other)?;
        Ok((
            0,
            serde_json::json!({ "summary": summary, "table": table, "time_report_s": t.elapsed().as_secs_f64() }),
        ))
    }

    /// Loads the learner state from a checkpoint the coordinator verified; returns its policy version.
    fn resume(&mut self, dir: &Path) -> Result<u64, WorkerError> {
        let Rank { l, policy_vs, store, .. } = self;
        let t = Instant::now();
        let m = ckpt::read_manifest(dir).map_err(|e| WorkerError::Other(e.to_string()))?;
        let mut models = [
            ModelState {
                name: "policy",
                vs: policy_vs,
                opt: &mut l.policy_opt,
            },
            ModelState {
                name: "reward",
                vs: &l.reward.vs,
                opt: &mut l.reward_opt,
            },
        ];
        checkpoint::load(dir, &m, &mut models).map_err(WorkerError::Other)?;
        if let Some((ref_vs, ref_opt)) = &mut self.reference_state {
            if m.iteration == 0 {
                copy_flat(ref_opt, &l.policy_opt);
            } else {
                // The reference is the warm start's policy: its checkpoint must be there.
                let run_dir = dir.parent().and_then(Path::parent).unwrap_or(dir);
                let warm = ckpt::step_dir(run_dir, 0);
                let need = |e: String| {
                    WorkerError::Other(format!(
                        "policy.kl_coef > 0: resuming from {} needs the warm start's checkpoint {} for the KL reference (keep checkpoint.keep_warm_start = true): {e}",
                        dir.display(),
                        warm.display()
                    ))
                };
                let m0 = ckpt::read_manifest(&warm).map_err(|e| need(e.to_string()))?;
                let mut reference = [ModelState {
                    name: "policy",
                    vs: ref_vs,
                    opt: ref_opt,
                }];
                checkpoint::load(&warm, &m0, &mut reference).map_err(need)?;
            }
        }
        // Rows of the iterations after the checkpoint's are now in reach (see `RowLimits`).
        store.raise_floor(m.iteration + 1);
        tracing::info!(checkpoint = %dir.display(), iteration = m.iteration, policy_version = m.policy_version, saved_by = m.world_size, secs = format!("{:.2}", t.elapsed().as_secs_f64()), "resumed from checkpoint");
        Ok(m.policy_version)
    }

    /// Writes this rank's shard of a checkpoint; returns its metrics (for the records) and its
    /// file, layouts and step counts (for the manifest).
    fn checkpoint(&mut self, w: &pb::WriteCheckpoint) -> Result<(serde_json::Value, pb::ShardWritten), WorkerError> {
        let Rank { l, policy_vs, rank, world, .. } = self;
        let (rank, world) = (*rank, *world);
        let t = Instant::now();
        let dir = Path::new(&w.dir);
        let models = [
            ModelState {
                name: "policy",
                vs: policy_vs,
                opt: &mut l.policy_opt,
            },
            ModelState {
                name: "reward",
                vs: &l.reward.vs,
                opt: &mut l.reward_opt,
            },
        ];
        let w = checkpoint::save_shard(dir, rank, world, &models).map_err(|e| WorkerError::Other(e.to_string()))?;
        let secs = t.elapsed().as_secs_f64();
        tracing::info!(file = %dir.join(&w.file.name).display(), mb = w.file.bytes / 1_000_000, secs = format!("{secs:.2}"), "checkpoint shard written");
        let shard = ckpt::wire::shard_written(&w.file, &w.layouts, &w.optimizer_steps);
        Ok((serde_json::json!({ "file": w.file.name, "bytes": w.file.bytes, "time_write_s": secs }), shard))
    }
}

impl Session {
    /// A tag derived from the run token (or none), so that rings of different runs never join.
    fn stamp_tag(&self) -> u64 {
        let mut meta = tonic::metadata::MetadataMap::new();
        self.stamp.apply(&mut meta);
        let t = meta.get(airlift_proto::auth::TOKEN_KEY).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        t.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
    }
}

/// The rows a task waits for: its rollout tasks' samples of its problems.
struct Wanted<'a> {
    task_id: u64,
    iteration: u64,
    prompt_ids: &'a [u64],
    rollout_task_ids: &'a [u64],
    samples_per_prompt: u32,
}

/// The rows of the rollout tasks `want` names, all of them (or an error after [`ROWS_TIMEOUT`]).
fn take_rows(store: &LearnerStore, want: &Wanted) -> Result<Vec<TrajectoryRow>, WorkerError> {
    let expected = want.prompt_ids.len() * want.samples_per_prompt as usize;
    let rows = store.take(want.iteration, want.rollout_task_ids, expected, ROWS_TIMEOUT).ok_or_else(|| {
        WorkerError::Other(format!(
            "task {} (iteration {}): {expected} rows did not all arrive within {} s",
            want.task_id,
            want.iteration,
            ROWS_TIMEOUT.as_secs()
        ))
    })?;
    if rows.len() != expected {
        return Err(WorkerError::Other(format!(
            "task {} (iteration {}): expected {expected} rows, got {}",
            want.task_id,
            want.iteration,
            rows.len()
        )));
    }
    Ok(rows)
}

/// The rows must be the ones `want` names: its iteration, its prompts, sample indices in range,
/// each (prompt, sample) once.
fn check_rows(want: &Wanted, rows: &[TrajectoryRow]) -> Result<(), WorkerError> {
    let mut seen = std::collections::HashSet::new();
    for r in rows {
        let bad = if r.iteration != want.iteration {
            Some(format!("iteration {} (expected {})", r.iteration, want.iteration))
        } else if !want.prompt_ids.contains(&r.prompt_id) {
            Some(format!("prompt_id {} is not one of this shard's prompts", r.prompt_id))
        } else if !seen.insert((r.prompt_id, r.sample_index % want.samples_per_prompt.max(1))) {
            Some(format!(
                "prompt {} has sample {} twice",
                r.prompt_id,
                r.sample_index % want.samples_per_prompt.max(1)
            ))
        } else {
            None
        };
        if let Some(why) = bad {
            return Err(WorkerError::Other(format!(
                "iteration {}: row (task {}, sample {}) from Flight: {why}",
                want.iteration, r.task_id, r.sample_index
            )));
        }
    }
    Ok(())
}

/// Line (0-based) of each token of `tokens`: a token whose text holds a newline ends its line.
fn token_lines(tok: &Tokenizer, tokens: &[u32]) -> Vec<u32> {
    let ends: Vec<bool> = tokens.iter().map(|&t| tok.decode(&[t]).map(|s| s.contains('\n')).unwrap_or(false)).collect();
    localize::step_ids(&ends).into_iter().map(|l| l as u32).collect()
}

/// [`localize::answer_line_start`] of `tokens`, each decoded on its own.
fn answer_line_start(tok: &Tokenizer, tokens: &[u32]) -> Option<usize> {
    let pieces: Vec<String> = tokens.iter().map(|&t| tok.decode(&[t]).unwrap_or_default()).collect();
    localize::answer_line_start(&pieces)
}

/// Ids per step of warm-start task `task_id`.
fn per_step(task_id: u64, w: &pb::WarmStart) -> Result<usize, WorkerError> {
    let n = w.prompt_ids.len();
    if w.steps == 0 || !n.is_multiple_of(w.steps as usize) {
        return Err(WorkerError::Other(format!(
            "task {task_id}: {n} prompt ids do not split into {} equal steps",
            w.steps
        )));
    }
    Ok(n / w.steps as usize)
}

fn expert_row(s: &Sample, text: &str, source: &str, iteration: u64, version: u64, pid: u64, index: u32) -> TrajectoryRow {
    TrajectoryRow {
        iteration,
        policy_version: version,
        task_id: 0,
        prompt_id: pid,
        sample_index: index,
        prompt_tokens: s.prompt.clone(),
        response_tokens: s.response.clone(),
        behaviour_logprobs: Vec::new(),
        finish_reason: "stop".into(),
        response_text: text.to_string(),
        predicted_answer: gsm8k::extract_answer(text),
        correct: s.correct,
        generation_ms: 0,
        source: source.into(),
        first_error_token: s.first_error_token.map(|v| v as i32),
    }
}

/// Sets the frozen `dst`'s parameters to `src`'s (the same model, so the same flat layout).
fn copy_flat(dst: &FlatAdamW, src: &FlatAdamW) {
    let mut flat = dst.flat().shallow_clone();
    tch::no_grad(|| flat.copy_(src.flat()));
}

/// The policy optimizer's hyper-parameters. One optimizer takes the SFT warm start's steps and
/// then the iterations'; its step count runs on across both, so `policy.lr_schedule = "cosine"`
/// is one decay over all of them (the warm start sets its own rate, `sft.lr`, and the factor
/// applies to both rates).
fn policy_optimizer_config(cfg: &RunConfig) -> AdamWConfig {
    AdamWConfig {
        lr: cfg.policy.lr,
        warmup_steps: 0,
        total_steps: match cfg.policy.lr_schedule {
            LrSchedule::Constant => 0,
            LrSchedule::Cosine => cfg.sft.steps as u64 + cfg.run.iterations * cfg.policy.steps as u64,
        },
        min_lr_ratio: cfg.policy.min_lr_ratio,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> RunConfig {
        RunConfig::from_toml(&format!("[run]\nname = \"t\"\n{extra}[model]\npolicy = \"m\"\n")).unwrap()
    }

    #[test]
    fn a_cosine_policy_schedule_spans_the_warm_start_and_the_iterations() {
        let cosine = "[policy]\nlr = 5e-5\nsteps = 2\nlr_schedule = \"cosine\"\nmin_lr_ratio = 0.1\n[sft]\nlr = 5e-5\n";
        let airl = policy_optimizer_config(&config(&format!("iterations = 6\n{cosine}steps = 80\n")));
        let sft_only = policy_optimizer_config(&config(&format!("iterations = 0\n{cosine}steps = 92\n")));
        // The equal-compute SFT baseline has the AIRL run's rate at every one of its 92 steps.
        assert_eq!(airl.total_steps, 92);
        for step in 0..92 {
            assert_eq!(airl.lr_at(step), sft_only.lr_at(step), "step {step}");
        }
        assert_eq!(airl.lr_at(0), 5e-5);
        assert!((airl.lr_at(46) - 0.55 * 5e-5).abs() < 1e-12, "half way: {}", airl.lr_at(46));
        assert!(
            airl.lr_at(80) < 0.2 * 5e-5 && airl.lr_at(91) > 0.1 * 5e-5,
            "{} {}",
            airl.lr_at(80),
            airl.lr_at(91)
        );
        assert!((airl.lr_at(92) - 5e-6).abs() < 1e-15);
        // Today's schedule: the configured rate at every step.
        let constant = policy_optimizer_config(&config("iterations = 6\n[policy]\nlr = 5e-5\nsteps = 2\n[sft]\nsteps = 80\n"));
        assert!([0, 46, 80, 91, 500].iter().all(|&s| constant.lr_at(s) == 5e-5));
    }
}
