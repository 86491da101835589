//! One AIRL iteration as a function (design §1, "order inside one iteration"): discriminator
//! step(s) on the fresh batch, then per-token rewards from the updated reward model, group
//! advantages, and PPO policy step(s). Also the SFT warm-start step.
//!
//! The distributed learner calls this same code: gradients pass through a [`GradReducer`]
//! between backward and the optimizer step (identity in one process; an all-reduce across
//! learners later), and each optimizer may own only its shard of the flat parameters.
//!
//! Sequences are `prompt ++ response`, right-padded; every per-token tensor lives in "shifted"
//! space of length `L − 1`, where index `i` stands for the token at position `i + 1` (see
//! [`super::losses`] for why the reward is read at `p` and `log π` at `p − 1`). Work is split into
//! micro-batches of about `micro_batch` rows' worth of positions with losses scaled so that the
//! accumulated gradient equals the full-batch gradient. The rows of one prompt are computed as
//! one prefix tree ([`crate::model::packed`]): the shared prompt, and whatever else the rows
//! share (an expert and its corruptions up to the first error), once.

use super::losses::{self, CorrectSamples, DiscriminatorForm};
use super::metrics::{auroc, IterationMetrics};
use super::reward::RewardModel;
use crate::model::head;
use crate::model::llama::Llama;
use crate::model::packed::{self, Packed};
use crate::train::optim::FlatAdamW;
pub use crate::train::{GradReducer, NoReduce};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// One training sequence.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    /// The prompt's group (its prompt id): samples of one prompt are normalised together.
    pub group: i64,
    /// Behaviour log-probs of the response tokens (policy samples only).
    pub behaviour_logprobs: Option<Vec<f32>>,
    /// Whether the final answer grades right (policy samples; metrics and outcome reward only).
    pub correct: Option<bool>,
    /// Index into `response` of the first wrong token (corrupted traces only).
    pub first_error_token: Option<usize>,
    /// Index into `response` just past the line that holds the first wrong token (corrupted
    /// traces only; the response's length when that line is the last).
    pub error_line_end: Option<usize>,
    /// Index into `response` of the first token of the final answer line (the last line that
    /// holds `####`; policy samples, where it has one).
    pub answer_line_start: Option<usize>,
}

/// The three kinds of rows of one iteration. Experts and corruptions are for the same prompts
/// as the policy samples.
#[derive(Debug, Clone, Default)]
pub struct IterationBatch {
    pub policy: Vec<Sample>,
    pub experts: Vec<Sample>,
    pub corrupted: Vec<Sample>,
}

/// Algorithm settings of an iteration (the `reward.*` and `policy.*` config keys).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirlConfig {
    /// `reward.discriminator`: `airl` (logit D = f − log π) or `logit` (logit D = f).
    pub discriminator: DiscriminatorForm,
    /// `reward.label_smoothing` ε (targets 1 − ε/2 and ε/2). Default 0.1.
    pub label_smoothing: f64,
    /// `reward.class_balance`: weight experts and negatives equally. Default true.
    pub class_balance: bool,
    /// `reward.temperature`: rewards are logit D divided by this. Default 1.
    pub reward_temperature: f64,
    /// `reward.clip`: clip rewards to ±this (none if absent).
    pub reward_clip: Option<f64>,
    /// `reward.outcome_weight`: added to the last token's reward of a right answer. Default 0.
    pub outcome_weight: f64,
    /// `reward.disc_steps`: discriminator steps per iteration. Default 1.
    pub disc_steps: usize,
    /// `policy.gamma`: discount of the reward-to-go. Default 0.9 (0 = per-token advantages).
    pub gamma: f64,
    /// `policy.expert_in_group`: expert traces join their group's reward statistics.
    pub expert_in_group: bool,
    /// `policy.advantage = "sequence"`: one group-normalised score (the mean token reward) per
    /// sample as every token's advantage, instead of the token reward-to-go. Default false.
    pub sequence_advantage: bool,
    /// `policy.reward_source = "grade"`: with `sequence_advantage`, each policy sample is scored
    /// 1 when it grades right and 0 otherwise (experts in the group 1) instead of by the learned
    /// reward, which is still trained but does not reach the policy. Default false.
    pub grade_scores: bool,
    /// `policy.clip_eps`: PPO ratio clip ε. Default 0.2.
    pub clip_eps: f64,
    /// `policy.kl_coef`: weight of the KL to the frozen reference. Default 0.
    pub kl_coef: f64,
    /// `policy.sft_coef`: weight of the experts' token-mean NLL added to every policy step's
    /// loss (a replay of the demonstrations). Default 0.
    pub sft_coef: f64,
    /// `policy.steps`: policy steps per iteration (0: the policy stays frozen). Default 1.
    pub policy_steps: usize,
    /// Rows per micro-batch for forward/backward: a micro-batch holds at most this many rows'
    /// worth of positions, as prefix trees (memory knob; results do not depend on it beyond
    /// rounding).
    pub micro_batch: usize,
    /// `policy.pack_prefixes`: rows with the same prompt share their common prefix in one tree
    /// ([`packed`]); false packs every row alone (no attention mask: flash attention on GPUs).
    pub pack_prefixes: bool,
    /// Token id used to pad batches (any valid id; padding is masked).
    pub pad_id: i64,
    /// `reward.ignore_corrupted_prefix`: leave a corrupted trace's tokens before its first error
    /// out of the discriminator loss (they equal the expert's, which are labelled 1). Default
    /// false: every response token of a corrupted trace is labelled 0, as design §1 states.
    pub ignore_corrupted_prefix: bool,
    /// `reward.ignore_corrupted_suffix`: leave a corrupted trace's tokens after the line of its
    /// first error out of the discriminator loss (they follow from the error and are often
    /// right by themselves). Default false.
    pub ignore_corrupted_suffix: bool,
    /// `reward.wrong_answer_line_weight` (0 with `reward.ignore_wrong_answer_line`): the weight
    /// of the answer line of policy samples that grade wrong ([`Sample::answer_line_start`]
    /// onwards) in the discriminator loss. Default 1 (labelled like the rest of the sample).
    pub wrong_answer_line_weight: f32,
    /// `reward.correct_policy_samples`: how the discriminator labels policy samples that grade
    /// right. Default `Negative` (design §1).
    pub correct_policy_samples: CorrectSamples,
    /// `policy.behaviour_logprobs = "learner"`: PPO's old log-probs are the learner's own,
    /// computed before the first policy step, instead of the rollout worker's (`"rollout"`,
    /// the default). The first step's ratio is then exactly 1 whatever the rounding differences
    /// between the two (bf16 decode vs packed bf16 training forward); it drops the correction
    /// for samples drawn by an older policy (`max_staleness > 0`).
    pub learner_behaviour: bool,
}

