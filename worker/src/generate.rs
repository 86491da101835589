//! Batched autoregressive generation with a per-row KV cache and continuous batching.
//!
//! [`Generator`] decodes up to `max_slots` sequences at a time. Every row of its cache (a slot)
//! holds one sequence at columns equal to its rotary positions, so a row whose sequence finished
//! is refilled with the next waiting prompt at once instead of decoding padding (continuous
//! batching, as vLLM and SGLang do); equal prompts in one refill (the G samples of a rollout
//! prompt) are prefilled once. A decode step is one fixed sequence of kernels over fused q|k|v and
//! gate|up projections ([`Llama::decode_step`]); on CUDA it is captured once per (slots, capacity)
//! bucket as a CUDA graph and replayed, so a step costs one launch instead of hundreds. Sampling
//! stays on the device; one small device-to-host copy per step brings back the tokens.
//!
//! Sampling is greedy (`temperature = 0`) or temperature + nucleus (top-p), driven by one seeded
//! stream per sequence ([`SplitMix64::for_stream`] with the sequence's index), so a sequence's
//! tokens do not depend on which slot or batch it ran in, nor on torch's global generator.
//!
//! Behaviour log-probabilities: for each generated token we record `log softmax(logits / T)` at
//! that token (T = 1 when greedy), i.e. the log-probability under the tempered policy *before*
//! top-p truncation. That is the quantity a learner recomputes from the same weights, so the PPO
//! ratio against it is 1 when no update happened (the OpenRLHF / veRL convention).

use crate::cuda;
use crate::model::llama::{DecodeWeights, Llama, SlotCache};
use crate::rng::SplitMix64;
use std::collections::HashMap;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

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
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens: 256,
            seed: 0,
            ignore_eos: false,
        }
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

/// Generates completions for `prompts` (token ids) with a one-off [`Generator`] (all prompts in
/// one batch). `eos`: token ids that end a sequence; `pad_id`: any valid id (it is masked out).
pub fn generate(model: &Llama, prompts: &[Vec<u32>], eos: &[i64], pad_id: i64, params: &SamplingParams) -> BatchOutput {
    let mut g = Generator::new(model, prompts.len().max(1));
    g.generate(model, prompts, eos, pad_id, params)
}

/// Cache columns are allocated in multiples of this, so that calls with slightly different
/// prompt lengths reuse one cache (and one CUDA graph).
const CAPACITY_STEP: usize = 128;

/// At most this many (slots, capacity) caches are kept between calls; each holds its KV cache
/// and, on CUDA, its graph's memory pool.
const MAX_KEPT_STATES: usize = 4;

/// Where a decode step runs: eagerly, or as a replayed CUDA graph.
struct StepState {
    cache: SlotCache,
    /// [2, slots] int64 on the device: row 0 the fed token ids, row 1 the positions written.
    input: Tensor,
    /// The captured decode step and its output logits (CUDA only).
    graph: Option<(cuda::Graph, Tensor)>,
}

/// A reusable generator: fused decode weights, per-bucket caches and (on CUDA) captured graphs.
/// Keep one per model; after the model's weights change in place call [`Generator::refresh`].
pub struct Generator {
    weights: DecodeWeights,
    states: HashMap<(i64, i64), StepState>,
    max_slots: usize,
    use_graphs: bool,
    /// Graph captures so far (for logs and benchmarks).
    pub captures: usize,
}

impl Generator {
    /// A generator decoding up to `max_slots` sequences together. On CUDA, decode steps run as
    /// CUDA graphs when the binary has them ([`cuda::graphs_built`]) unless `AIRLIFT_CUDA_GRAPHS=0`.
    pub fn new(model: &Llama, max_slots: usize) -> Self {
        let on_cuda = matches!(model.device(), Device::Cuda(_));
        let disabled = std::env::var("AIRLIFT_CUDA_GRAPHS").is_ok_and(|v| v == "0");
        Generator {
            weights: model.decode_weights(),
            states: HashMap::new(),
            max_slots: max_slots.max(1),
            use_graphs: on_cuda && cuda::graphs_built() && !disabled,
            captures: 0,
        }
    }

    /// Whether decode steps replay CUDA graphs.
    pub fn uses_graphs(&self) -> bool {
        self.use_graphs
    }

    /// Copies the model's current weights into the fused decode weights (in place, so captured
    /// graphs stay valid). Call after a weight sync.
    pub fn refresh(&mut self, model: &Llama) {
        model.refresh_decode_weights(&mut self.weights);
    }

