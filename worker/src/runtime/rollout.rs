//! The rollout role: holds a no-grad policy copy at a known version; for each task pulls newer
//! weights if needed, samples G completions per prompt with the batched KV-cache generator,
//! grades them (metrics only), and sends the rows to the task's learner over Flight.

use super::data::RunData;
use super::{flight, load_flat_params, register, Session, WorkerError, WorkerOptions};
use crate::generate::{Generator, SamplingParams};
use crate::gsm8k::{self, ProblemSource};
use crate::model;
use crate::tokenizer::Tokenizer;
use airlift_proto::pb::{self, coordinator_message::Kind as Msg};
use airlift_proto::trajectory::TrajectoryRow;
use std::time::Instant;

pub(super) fn run(opts: &WorkerOptions, rt: tokio::runtime::Runtime) -> Result<(), WorkerError> {
    let mut s = register(
        opts,
        pb::RegisterRequest {
            device: super::local_device_name(),
            ..Default::default()
        },
        rt,
    )?;
    // Errors from here on also go to the coordinator, which reports them as the reason.
    let result = (|| -> Result<(), WorkerError> {
        let cfg = s.config.clone();
        let (threads, from) = super::set_threads(&cfg);
        tracing::info!(threads, from, cpu = %airlift_proto::host::cpu_summary(), "libtorch intra-op threads");
        let kind = super::compute_kind(&cfg, cfg.model.rollout_dtype, "model.rollout_dtype");
        let m = model::load(&cfg.model.policy, super::device(&cfg)?, kind).map_err(|e| WorkerError::Other(e.to_string()))?;
        let tok = Tokenizer::from_dir(&cfg.model.policy).map_err(|e| WorkerError::Other(e.to_string()))?;
        let eos: Vec<i64> = m.model.config().eos_token_ids.clone();
        let pad = m.model.config().pad_token_id.unwrap_or(eos.first().copied().unwrap_or(0));
        let data = RunData::new(&cfg, eos.first().copied().unwrap_or(0) as u32);
        let gen = Generator::new(&m.model, cfg.sampling.max_batch as usize);
        tracing::info!(worker_id = s.worker_id, cuda_graphs = gen.uses_graphs(), "rollout worker ready");
        let mut w = Rollout {
            clients: flight::Clients::new(s.stamp.clone()),
            m,
            gen,
            tok,
            data,
            version: 0,
            eos,
            pad,
        };
        loop {
            match s.next_message()? {
                Msg::Rollout(task) => {
                    let task_id = task.task_id;
                    let result = w.run_task(&mut s, task);
                    if let Err(e) = &result {
                        tracing::error!(task_id, error = %e, "rollout task failed");
                    }
                    let outcome = result.map(|(rows, metrics)| super::Outcome { rows, metrics, result: None });
                    s.report(task_id, outcome.map_err(|e| e.to_string()))?;
                }
                Msg::Shutdown(sd) => {
                    tracing::info!(reason = %sd.reason, "shutting down");
                    break;
                }
                other => tracing::warn!(?other, "rollout worker ignores this message"),
            }
        }
        Ok(())
    })();
    if let Err(e) = &result {
        s.fatal(e);
    }
    result
}

/// What a rollout worker holds between tasks.
struct Rollout {
    clients: flight::Clients,
    /// The policy copy (no grad), at `version`.
    m: model::LoadedModel,
    gen: Generator,
    tok: Tokenizer,
    data: RunData,
    version: u64,
    eos: Vec<i64>,
    pad: i64,
}

impl Rollout {
    /// Runs one rollout task: pulls newer weights if needed, samples, grades, sends the rows.
    fn run_task(&mut self, s: &mut Session, task: pb::RolloutTask) -> Result<(u64, String), WorkerError> {
        let Rollout {
            clients,
            m,
            gen,
            tok,
            data,
            version,
            eos,
            pad,
        } = self;
        let (eos, pad) = (eos.as_slice(), *pad);
        let mut sync_ms = 0.0;
        if task.policy_version != *version {
            let t = Instant::now();
            let flat =
                s.rt.block_on(clients.get_weights(&task.weights_flight_addr, task.policy_version))
                    .map_err(|e| WorkerError::Other(format!("pulling policy v{} from {}: {e}", task.policy_version, task.weights_flight_addr)))?;
            load_flat_params(&m.vs, &flat)?;
            gen.refresh(&m.model);
            *version = task.policy_version;
            sync_ms = t.elapsed().as_secs_f64() * 1e3;
            tracing::info!(version = *version, ms = sync_ms as u64, "policy weights updated");
        }
        let sp = task.sampling.unwrap_or_default();
        let g = task.samples_per_prompt as usize;
        let source = ProblemSource::parse(&task.problem_set);
        let mut jobs = Vec::new();
        for (pos, &pid) in task.prompt_ids.iter().enumerate() {
            let prompt = data.prompt_tokens_of(tok, &source, pid).map_err(WorkerError::Other)?;
            for k in 0..g {
                jobs.push((pid, (pos * g + k) as u32, prompt.clone()));
            }
        }
        let t = Instant::now();
        let mut rows = Vec::with_capacity(jobs.len());
        let mut tokens = 0usize;
        let params = SamplingParams {
            temperature: sp.temperature,
            top_p: sp.top_p,
            max_new_tokens: sp.max_new_tokens as usize,
            seed: task.seed,
            ignore_eos: false,
        };
        let prompts: Vec<Vec<u32>> = jobs.iter().map(|j| j.2.clone()).collect();
        let out = gen.generate(&m.model, &prompts, eos, pad, &params);
        let per_row_ms = (out.elapsed_ms / jobs.len().max(1) as f64) as u32;
        for ((pid, sample_index, prompt), comp) in jobs.into_iter().zip(out.completions) {
            tokens += comp.tokens.len();
            let text = tok.decode(&comp.tokens).map_err(|e| WorkerError::Other(e.to_string()))?;
            let problem = data.problem_of(&source, pid).map_err(WorkerError::Other)?;
            let (predicted, correct) = gsm8k::grade(&text, problem);
            rows.push(TrajectoryRow {
                iteration: task.iteration,
                policy_version: *version,
                task_id: task.task_id,
                prompt_id: pid,
                sample_index,
                prompt_tokens: prompt,
                response_tokens: comp.tokens,
                behaviour_logprobs: comp.logprobs,
                finish_reason: comp.finish.as_str().into(),
                response_text: text,
                predicted_answer: predicted,
                correct: Some(correct),
                generation_ms: per_row_ms,
                source: "policy".into(),
                first_error_token: None,
            });
        }
        let gen_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let accepted =
            s.rt.block_on(clients.put_rows(&task.learner_flight_addr, &rows))
                .map_err(|e| WorkerError::Other(format!("sending rows to {}: {e}", task.learner_flight_addr)))?;
        let transfer_ms = t.elapsed().as_secs_f64() * 1e3;
        let correct = rows.iter().filter(|r| r.correct == Some(true)).count();
        let metrics = serde_json::json!({
            "generation_ms": gen_ms, "transfer_ms": transfer_ms, "weight_sync_ms": sync_ms,
            "tokens": tokens, "rows": rows.len(), "accepted": accepted, "correct": correct,
        });
        Ok((rows.len() as u64, metrics.to_string()))
    }
}