impl Default for AirlConfig {
    fn default() -> Self {
        AirlConfig {
            discriminator: DiscriminatorForm::Airl,
            label_smoothing: 0.1,
            class_balance: true,
            reward_temperature: 1.0,
            reward_clip: None,
            outcome_weight: 0.0,
            disc_steps: 1,
            gamma: 0.9,
            expert_in_group: false,
            sequence_advantage: false,
            grade_scores: false,
            clip_eps: 0.2,
            kl_coef: 0.0,
            sft_coef: 0.0,
            policy_steps: 1,
            micro_batch: 8,
            pack_prefixes: true,
            pad_id: 0,
            ignore_corrupted_prefix: false,
            ignore_corrupted_suffix: false,
            wrong_answer_line_weight: 1.0,
            correct_policy_samples: CorrectSamples::Negative,
            learner_behaviour: false,
        }
    }
}

/// `(row, answer line start)` of the policy samples that grade wrong, rows numbered from
/// `first` (where the policy rows begin in the discriminator's batch).
fn wrong_answer_lines(policy: &[&Sample], first: usize) -> Vec<(usize, usize)> {
    policy
        .iter()
        .enumerate()
        .filter(|(_, s)| s.correct == Some(false))
        .filter_map(|(i, s)| s.answer_line_start.map(|a| (first + i, a)))
        .collect()
}

/// Right-padded rows in shifted space.
struct Padded {
    /// Each row's tokens, prompt then response.
    tokens: Vec<Vec<u32>>,
    ids: Tensor,
    /// [N, L−1] float: 1 where the shifted index is a response token that the losses count.
    resp_mask: Tensor,
    /// [N, L−1] float: 1 at every response token (`resp_mask` before `mask_prefixes`): where
    /// token log-probs are computed.
    resp_all: Tensor,
    /// [N, L−1] int64: ids[:, 1:].
    targets: Tensor,
    /// Per row: (prompt length, response length).
    spans: Vec<(usize, usize)>,
}

fn pad(rows: &[&Sample], pad_id: i64, device: Device) -> Padded {
    let l = rows.iter().map(|s| s.prompt.len() + s.response.len()).max().unwrap_or(1).max(2);
    let n = rows.len();
    let mut ids = vec![pad_id; n * l];
    let mut rm = vec![0f32; n * (l - 1)];
    let mut spans = Vec::with_capacity(n);
    for (r, s) in rows.iter().enumerate() {
        assert!(!s.prompt.is_empty(), "a training sequence needs a non-empty prompt");
        for (j, &t) in s.prompt.iter().chain(&s.response).enumerate() {
            ids[r * l + j] = t as i64;
        }
        for j in 0..s.response.len() {
            rm[r * (l - 1) + s.prompt.len() + j - 1] = 1.0;
        }
        spans.push((s.prompt.len(), s.response.len()));
    }
    let ids = Tensor::from_slice(&ids).view([n as i64, l as i64]).to_device(device);
    let resp_mask = Tensor::from_slice(&rm).view([n as i64, l as i64 - 1]).to_device(device);
    Padded {
        tokens: rows.iter().map(|s| [s.prompt.as_slice(), &s.response].concat()).collect(),
        targets: ids.narrow(1, 1, l as i64 - 1),
        ids,
        resp_all: resp_mask.shallow_clone(),
        resp_mask,
        spans,
    }
}

impl Padded {
    fn rows(&self) -> i64 {
        self.ids.size()[0]
    }

    /// The rows in micro-batches of about `micro` rows' worth of positions, rows of one prompt
    /// packed as one prefix tree ([`packed::micro_batches`]).
    fn micro_batches(&self, micro: i64, share: bool) -> Vec<Micro> {
        let prompts: Vec<&[u32]> = self.tokens.iter().zip(&self.spans).map(|(t, &(p, _))| &t[..p]).collect();
        let lens: Vec<usize> = self.tokens.iter().map(Vec::len).collect();
        let (width, dev) = (self.ids.size()[1] as usize, self.ids.device());
        packed::micro_batches(&prompts, &lens, micro.max(1) as usize, width, share)
            .into_iter()
            .map(|trees| {
                let rows: Vec<i64> = trees.iter().flatten().map(|&r| r as i64).collect();
                let tokens: Vec<Vec<&[u32]>> = trees.iter().map(|t| t.iter().map(|&r| self.tokens[r].as_slice()).collect()).collect();
                Micro {
                    rows: Tensor::from_slice(&rows).to_device(dev),
                    packed: Packed::new(&tokens, width, dev),
                }
            })
            .collect()
    }

    /// Removes from the response mask the tokens before each corrupted row's first error
    /// (`prefix`) and after the line that holds it (`suffix`); rows `first..` of this batch are
    /// `corrupted`, in order.
    fn mask_corrupted(&mut self, first: usize, corrupted: &[Sample], prefix: bool, suffix: bool) {
        let l1 = self.resp_mask.size()[1];
        let mut m = Vec::<f32>::try_from(self.resp_mask.to_device(Device::Cpu).reshape([-1])).expect("f32 mask");
        for (k, s) in corrupted.iter().enumerate() {
            let row = first + k;
            let (p, len) = self.spans[row];
            let cut = if prefix { s.first_error_token.unwrap_or(0).min(len) } else { 0 };
            let end = if suffix { s.error_line_end.unwrap_or(len).min(len) } else { len };
            for j in (0..cut).chain(end..len) {
                m[row * l1 as usize + p - 1 + j] = 0.0;
            }
        }
        self.resp_mask = Tensor::from_slice(&m).view([self.rows(), l1]).to_device(self.resp_mask.device());
    }

    /// Multiplies by `weight` the response mask of the tokens of each `(row, start)` from
    /// `start` to the end of that row's response (0 removes them from the loss).
    fn scale_from(&mut self, cuts: &[(usize, usize)], weight: f32) {
        if cuts.is_empty() {
            return;
        }
        let l1 = self.resp_mask.size()[1] as usize;
        let mut m = Vec::<f32>::try_from(self.resp_mask.to_device(Device::Cpu).reshape([-1])).expect("f32 mask");
        for &(row, start) in cuts {
            let (p, len) = self.spans[row];
            for j in start.min(len)..len {
                m[row * l1 + p - 1 + j] *= weight;
            }
        }
        self.resp_mask = Tensor::from_slice(&m).view([self.rows(), l1 as i64]).to_device(self.resp_mask.device());
    }

