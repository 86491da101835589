//! Batched autoregressive generation with a KV cache.
//!
//! Prompts of different lengths are left-padded into one batch; rotary positions count real
//! tokens only, so each row computes what it would compute alone. Sampling is greedy
//! (`temperature = 0`) or temperature + nucleus (top-p), driven by one seeded stream per row
//! ([`SplitMix64::for_stream`]), so results do not depend on torch's global generator.
//!
//! Behaviour log-probabilities: for each generated token we record `log softmax(logits / T)` at
//! that token (T = 1 when greedy), i.e. the log-probability under the tempered policy *before*
//! top-p truncation. That is the quantity a learner recomputes from the same weights, so the PPO
//! ratio against it is 1 when no update happened (the OpenRLHF / veRL convention).

use crate::model::llama::{ForwardInput, Llama};
use crate::rng::SplitMix64;
use std::time::Instant;
use tch::{Kind, Tensor};

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token was generated (it is included in the tokens).
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

impl FinishReason {
    /// The name used in trajectory records.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Sampling parameters.
#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 = greedy; otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 disables top-p.
    pub top_p: f64,
    /// Maximum number of generated tokens per sequence.
    pub max_new_tokens: usize,
    /// Seed of the per-row random streams.
    pub seed: u64,
    /// Keep generating past EOS until `max_new_tokens` (for benchmarks with a fixed length).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_p: 1.0, max_new_tokens: 256, seed: 0, ignore_eos: false }
    }
}

/// One generated completion.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Generated token ids (EOS included when `finish == Stop`).
    pub tokens: Vec<u32>,
    /// Behaviour log-probability of each generated token (see the module docs).
    pub logprobs: Vec<f32>,
    pub finish: FinishReason,
}

/// A batch's completions and timing.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    pub completions: Vec<Completion>,
    /// Wall time of the whole call, milliseconds.
    pub elapsed_ms: f64,
    /// Time to the first generated token (prefill), milliseconds.
    pub prefill_ms: f64,
}

impl BatchOutput {
    /// Number of generated tokens in the batch.
    pub fn generated_tokens(&self) -> usize {
        self.completions.iter().map(|c| c.tokens.len()).sum()
    }
}

/// Generates completions for `prompts` (token ids) in one batch. `eos`: token ids that end a
/// sequence; `pad_id`: the id used for left padding (any valid id: it is masked out).
pub fn generate(model: &Llama, prompts: &[Vec<u32>], eos: &[i64], pad_id: i64, params: &SamplingParams) -> BatchOutput {
    tch::no_grad(|| generate_inner(model, prompts, eos, pad_id, params))
}