    /// Generates one completion per prompt; results are in prompt order.
    pub fn generate(&mut self, model: &Llama, prompts: &[Vec<u32>], eos: &[i64], pad_id: i64, params: &SamplingParams) -> BatchOutput {
        tch::no_grad(|| self.generate_inner(model, prompts, eos, pad_id, params))
    }

    /// Creates (and on CUDA captures) what a call with `prompts` prompts of up to `prompt_len`
    /// tokens and `max_new_tokens` needs, so that a timed call measures decoding only.
    pub fn prepare(&mut self, model: &Llama, prompts: usize, prompt_len: usize, max_new_tokens: usize, pad_id: i64) {
        let (slots, capacity) = self.bucket(prompts, prompt_len, max_new_tokens);
        tch::no_grad(|| {
            self.state(model, slots, capacity, pad_id);
        });
    }

    /// (slots, capacity) for a call.
    fn bucket(&self, prompts: usize, longest: usize, max_new: usize) -> (i64, i64) {
        let capacity = ((longest + max_new.max(1)).div_ceil(CAPACITY_STEP) * CAPACITY_STEP) as i64;
        let slots = prompts.min(self.max_slots).next_power_of_two().min(self.max_slots) as i64;
        (slots, capacity)
    }

    /// The step state for `slots` rows of `capacity` columns, created (and on CUDA captured) on
    /// first use.
    fn state(&mut self, model: &Llama, slots: i64, capacity: i64, pad_id: i64) -> &mut StepState {
        let key = (slots, capacity);
        if !self.states.contains_key(&key) {
            if self.states.len() >= MAX_KEPT_STATES {
                self.states.clear();
            }
            let dev = model.device();
            let cache = model.new_slot_cache(slots, capacity);
            let input = Tensor::zeros([2, slots], (Kind::Int64, dev));
            let _ = input.select(0, 0).fill_(pad_id);
            let mut graph = None;
            if self.use_graphs {
                let w = &self.weights;
                let run = || model.decode_step(w, &cache, &input.select(0, 0).view([slots, 1]), &input.select(0, 1), capacity);
                let captured = cuda::on_side_stream(run).and_then(|_| cuda::Graph::capture(run));
                match captured {
                    Ok((g, logits)) => {
                        graph = Some((g, logits));
                        self.captures += 1;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cuda graph capture failed; decoding eagerly");
                        self.use_graphs = false;
                    }
                }
            }
            self.states.insert(key, StepState { cache, input, graph });
        }
        self.states.get_mut(&key).expect("inserted above")
    }