    /// Per-row values [N, L−1] filled from per-response-token lists.
    fn scatter(&self, per_row: &[&[f32]], device: Device) -> Tensor {
        let (n, l1) = (self.rows() as usize, self.resp_mask.size()[1] as usize);
        let mut v = vec![0f32; n * l1];
        for (r, (vals, &(p, len))) in per_row.iter().zip(&self.spans).enumerate() {
            assert_eq!(vals.len(), len, "row {r}: {} values for {len} response tokens", vals.len());
            v[r * l1 + p - 1..r * l1 + p - 1 + len].copy_from_slice(vals);
        }
        Tensor::from_slice(&v).view([n as i64, l1 as i64]).to_device(device)
    }

    /// Response-token values of each row, from an [N, L−1] tensor.
    fn gather(&self, t: &Tensor) -> Vec<Vec<f64>> {
        let t = t.to_kind(Kind::Double).to_device(Device::Cpu);
        let l1 = t.size()[1] as usize;
        let flat = Vec::<f64>::try_from(t.reshape([-1])).expect("float tensor");
        self.spans
            .iter()
            .enumerate()
            .map(|(r, &(p, len))| flat[r * l1 + p - 1..r * l1 + p - 1 + len].to_vec())
            .collect()
    }
}

/// One micro-batch: its rows (indices into the batch, in the packed rows' order) and their
/// prefix trees.
struct Micro {
    rows: Tensor,
    packed: Packed,
}

impl Micro {
    /// This micro-batch's rows of a per-row tensor [N, ...].
    fn take(&self, t: &Tensor) -> Tensor {
        t.index_select(0, &self.rows)
    }
}

/// Runs `f` on each of `x`'s micro-batches (no grad) and puts its [rows, L−1] results back in
/// batch order.
fn map_micro_no_grad(x: &Padded, micros: &[Micro], f: impl Fn(&Micro) -> Tensor) -> Tensor {
    tch::no_grad(|| {
        let out = Tensor::zeros([x.rows(), x.targets.size()[1]], (Kind::Float, x.ids.device()));
        for m in micros {
            let _ = out.shallow_clone().index_copy_(0, &m.rows, &f(m).to_kind(Kind::Float));
        }
        out
    })
}

/// Positions of the LM head's output held at once in the no-grad path: 1,024 positions of
/// SmolLM2's vocabulary are 200 MB of fp32 log-probs.
const HEAD_CHUNK: i64 = 1024;

/// Token log-probs [n, L−1] of `tgt` under `model` for the rows of `packed`, at the
/// positions `sel` [n, L−1] selects (0 elsewhere), and the mean entropy of those positions'
/// distributions when `entropy` is asked for; no grad. Only the selected positions (response
/// tokens) go through the LM head, in chunks of [`HEAD_CHUNK`] positions, so the prompt and the
/// padding never become vocabulary-sized logits and the full [positions, V] log-probs never exist
/// at once.
fn selected_logprobs(model: &Llama, packed: &Packed, tgt: &Tensor, sel: &Tensor, entropy: bool) -> (Tensor, Option<f64>) {
    selected_logprobs_chunked(model, packed, tgt, sel, entropy, HEAD_CHUNK)
}

fn selected_logprobs_chunked(model: &Llama, packed: &Packed, tgt: &Tensor, sel: &Tensor, entropy: bool, head_chunk: i64) -> (Tensor, Option<f64>) {
    tch::no_grad(|| {
        let (h, tgt, idx) = selected_hidden(model, packed, tgt, sel);
        let (lp, ent) = head::logprobs(&h, model.head_weight(), &tgt, entropy, head_chunk);
        (scatter_selected(&lp, &idx, sel), ent)
    })
}

/// The final hidden states [k, H] of `model` at the k positions `sel` [n, L−1] selects, their
/// targets [k] there and their flat indices [k] into [n·(L−1)].
fn selected_hidden(model: &Llama, packed: &Packed, tgt: &Tensor, sel: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (n, l1) = (tgt.size()[0], tgt.size()[1]);
    let h = model.hidden_states_packed(packed);
    let hs = h.size()[2];
    let h = h.narrow(1, 0, l1).reshape([n * l1, hs]);
    let idx = sel.reshape([-1]).nonzero().squeeze_dim(1);
    (h.index_select(0, &idx), tgt.reshape([-1]).index_select(0, &idx), idx)
}

/// Values [k] at flat indices `idx` back into the shape of `sel` [n, L−1] (0 elsewhere).
fn scatter_selected(values: &Tensor, idx: &Tensor, sel: &Tensor) -> Tensor {
    Tensor::zeros([sel.numel() as i64], (Kind::Float, values.device()))
        .index_add(0, idx, values)
        .view(sel.size().as_slice())
}

/// A token-level loss on the policy's log-probs at the positions `sel` selects, with its
/// gradients accumulated into the policy's parameters through the fused LM head
/// ([`crate::model::head`]: chunked, no vocabulary-sized tensor through autograd). `loss(lp,
/// idx)` is one chunk's part of the loss, from the chunk's log-probs [c] at flat positions `idx`
/// [c] of [n·(L−1)]. Returns the log-probs [n, L−1] (0 at other positions; no grad), the loss
/// (0-dim, no grad) and the mean entropy if asked for.
fn selected_logprob_loss(
    model: &Llama,
    packed: &Packed,
    tgt: &Tensor,
    sel: &Tensor,
    entropy: bool,
    mut loss: impl FnMut(&Tensor, &Tensor) -> Tensor,
) -> (Tensor, Tensor, Option<f64>) {
    let (h, tgt, idx) = selected_hidden(model, packed, tgt, sel);
    let pass = head::logprob_loss(&h, model.head_weight(), &tgt, entropy, |lp, s| loss(lp, &idx.narrow(0, s, lp.size()[0])));
    pass.backward();
    (scatter_selected(&pass.logprobs, &idx, sel), pass.loss, pass.entropy)
}

/// Token log-probs [N, L−1] of the padded rows' response tokens under `model` (no grad; 0 at
/// other positions), micro-batched.
fn logprobs_no_grad(model: &Llama, x: &Padded, micros: &[Micro]) -> Tensor {
    map_micro_no_grad(x, micros, |m| {
        selected_logprobs(model, &m.packed, &m.take(&x.targets), &m.take(&x.resp_all), false).0
    })
}

/// Reward-model values in shifted space [N, L−1] (no grad), micro-batched.
fn values_no_grad(rm: &RewardModel, x: &Padded, micros: &[Micro]) -> Tensor {
    map_micro_no_grad(x, micros, |m| shifted_values(rm, &m.packed))
}

/// The reward model's values of `packed`'s rows in shifted space [n, L−1].
fn shifted_values(rm: &RewardModel, packed: &Packed) -> Tensor {
    let f = rm.values_packed(packed);
    f.narrow(1, 1, f.size()[1] - 1)
}