fn generate_inner(model: &Llama, prompts: &[Vec<u32>], eos: &[i64], pad_id: i64, p: &SamplingParams) -> BatchOutput {
    let start = Instant::now();
    let dev = model.device();
    let b = prompts.len();
    assert!(b > 0, "generate needs at least one prompt");
    assert!(prompts.iter().all(|q| !q.is_empty()), "every prompt needs at least one token");
    let t0 = prompts.iter().map(Vec::len).max().unwrap();
    let max_new = p.max_new_tokens;
    let mut ids = vec![pad_id; b * t0];
    let mut mask = vec![false; b * t0];
    for (r, q) in prompts.iter().enumerate() {
        let off = r * t0 + t0 - q.len();
        for (j, &tok) in q.iter().enumerate() {
            ids[off + j] = tok as i64;
            mask[off + j] = true;
        }
    }
    let input_ids = Tensor::from_slice(&ids).view([b as i64, t0 as i64]).to_device(dev);
    let prompt_mask = Tensor::from_slice(&mask).view([b as i64, t0 as i64]).to_device(dev);
    let positions = crate::model::llama::positions_from_mask(&prompt_mask);
    // Next position per row = its prompt length.
    let mut next_pos = positions.select(1, t0 as i64 - 1) + 1;
    let key_mask = Tensor::zeros([b as i64, (t0 + max_new) as i64], (Kind::Bool, dev));
    key_mask.narrow(1, 0, t0 as i64).copy_(&prompt_mask);
    let mut cache = model.new_cache(b as i64, (t0 + max_new) as i64);

    let mut rngs: Vec<SplitMix64> = (0..b).map(|r| SplitMix64::for_stream(p.seed, r as u64)).collect();
    let mut out: Vec<Completion> =
        (0..b).map(|_| Completion { tokens: Vec::new(), logprobs: Vec::new(), finish: FinishReason::Length }).collect();
    let mut done = vec![false; b];
    let eos_t = Tensor::from_slice(eos).to_device(dev);

    let logits = model.forward(
        &ForwardInput { input_ids: &input_ids, positions: &positions, key_mask: &key_mask.narrow(1, 0, t0 as i64) },
        Some(&mut cache),
    );
    let mut last = logits.select(1, t0 as i64 - 1);
    let mut prefill_ms = 0.0;
    for step in 0..max_new {
        let (next, logp) = sample(&last, p, &mut rngs);
        if step == 0 {
            prefill_ms = start.elapsed().as_secs_f64() * 1e3;
        }
        let is_eos: Vec<bool> = if eos.is_empty() || p.ignore_eos {
            vec![false; b]
        } else {
            Vec::<bool>::try_from(next.unsqueeze(1).eq_tensor(&eos_t.unsqueeze(0)).any_dim(1, false).to_device(tch::Device::Cpu))
                .expect("bool tensor")
        };
        let next_v = Vec::<i64>::try_from(next.to_device(tch::Device::Cpu)).expect("int tensor");
        let logp_v = Vec::<f32>::try_from(logp.to_device(tch::Device::Cpu)).expect("float tensor");
        for r in 0..b {
            if done[r] {
                continue;
            }
            out[r].tokens.push(next_v[r] as u32);
            out[r].logprobs.push(logp_v[r]);
            if is_eos[r] {
                done[r] = true;
                out[r].finish = FinishReason::Stop;
            }
        }
        if done.iter().all(|&d| d) || step + 1 == max_new {
            break;
        }
        // Feed the sampled tokens (finished rows feed padding that nobody attends to).
        let feed: Vec<i64> = (0..b).map(|r| if done[r] { pad_id } else { next_v[r] }).collect();
        let feed = Tensor::from_slice(&feed).view([b as i64, 1]).to_device(dev);
        let col = (t0 + step) as i64;
        let _ = key_mask.narrow(1, col, 1).fill_(1);
        let logits = model.forward(
            &ForwardInput { input_ids: &feed, positions: &next_pos.view([b as i64, 1]), key_mask: &key_mask.narrow(1, 0, col + 1) },
            Some(&mut cache),
        );
        last = logits.select(1, 0);
        next_pos += 1;
    }
    BatchOutput { completions: out, elapsed_ms: start.elapsed().as_secs_f64() * 1e3, prefill_ms }
}

/// Picks one token per row from `logits` [B, V]; returns (tokens [B], behaviour log-probs [B]).
fn sample(logits: &Tensor, p: &SamplingParams, rngs: &mut [SplitMix64]) -> (Tensor, Tensor) {
    let logits = logits.to_kind(Kind::Float);
    if p.temperature <= 0.0 {
        let next = logits.argmax(-1, false);
        let logp = logits.log_softmax(-1, Kind::Float).gather(1, &next.unsqueeze(1), false).squeeze_dim(1);
        return (next, logp);
    }
    let logp_all = (&logits / p.temperature).log_softmax(-1, Kind::Float);
    let probs = logp_all.exp();
    let (probs_sorted, order) = if p.top_p < 1.0 {
        let (sorted, idx) = probs.sort(-1, true);
        // Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        let before = sorted.cumsum(-1, Kind::Float) - &sorted;
        let keep = before.lt(p.top_p);
        (sorted * keep, Some(idx))
    } else {
        (probs, None)
    };
    let cdf = probs_sorted.cumsum(-1, Kind::Float);
    let total = cdf.select(1, cdf.size()[1] - 1);
    let u: Vec<f32> = rngs.iter_mut().map(|g| g.next_f64() as f32).collect();
    let u = Tensor::from_slice(&u).to_device(logits.device()) * total;
    let v = cdf.size()[1];
    // Inverse CDF: the first index whose cumulative mass exceeds u ("right" side).
    let pos = u.unsqueeze(1).searchsorted(&cdf, false, true, "right", None::<Tensor>).clamp_max(v - 1);
    let next = match order {
        Some(idx) => idx.gather(1, &pos, false),
        None => pos,
    };
    let logp = logp_all.gather(1, &next, false).squeeze_dim(1);
    (next.squeeze_dim(1), logp)
}