    fn generate_inner(&mut self, model: &Llama, prompts: &[Vec<u32>], eos: &[i64], pad_id: i64, p: &SamplingParams) -> BatchOutput {
        let start = Instant::now();
        let n = prompts.len();
        assert!(n > 0, "generate needs at least one prompt");
        assert!(prompts.iter().all(|q| !q.is_empty()), "every prompt needs at least one token");
        let max_new = p.max_new_tokens.max(1);
        let longest = prompts.iter().map(Vec::len).max().unwrap();
        let (slots, capacity) = self.bucket(n, longest, max_new);
        let dev = model.device();
        let use_graphs = self.use_graphs;
        self.state(model, slots, capacity, pad_id);
        let weights = &self.weights;
        let st = self.states.get_mut(&(slots, capacity)).expect("created above");
        st.cache.clear();

        let b = slots as usize;
        let mut rngs: Vec<SplitMix64> = (0..n).map(|r| SplitMix64::for_stream(p.seed, r as u64)).collect();
        let mut out: Vec<Completion> = (0..n)
            .map(|_| Completion {
                tokens: Vec::new(),
                logprobs: Vec::new(),
                finish: FinishReason::Length,
            })
            .collect();
        let mut slot_seq: Vec<Option<usize>> = vec![None; b];
        let mut pos = vec![0i64; b];
        let mut feed = vec![pad_id; b];
        let (mut next_seq, mut remaining) = (0usize, n);
        let mut prefill_ms = None;
        // Row `r` sampled `tok`: when its sequence is `done` the row empties (and decodes padding
        // at column 0 until refilled), else it feeds `tok` at column `next_pos`. Returns `done`.
        let advance = |slot_seq: &mut [Option<usize>], pos: &mut [i64], feed: &mut [i64], r: usize, done: bool, tok: i64, next_pos: i64| {
            if done {
                slot_seq[r] = None;
                (pos[r], feed[r]) = (0, pad_id);
            } else {
                (pos[r], feed[r]) = (next_pos, tok);
            }
            done
        };
        // Appends a sampled token to sequence `seq`; returns whether it finished.
        let push = |out: &mut Vec<Completion>, seq: usize, tok: i64, logp: f32| -> bool {
            let c = &mut out[seq];
            c.tokens.push(tok as u32);
            c.logprobs.push(logp);
            if !p.ignore_eos && eos.contains(&tok) {
                c.finish = FinishReason::Stop;
                return true;
            }
            c.tokens.len() >= max_new
        };
        loop {
            // Refill empty rows with waiting prompts (again if a refilled sequence ends at once).
            while next_seq < n && slot_seq.iter().any(Option::is_none) {
                let mut rows = Vec::new();
                for (r, s) in slot_seq.iter_mut().enumerate() {
                    if s.is_none() && next_seq < n {
                        *s = Some(next_seq);
                        rows.push(r);
                        next_seq += 1;
                    }
                }
                let seqs: Vec<usize> = rows.iter().map(|&r| slot_seq[r].unwrap()).collect();
                let rows_i: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
                let ps: Vec<&[u32]> = seqs.iter().map(|&s| prompts[s].as_slice()).collect();
                let logits = model.prefill_slots(&st.cache, &rows_i, &ps, pad_id);
                let u: Vec<f32> = seqs
                    .iter()
                    .map(|&s| if p.temperature > 0.0 { rngs[s].next_f64() as f32 } else { 0.0 })
                    .collect();
                let (toks, logps) = sample_to_host(&logits, p, &u);
                prefill_ms.get_or_insert(start.elapsed().as_secs_f64() * 1e3);
                for (i, &r) in rows.iter().enumerate() {
                    let done = push(&mut out, seqs[i], toks[i], logps[i]);
                    remaining -= advance(&mut slot_seq, &mut pos, &mut feed, r, done, toks[i], prompts[seqs[i]].len() as i64) as usize;
                }
            }
            if remaining == 0 {
                break;
            }
            // One decode step for every row (empty rows decode padding at column 0).
            let host: Vec<i64> = feed.iter().chain(pos.iter()).copied().collect();
            st.input.copy_(&Tensor::from_slice(&host).view([2, slots]));
            let logits = match &st.graph {
                Some((g, logits)) if use_graphs => {
                    g.replay().expect("replaying a captured cuda graph");
                    logits.shallow_clone()
                }
                _ => {
                    let attend = if dev == Device::Cpu {
                        (0..b).filter(|&r| slot_seq[r].is_some()).map(|r| pos[r] + 1).max().unwrap_or(1)
                    } else {
                        capacity
                    };
                    model.decode_step(weights, &st.cache, &st.input.select(0, 0).view([slots, 1]), &st.input.select(0, 1), attend)
                }
            };
            let u: Vec<f32> = (0..b)
                .map(|r| match slot_seq[r] {
                    Some(s) if p.temperature > 0.0 => rngs[s].next_f64() as f32,
                    _ => 0.5,
                })
                .collect();
            let (toks, logps) = sample_to_host(&logits, p, &u);
            for r in 0..b {
                let Some(seq) = slot_seq[r] else { continue };
                let done = push(&mut out, seq, toks[r], logps[r]);
                let next = pos[r] + 1;
                remaining -= advance(&mut slot_seq, &mut pos, &mut feed, r, done, toks[r], next) as usize;
            }
        }
        BatchOutput {
            completions: out,
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            prefill_ms: prefill_ms.unwrap_or(0.0),
        }
    }
}

/// Samples one token per row of `logits` [B, V] on its device and brings tokens and behaviour
/// log-probs to the host (the step's one synchronisation).
fn sample_to_host(logits: &Tensor, p: &SamplingParams, u: &[f32]) -> (Vec<i64>, Vec<f32>) {
    let (next, logp) = sample(logits, p, u);
    let both = Tensor::cat(&[next.to_kind(Kind::Double), logp.to_kind(Kind::Double)], 0).to_device(Device::Cpu);
    let v = Vec::<f64>::try_from(both).expect("f64 tensor");
    let b = u.len();
    (v[..b].iter().map(|&x| x as i64).collect(), v[b..].iter().map(|&x| x as f32).collect())
}

/// Picks one token per row from `logits` [B, V]; returns (tokens [B], behaviour log-probs [B]).
fn sample(logits: &Tensor, p: &SamplingParams, u: &[f32]) -> (Tensor, Tensor) {
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
    let u = Tensor::from_slice(u).to_device(logits.device()) * total;
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