/// Per-token rewards of a batch's rows (scores of design §1), for metrics and reranking.
#[derive(Debug, Clone, Default)]
pub struct BatchRewards {
    pub policy: Vec<Vec<f64>>,
    pub experts: Vec<Vec<f64>>,
    pub corrupted: Vec<Vec<f64>>,
}

/// Mean of a sequence's token rewards.
pub fn sequence_score(tokens: &[f64]) -> f64 {
    if tokens.is_empty() {
        0.0
    } else {
        tokens.iter().sum::<f64>() / tokens.len() as f64
    }
}

/// The score of each row of a `sequence` advantage: the policy samples' (`policy_rewards[i]`
/// the token rewards of `policy[i]`), then with `cfg.expert_in_group` the experts'
/// (`expert_rewards`, graded right). A row's score is its mean token reward plus
/// `cfg.outcome_weight` when it grades right, or with `cfg.grade_scores` its grade alone
/// (1 right, 0 wrong or ungraded).
pub fn advantage_scores(policy_rewards: &[Vec<f64>], policy: &[Sample], expert_rewards: &[Vec<f64>], cfg: &AirlConfig) -> Vec<f64> {
    let score = |r: &[f64], right: bool| {
        if cfg.grade_scores {
            f64::from(u8::from(right))
        } else {
            sequence_score(r) + if right { cfg.outcome_weight } else { 0.0 }
        }
    };
    let mut scores: Vec<f64> = policy_rewards.iter().zip(policy).map(|(r, s)| score(r, s.correct == Some(true))).collect();
    if cfg.expert_in_group {
        scores.extend(expert_rewards.iter().map(|r| score(r, true)));
    }
    scores
}

/// How well the rewards separate experts from negatives (see [`crate::airl::metrics`] for the
/// definitions; every value is an AUROC, 0.5 = no separation).
#[derive(Debug, Clone, Copy)]
pub struct Separation {
    pub expert_policy_seq: f64,
    pub expert_policy_tok: f64,
    pub expert_corrupted_seq: f64,
    pub expert_corrupted_seq_min: f64,
    pub expert_corrupted_paired: f64,
    pub expert_corrupted_tok: f64,
}

impl BatchRewards {
    /// Separation of experts from policy samples and from corrupted experts.
    pub fn aurocs(&self, batch: &IterationBatch) -> Separation {
        let seq = |v: &[Vec<f64>]| v.iter().map(|t| sequence_score(t)).collect::<Vec<_>>();
        let min = |v: &[Vec<f64>]| v.iter().map(|t| t.iter().copied().fold(f64::INFINITY, f64::min)).collect::<Vec<_>>();
        let flat = |v: &[Vec<f64>]| v.iter().flatten().copied().collect::<Vec<_>>();
        let after_error: Vec<f64> = self
            .corrupted
            .iter()
            .zip(&batch.corrupted)
            .flat_map(|(r, s)| r[s.first_error_token.unwrap_or(0).min(r.len())..].to_vec())
            .collect();
        // Each corrupted trace against the expert trace it was made from (same group).
        let expert_seq = seq(&self.experts);
        let (mut wins, mut pairs) = (0.0, 0usize);
        for (r, c) in self.corrupted.iter().zip(&batch.corrupted) {
            if let Some(e) = batch.experts.iter().position(|e| e.group == c.group) {
                let (a, b) = (expert_seq[e], sequence_score(r));
                wins += if a > b {
                    1.0
                } else if a == b {
                    0.5
                } else {
                    0.0
                };
                pairs += 1;
            }
        }
        Separation {
            expert_policy_seq: auroc(&expert_seq, &seq(&self.policy)),
            expert_policy_tok: auroc(&flat(&self.experts), &flat(&self.policy)),
            expert_corrupted_seq: auroc(&expert_seq, &seq(&self.corrupted)),
            expert_corrupted_seq_min: auroc(&min(&self.experts), &min(&self.corrupted)),
            expert_corrupted_paired: if pairs == 0 { f64::NAN } else { wins / pairs as f64 },
            expert_corrupted_tok: auroc(&flat(&self.experts), &after_error),
        }
    }
}

/// What [`Learner::discriminator_steps`] did: the loss of its first and last step (each taken
/// before that step's update) and the last gradient norm.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscSteps {
    pub loss_first: f64,
    pub loss_last: f64,
    pub grad_norm: f64,
}

/// The models and optimizers of one learner.
pub struct Learner {
    pub policy: Llama,
    pub policy_opt: FlatAdamW,
    /// Frozen reference policy for the KL term (only needed when `kl_coef > 0`).
    pub reference: Option<Llama>,
    pub reward: RewardModel,
    pub reward_opt: FlatAdamW,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

impl Learner {
    fn device(&self) -> Device {
        self.policy.device()
    }

    /// Per-token rewards of every row of `batch` under the current reward model and policy.
    pub fn rewards(&self, batch: &IterationBatch, cfg: &AirlConfig) -> BatchRewards {
        let micro = cfg.micro_batch.max(1) as i64;
        let score = |rows: &[Sample]| -> Vec<Vec<f64>> {
            if rows.is_empty() {
                return Vec::new();
            }
            let refs: Vec<&Sample> = rows.iter().collect();
            let x = pad(&refs, cfg.pad_id, self.device());
            let micros = x.micro_batches(micro, cfg.pack_prefixes);
            let f = values_no_grad(&self.reward, &x, &micros);
            let lp = (cfg.discriminator == DiscriminatorForm::Airl).then(|| logprobs_no_grad(&self.policy, &x, &micros));
            let d = losses::discriminator_logits(&f, lp.as_ref(), cfg.discriminator);
            x.gather(&losses::token_rewards(&d, &x.resp_mask, cfg.reward_temperature, cfg.reward_clip))
        };
        BatchRewards {
            policy: score(&batch.policy),
            experts: score(&batch.experts),
            corrupted: score(&batch.corrupted),
        }
    }

    /// One discriminator step on all rows (experts labelled 1, the rest 0); returns the loss.
    fn disc_step(
        &mut self,
        x: &Padded,
        micros: &[Micro],
        labels: &Tensor,
        policy_lp: Option<&Tensor>,
        cfg: &AirlConfig,
        reducer: &mut dyn GradReducer,
    ) -> (f64, f64) {
        let weights = losses::sequence_weights(labels, cfg.class_balance);
        self.reward_opt.zero_grad();
        let mut total = 0.0;
        for m in micros {
            let f = shifted_values(&self.reward, &m.packed);
            let lp = policy_lp.map(|t| m.take(t));
            let d = losses::discriminator_logits(&f, lp.as_ref(), cfg.discriminator);
            let loss = losses::discriminator_loss_weighted(&d, &m.take(&x.resp_mask), &m.take(labels), &m.take(&weights), cfg.label_smoothing);
            loss.backward();
            total += loss.double_value(&[]);
        }
        let mut g = self.reward_opt.flat_grad();
        reducer.all_reduce_mean(&mut g);
        let stats = self.reward_opt.step_with(&g);
        reducer.gather_params(&self.reward_opt);
        (total, stats.grad_norm)
    }

    /// `steps` discriminator steps on every row of `batch` (experts labelled 1, policy samples
    /// and corrupted experts 0, policy samples that grade right as `correct_policy_samples`
    /// says; `batch.policy` may be empty, as in the reward warm start).
    pub fn discriminator_steps(&mut self, batch: &IterationBatch, cfg: &AirlConfig, steps: usize, reducer: &mut dyn GradReducer) -> DiscSteps {
        let dev = self.device();
        let micro = cfg.micro_batch.max(1) as i64;
        // Policy samples that grade right: negatives (design §1), left out, or positives.
        let right = |s: &Sample| s.correct == Some(true);
        let policy: Vec<&Sample> = match cfg.correct_policy_samples {
            CorrectSamples::Ignore => batch.policy.iter().filter(|s| !right(s)).collect(),
            CorrectSamples::Negative | CorrectSamples::Positive => batch.policy.iter().collect(),
        };
        let all: Vec<&Sample> = batch.experts.iter().chain(policy.iter().copied()).chain(&batch.corrupted).collect();
        let mut x_all = pad(&all, cfg.pad_id, dev);
        if cfg.ignore_corrupted_prefix || cfg.ignore_corrupted_suffix {
            let first_corrupted = batch.experts.len() + policy.len();
            x_all.mask_corrupted(first_corrupted, &batch.corrupted, cfg.ignore_corrupted_prefix, cfg.ignore_corrupted_suffix);
        }
        if cfg.wrong_answer_line_weight != 1.0 {
            x_all.scale_from(&wrong_answer_lines(&policy, batch.experts.len()), cfg.wrong_answer_line_weight);
        }
        let positive = |i: usize| {
            i < batch.experts.len()
                || (cfg.correct_policy_samples == CorrectSamples::Positive && i < batch.experts.len() + policy.len() && right(policy[i - batch.experts.len()]))
        };
        let labels: Vec<f32> = (0..all.len()).map(|i| if positive(i) { 1.0 } else { 0.0 }).collect();
        let labels = Tensor::from_slice(&labels).to_device(dev);
        let micros = x_all.micro_batches(micro, cfg.pack_prefixes);
        let lp_all = (cfg.discriminator == DiscriminatorForm::Airl).then(|| logprobs_no_grad(&self.policy, &x_all, &micros));
        let mut out = DiscSteps::default();
        for k in 0..steps {
            let (loss, gn) = self.disc_step(&x_all, &micros, &labels, lp_all.as_ref(), cfg, reducer);
            if k == 0 {
                out.loss_first = loss;
            }
            out.loss_last = loss;
            out.grad_norm = gn;
        }
        out
    }

    /// Runs one AIRL iteration on `batch` and returns its metrics.
    pub fn iteration(&mut self, batch: &IterationBatch, cfg: &AirlConfig, reducer: &mut dyn GradReducer) -> IterationMetrics {
        assert!(
            !batch.policy.is_empty() && !batch.experts.is_empty(),
            "an iteration needs policy samples and expert traces"
        );
        let dev = self.device();
        let mut m = IterationMetrics {
            n_policy: batch.policy.len(),
            n_expert: batch.experts.len(),
            n_corrupted: batch.corrupted.len(),
            policy_tokens: batch.policy.iter().map(|s| s.response.len()).sum(),
            ..Default::default()
        };

        // 1. Discriminator steps on every row: experts 1, policy samples and corruptions 0.
        let t0 = Instant::now();
        let d = self.discriminator_steps(batch, cfg, cfg.disc_steps.max(1), reducer);
        (m.disc_loss_first, m.disc_loss, m.reward_grad_norm) = (d.loss_first, d.loss_last, d.grad_norm);
        m.reward_lr = self.reward_opt.config().lr_at(self.reward_opt.steps_taken().saturating_sub(1));
        m.time_disc_s = t0.elapsed().as_secs_f64();

        // 2. Rewards from the updated reward model; metrics; advantages.
        let t1 = Instant::now();
        let rewards = self.rewards(batch, cfg);
        m.reward_expert = mean(&rewards.experts.iter().map(|r| sequence_score(r)).collect::<Vec<_>>());
        m.reward_policy = mean(&rewards.policy.iter().map(|r| sequence_score(r)).collect::<Vec<_>>());
        m.reward_corrupted = mean(&rewards.corrupted.iter().map(|r| sequence_score(r)).collect::<Vec<_>>());
        let sep = rewards.aurocs(batch);
        m.auroc_expert_policy_seq = sep.expert_policy_seq;
        m.auroc_expert_policy_tok = sep.expert_policy_tok;
        m.auroc_expert_corrupted_seq = sep.expert_corrupted_seq;
        m.auroc_expert_corrupted_seq_min = sep.expert_corrupted_seq_min;
        m.auroc_expert_corrupted_paired = sep.expert_corrupted_paired;
        m.auroc_expert_corrupted_tok = sep.expert_corrupted_tok;
        let graded: Vec<bool> = batch.policy.iter().filter_map(|s| s.correct).collect();
        m.policy_accuracy = if graded.is_empty() {
            f64::NAN
        } else {
            graded.iter().filter(|&&c| c).count() as f64 / graded.len() as f64
        };

        let mut adv_rows: Vec<&Sample> = batch.policy.iter().collect();
        if cfg.expert_in_group {
            adv_rows.extend(batch.experts.iter());
        }
        let x_adv = pad(&adv_rows, cfg.pad_id, dev);
        let groups: Vec<i64> = adv_rows.iter().map(|s| s.group).collect();
        let adv = if cfg.sequence_advantage {
            // Each row's score is its mean token reward (`sequence_score`); the outcome weight
            // joins the score itself, not the last token (where the mean would divide it by the
            // sample's length).
            let scores = advantage_scores(&rewards.policy, &batch.policy, &rewards.experts, cfg);
            let a = losses::sequence_advantages(&scores, &groups);
            let rows: Vec<Vec<f32>> = adv_rows.iter().zip(&a).map(|(s, &v)| vec![v as f32; s.response.len()]).collect();
            let refs: Vec<&[f32]> = rows.iter().map(|v| v.as_slice()).collect();
            x_adv.scatter(&refs, dev)
        } else {
            // The outcome weight on the last token of a right answer (experts count as right).
            let with_bonus = |r: &Vec<f64>, right: bool| {
                let mut r: Vec<f32> = r.iter().map(|&v| v as f32).collect();
                if cfg.outcome_weight != 0.0 && right {
                    if let Some(last) = r.last_mut() {
                        *last += cfg.outcome_weight as f32;
                    }
                }
                r
            };
            let mut adv_rewards: Vec<Vec<f32>> = rewards
                .policy
                .iter()
                .zip(&batch.policy)
                .map(|(r, s)| with_bonus(r, s.correct == Some(true)))
                .collect();
            if cfg.expert_in_group {
                adv_rewards.extend(rewards.experts.iter().map(|r| with_bonus(r, true)));
            }
            let refs: Vec<&[f32]> = adv_rewards.iter().map(|v| v.as_slice()).collect();
            let r_tensor = x_adv.scatter(&refs, dev);
            losses::group_advantages(&r_tensor, &x_adv.resp_mask, &groups, cfg.gamma)
        };
        m.time_reward_s = t1.elapsed().as_secs_f64();

        // 3. Policy steps (PPO) on the policy samples. The policy rows come first in `x_adv`.
        let t2 = Instant::now();
        let prow: Vec<&Sample> = batch.policy.iter().collect();
        let x = pad(&prow, cfg.pad_id, dev);
        let adv = adv.narrow(0, 0, x.rows()).narrow(1, 0, x.resp_mask.size()[1]);
        self.ppo_steps(&batch.policy, &x, &adv, &batch.experts, cfg, reducer, &mut m);
        m.time_policy_s = t2.elapsed().as_secs_f64();
        m
    }

    /// PPO steps on `samples` with given per-token `advantages` (one list per sample, one value
    /// per response token); `experts` are the replay term's rows (`cfg.sft_coef`); fills the
    /// policy fields of the returned metrics.
    pub fn policy_update(
        &mut self,
        samples: &[Sample],
        advantages: &[Vec<f32>],
        experts: &[Sample],
        cfg: &AirlConfig,
        reducer: &mut dyn GradReducer,
    ) -> IterationMetrics {
        let rows: Vec<&Sample> = samples.iter().collect();
        let x = pad(&rows, cfg.pad_id, self.device());
        let refs: Vec<&[f32]> = advantages.iter().map(|v| v.as_slice()).collect();
        let adv = x.scatter(&refs, self.device());
        let mut m = IterationMetrics::default();
        self.ppo_steps(samples, &x, &adv, experts, cfg, reducer, &mut m);
        m
    }

    /// PPO steps on `samples`; with `cfg.sft_coef > 0` each step's loss also holds
    /// `sft_coef` × the token-mean NLL of `experts` (their gradients are summed before the step).
    #[allow(clippy::too_many_arguments)]
    fn ppo_steps(
        &mut self,
        samples: &[Sample],
        x: &Padded,
        adv: &Tensor,
        experts: &[Sample],
        cfg: &AirlConfig,
        reducer: &mut dyn GradReducer,
        m: &mut IterationMetrics,
    ) {
        let dev = self.device();
        let micro = cfg.micro_batch.max(1) as i64;
        m.advantage_abs = losses::masked_mean(&adv.abs(), &x.resp_mask).double_value(&[]);
        let behaviour: Vec<&[f32]> = samples
            .iter()
            .map(|s| s.behaviour_logprobs.as_deref().expect("policy samples carry behaviour log-probs"))
            .collect();
        let rollout_lp = x.scatter(&behaviour, dev);
        let micros = x.micro_batches(micro, cfg.pack_prefixes);
        // The learner's own log-probs of the sampled tokens before any update: the
        // train–inference mismatch, and PPO's old log-probs with `learner_behaviour`.
        let learner_lp = logprobs_no_grad(&self.policy, x, &micros);
        let mismatch = losses::ppo_loss(&learner_lp, &rollout_lp, &Tensor::zeros_like(&learner_lp), &x.resp_mask, cfg.clip_eps);
        m.behaviour_kl = mismatch.approx_kl;
        let outside = (&learner_lp - &rollout_lp).exp().g_sub_scalar(1.0).abs().gt(cfg.clip_eps).to_kind(Kind::Float);
        m.behaviour_outside_clip = losses::masked_mean(&outside, &x.resp_mask).double_value(&[]);
        let behaviour = if cfg.learner_behaviour { learner_lp } else { rollout_lp };
        let ref_lp = match (&self.reference, cfg.kl_coef > 0.0) {
            (Some(r), true) => Some(logprobs_no_grad(r, x, &micros)),
            _ => None,
        };
        // `policy.steps = 0`: a frozen policy (the reward alone is learned).
        let steps = cfg.policy_steps;
        if steps == 0 {
            return;
        }
        // Normalised by the mean token count over replicas (see `sft_step`).
        let local_tokens = x.resp_mask.sum(Kind::Float).double_value(&[]).max(1.0);
        let total_tokens = reducer.mean_scalar(local_tokens).max(1.0);
        // The replay term's rows, normalised like `sft_step` (the mean expert token count over
        // replicas), so that its gradient is that of the token mean over all replicas' experts.
        let replay = (cfg.sft_coef > 0.0 && !experts.is_empty()).then(|| {
            let rows: Vec<&Sample> = experts.iter().collect();
            let xe = pad(&rows, cfg.pad_id, dev);
            let tokens = reducer.mean_scalar(xe.resp_mask.sum(Kind::Float).double_value(&[])).max(1.0);
            let micros = xe.micro_batches(micro, cfg.pack_prefixes);
            (xe, micros, tokens)
        });
        let (mut loss_sum, mut clip_sum, mut kl_sum, mut klref_sum, mut nll_sum) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for k in 0..steps {
            self.policy_opt.zero_grad();
            for mb in &micros {
                let mask = mb.take(&x.resp_mask);
                let (beh, a) = (mb.take(&behaviour), mb.take(adv));
                let (beh_flat, a_flat) = (beh.reshape([-1]), a.reshape([-1]));
                let ref_mb = ref_lp.as_ref().map(|r| mb.take(r));
                let ref_flat = ref_mb.as_ref().map(|r| r.reshape([-1]));
                // Token sums over the whole batch's response tokens: each micro-batch's gradient
                // is its share of the batch's token mean.
                let (lp, _, entropy) = selected_logprob_loss(&self.policy, &mb.packed, &mb.take(&x.targets), &mask, k == 0, |lp, idx| {
                    let terms = losses::ppo_token_terms(lp, &beh_flat.index_select(0, idx), &a_flat.index_select(0, idx), cfg.clip_eps);
                    let mut l = terms.sum(Kind::Float) / total_tokens;
                    if let Some(r) = &ref_flat {
                        l = l + losses::kl_token_terms(lp, &r.index_select(0, idx)).sum(Kind::Float) * (cfg.kl_coef / total_tokens);
                    }
                    l
                });
                let share = mask.sum(Kind::Float).double_value(&[]) / local_tokens;
                let ppo = losses::ppo_loss(&lp, &beh, &a, &mask, cfg.clip_eps);
                if let Some(r) = &ref_mb {
                    klref_sum += losses::kl_penalty(&lp, r, &mask).double_value(&[]) * share;
                }
                if let Some(e) = entropy {
                    m.entropy += e * share;
                }
                loss_sum += ppo.loss.double_value(&[]) * share;
                clip_sum += ppo.clip_fraction * share;
                kl_sum += ppo.approx_kl * share;
            }
            if let Some((xe, emicros, etokens)) = &replay {
                for mb in emicros {
                    let mask = mb.take(&xe.resp_mask);
                    let coef = cfg.sft_coef / etokens;
                    let (_, nll, _) = selected_logprob_loss(&self.policy, &mb.packed, &mb.take(&xe.targets), &mask, false, |lp, _| {
                        -lp.sum(Kind::Float) * coef
                    });
                    nll_sum += nll.double_value(&[]) / cfg.sft_coef;
                }
            }
            let mut g = self.policy_opt.flat_grad();
            reducer.all_reduce_mean(&mut g);
            let stats = self.policy_opt.step_with(&g);
            reducer.gather_params(&self.policy_opt);
            m.policy_grad_norm = stats.grad_norm;
            m.policy_lr = stats.lr;
        }
        m.policy_loss = loss_sum / steps as f64;
        m.clip_fraction = clip_sum / steps as f64;
        m.approx_kl = kl_sum / steps as f64;
        m.kl_ref = klref_sum / steps as f64;
        m.expert_nll = nll_sum / steps as f64;
    }

    /// One behaviour-cloning step of the policy on `experts`; returns the loss before the step.
    pub fn sft_step(&mut self, experts: &[Sample], cfg: &AirlConfig, reducer: &mut dyn GradReducer) -> f64 {
        let rows: Vec<&Sample> = experts.iter().collect();
        let x = pad(&rows, cfg.pad_id, self.device());
        let micro = cfg.micro_batch.max(1) as i64;
        // The mean token count over replicas: the replicas' mean gradient is then the gradient
        // of the token mean over all their rows, as one learner with every row would take.
        let total_tokens = reducer.mean_scalar(x.resp_mask.sum(Kind::Float).double_value(&[])).max(1.0);
        self.policy_opt.zero_grad();
        let mut total = 0.0;
        for m in x.micro_batches(micro, cfg.pack_prefixes) {
            let mask = m.take(&x.resp_mask);
            let (_, loss, _) = selected_logprob_loss(&self.policy, &m.packed, &m.take(&x.targets), &mask, false, |lp, _| {
                -lp.sum(Kind::Float) / total_tokens
            });
            total += loss.double_value(&[]);
        }
        let mut g = self.policy_opt.flat_grad();
        reducer.all_reduce_mean(&mut g);
        self.policy_opt.step_with(&g);
        reducer.gather_params(&self.policy_opt);
        total
    }

    /// The policy's log-prob of each response token of each sample (no grad).
    pub fn response_token_logprobs(&self, samples: &[Sample], pad_id: i64) -> Vec<Vec<f64>> {
        let rows: Vec<&Sample> = samples.iter().collect();
        let x = pad(&rows, pad_id, self.device());
        x.gather(&logprobs_no_grad(&self.policy, &x, &x.micro_batches(8, true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `policy.reward_source = "grade"`: a sample scores its grade whatever its learned reward,
    /// an ungraded one 0, experts in the group 1; a group whose samples grade alike gets
    /// advantage 0. Without it: the mean token reward plus the outcome weight when right.
    #[test]
    fn grade_scores_replace_the_learned_score() {
        let graded = |group, correct| Sample {
            group,
            correct,
            ..Default::default()
        };
        let policy = [
            graded(1, Some(true)),
            graded(1, Some(false)),
            graded(1, None),
            graded(2, Some(true)),
            graded(2, Some(true)),
        ];
        let rewards = [vec![-3.0, -1.0], vec![5.0], vec![2.0, 4.0], vec![0.5], vec![-0.5]];
        let experts = [vec![-7.0]];
        let mut cfg = AirlConfig {
            outcome_weight: 10.0,
            ..Default::default()
        };
        assert_eq!(advantage_scores(&rewards, &policy, &experts, &cfg), [8.0, 5.0, 3.0, 10.5, 9.5]);
        cfg.grade_scores = true;
        let s = advantage_scores(&rewards, &policy, &experts, &cfg);
        assert_eq!(s, [1.0, 0.0, 0.0, 1.0, 1.0]);
        let a = losses::sequence_advantages(&s, &[1, 1, 1, 2, 2]);
        // Group 1: mean 1/3, population sd sqrt(2)/3.
        let sd = 2f64.sqrt() / 3.0;
        for (got, want) in a.iter().zip([(2.0 / 3.0) / sd, -(1.0 / 3.0) / sd, -(1.0 / 3.0) / sd, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-5, "{a:?}");
        }
        cfg.expert_in_group = true;
        assert_eq!(advantage_scores(&rewards, &policy, &experts, &cfg), [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    }

    /// The response-only, chunked head against the full-vocabulary logits at every position
    /// (`losses::token_logprobs` / `token_entropy`, which the PyTorch fixtures check).
    #[test]
    fn selected_logprobs_match_the_full_logits() {
        let raw: crate::model::llama::RawConfig = serde_json::from_value(serde_json::json!({
            "model_type": "llama", "vocab_size": 50, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "tie_word_embeddings": true
        }))
        .unwrap();
        tch::manual_seed(1);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let m = Llama::new(&vs.root(), &raw.into_config().unwrap());
        let a = Sample {
            prompt: vec![1, 2, 3],
            response: vec![4, 5, 6, 7],
            ..Default::default()
        };
        let b = Sample {
            prompt: vec![9],
            response: vec![10, 11],
            ..Default::default()
        };
        // a and c share their prompt and first response token: one tree of 8 nodes.
        let c = Sample {
            prompt: vec![1, 2, 3],
            response: vec![4, 8],
            ..Default::default()
        };
        let x = pad(&[&a, &b, &c], 0, Device::Cpu);
        let micros = x.micro_batches(8, true);
        assert_eq!(micros.len(), 1);
        let mb = &micros[0];
        assert_eq!(Vec::<i64>::try_from(&mb.rows).unwrap(), [0, 2, 1]);
        assert_eq!(mb.packed.nodes, 8 + 3);
        let (mask, tgt) = (mb.take(&x.resp_mask), mb.take(&x.targets));
        let ids = mb.take(&x.ids);
        let att = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0]).view([3, 7]);
        let logits = tch::no_grad(|| m.forward_right_padded(&ids, &att));
        let logits = logits.narrow(1, 0, logits.size()[1] - 1);
        let want = losses::token_logprobs(&logits, &tgt) * &mask;
        let want_ent = losses::token_entropy(&logits, &mask).double_value(&[]);
        for chunk in [1, 2, 1024] {
            let (lp, ent) = tch::no_grad(|| selected_logprobs_chunked(&m, &mb.packed, &tgt, &mask, true, chunk));
            let err = (&lp - &want).abs().max().double_value(&[]);
            assert!(err < 1e-5, "chunk {chunk}: {err}");
            assert!((ent.unwrap() - want_ent).abs() < 1e-5, "chunk {chunk}: entropy {ent:?} vs {want_ent}");
        }
        // Back in batch order through the no-grad map.
        let all = logprobs_no_grad(&m, &x, &micros);
        assert!((all.index_select(0, &mb.rows) - &want).abs().max().double_value(&[]) < 1e-5);
        // With grad, through the fused head: the same values, and the gradients of autograd
        // through the full logits (a nonlinear token-level loss, split over chunks).
        let coef = Tensor::randn(tgt.size().as_slice(), (Kind::Float, Device::Cpu));
        let (lp, loss, _) = selected_logprob_loss(&m, &mb.packed, &tgt, &mask, false, |lp, idx| {
            (lp.exp() * coef.reshape([-1]).index_select(0, idx)).sum(Kind::Float)
        });
        assert!((&lp - &want).abs().max().double_value(&[]) < 1e-5);
        let grads = |vs: &tch::nn::VarStore| -> Vec<(String, Tensor)> {
            let mut v: Vec<_> = vs.variables().into_iter().map(|(k, t)| (k, t.grad().copy())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let fused = grads(&vs);
        for (_, t) in vs.variables() {
            let _ = t.grad().zero_();
        }
        let logits = m.forward_right_padded(&ids, &att);
        let lp_full = losses::token_logprobs(&logits.narrow(1, 0, logits.size()[1] - 1), &tgt) * &mask;
        let want_loss = (lp_full.exp() * &coef * &mask).sum(Kind::Float);
        assert!((loss.double_value(&[]) - want_loss.double_value(&[])).abs() < 1e-5);
        want_loss.backward();
        for ((name, a), (_, b)) in fused.iter().zip(grads(&vs)) {
            let err = (a - &b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-12);
            assert!(err < 1e-5, "{name}: {err:e}");
        }
    }

    #[test]
    fn corrupted_prefixes_leave_the_mask() {
        let expert = Sample {
            prompt: vec![1, 2],
            response: vec![3, 4, 5],
            ..Default::default()
        };
        let corrupted = Sample {
            prompt: vec![1, 2, 9],
            response: vec![3, 6, 5, 7],
            first_error_token: Some(1),
            ..Default::default()
        };
        let mut x = pad(&[&expert, &corrupted], 0, Device::Cpu);
        x.mask_corrupted(1, std::slice::from_ref(&corrupted), true, false);
        let m = Vec::<f32>::try_from(x.resp_mask.reshape([-1])).unwrap();
        // L = 7, shifted width 6. Expert: response at shifted 1..4. Corrupted: response at
        // shifted 2..6, its first token (before the error) removed.
        assert_eq!(m, vec![0., 1., 1., 1., 0., 0., 0., 0., 0., 1., 1., 1.]);
        // The error's line ends after response token 2: token 3 leaves too.
        let corrupted = Sample {
            error_line_end: Some(3),
            ..corrupted
        };
        let mut x = pad(&[&expert, &corrupted], 0, Device::Cpu);
        x.mask_corrupted(1, std::slice::from_ref(&corrupted), true, true);
        let m = Vec::<f32>::try_from(x.resp_mask.reshape([-1])).unwrap();
        assert_eq!(m, vec![0., 1., 1., 1., 0., 0., 0., 0., 0., 1., 1., 0.]);
        let mut x = pad(&[&expert, &corrupted], 0, Device::Cpu);
        x.mask_corrupted(1, std::slice::from_ref(&corrupted), false, true);
        let m = Vec::<f32>::try_from(x.resp_mask.reshape([-1])).unwrap();
        assert_eq!(m, vec![0., 1., 1., 1., 0., 0., 0., 0., 1., 1., 1., 0.]);
    }

    #[test]
    fn the_answer_line_of_wrong_policy_samples_leaves_the_mask() {
        let expert = Sample {
            prompt: vec![1, 2],
            response: vec![3, 4, 5],
            ..Default::default()
        };
        let wrong = Sample {
            prompt: vec![1, 2],
            response: vec![3, 6, 5, 7],
            correct: Some(false),
            answer_line_start: Some(2),
            ..Default::default()
        };
        // A right sample and an ungraded one keep their answer lines.
        let right = Sample {
            correct: Some(true),
            ..wrong.clone()
        };
        let ungraded = Sample {
            correct: None,
            ..wrong.clone()
        };
        let policy = [&wrong, &right, &ungraded];
        let cuts = wrong_answer_lines(&policy, 1);
        assert_eq!(cuts, vec![(1, 2)]);
        let mut x = pad(&[&expert, &wrong, &right, &ungraded], 0, Device::Cpu);
        let mut weighted = pad(&[&expert, &wrong, &right, &ungraded], 0, Device::Cpu);
        x.scale_from(&cuts, 0.0);
        weighted.scale_from(&cuts, 0.25);
        let m = Vec::<f32>::try_from(x.resp_mask.reshape([-1])).unwrap();
        // L = 6, shifted width 5. Expert: response at shifted 1..4; the policy rows at 1..5, the
        // wrong one without its tokens 2 and 3 (weight 0), or with them at a quarter.
        #[rustfmt::skip]
        assert_eq!(m, vec![
            0., 1., 1., 1., 0.,
            0., 1., 1., 0., 0.,
            0., 1., 1., 1., 1.,
            0., 1., 1., 1., 1.,
        ]);
        let w = Vec::<f32>::try_from(weighted.resp_mask.reshape([-1])).unwrap();
        assert_eq!(&w[5..10], &[0., 1., 1., 0.25, 0.25]);
        assert_eq!((&w[..5], &w[10..]), (&m[..5], &m[10..]));
    }
}
