//! The AIRL losses, rewards and advantages of design §1, as pure tensor functions.
//!
//! Shapes: `N` sequences, `T` response positions (right-padded), `V` vocabulary. `mask` is a
//! float [N, T] tensor, 1 on response tokens and 0 on padding. Every "token-mean" is
//! `Σ mask · x / Σ mask` over the whole batch.
//!
//! Positions: for a sequence `prompt ++ response`, response token `j` sits at absolute index
//! `p_j`; the reward model's value for it is read at `p_j` (its context includes `a_j`, so it is a
//! function of `(s_j, a_j)`), and `log π(a_j | s_j)` from the policy logits at `p_j - 1`.
//! `scripts/make_airl_fixtures.py` is an independent PyTorch implementation of everything here;
//! the tests compare values and gradients to 1e-5.

use tch::{Kind, Tensor};

/// The two discriminator forms of design §1 (`reward.discriminator`, parsed with the config):
/// `Airl`: `D = exp(f) / (exp(f) + π(a|s))`, so `logit D = f − log π(a|s)` (Fu, Luo & Levine
/// 2018); `Logit`: `logit D = f` (what the reference paper's code does).
pub use airlift_proto::config::DiscriminatorForm;

/// How the discriminator labels the policy samples whose final answer grades right
/// (`reward.correct_policy_samples`). Design §1 labels every policy sample 0 (`Negative`);
/// `Ignore` leaves them out of the discriminator loss (still trained on by the policy),
/// `Positive` labels them 1 like the experts. The last two use the grade (the expert's final
/// answer, part of the demonstration) and so depart from learning the reward from
/// demonstrations alone.
pub use airlift_proto::config::CorrectPolicySamples as CorrectSamples;

/// Discriminator logits [N, T]. `policy_logp` (detached, [N, T]) is needed for `Airl`.
pub fn discriminator_logits(f: &Tensor, policy_logp: Option<&Tensor>, form: DiscriminatorForm) -> Tensor {
    match form {
        DiscriminatorForm::Airl => f - policy_logp.expect("the airl form needs the policy log-probs").detach(),
        DiscriminatorForm::Logit => f.shallow_clone(),
    }
}

/// Options of the discriminator loss.
#[derive(Debug, Clone, Copy)]
pub struct DiscLossOptions {
    /// Label smoothing ε: targets become `1 − ε/2` for experts and `ε/2` for negatives
    /// (ε = 0.1 → 0.95 / 0.05).
    pub label_smoothing: f64,
    /// Weight each sequence by `1 / (2 · size of its class)`, so both classes count equally.
    pub class_balance: bool,
}

/// Token-level binary cross-entropy with logits over response tokens: the mean over each
/// sequence's response tokens, then the (optionally class-balanced) weighted mean over
/// sequences. `labels` [N]: 1 for experts, 0 for policy samples and corruptions.
pub fn discriminator_loss(logits_d: &Tensor, mask: &Tensor, labels: &Tensor, o: &DiscLossOptions) -> Tensor {
    let w = sequence_weights(labels, o.class_balance);
    discriminator_loss_weighted(logits_d, mask, labels, &w, o.label_smoothing)
}

/// Per-sequence weights of the discriminator loss, normalised to sum to 1: class-balanced
/// (`1 / (2 · size of the class)`, renormalised) or uniform.
pub fn sequence_weights(labels: &Tensor, class_balance: bool) -> Tensor {
    let w = if class_balance {
        let n_pos = labels.sum(Kind::Float).clamp_min(1.0);
        let n_neg = (labels.ones_like() - labels).sum(Kind::Float).clamp_min(1.0);
        labels / (n_pos * 2.0) + (labels.ones_like() - labels) / (n_neg * 2.0)
    } else {
        labels.ones_like()
    };
    &w / w.sum(Kind::Float)
}

/// `Σ_i w_i · L_i` where `L_i` is sequence i's mean token BCE (see [`discriminator_loss`]).
/// With weights from [`sequence_weights`] over the whole batch, the sum over micro-batches of
/// this equals the full-batch loss.
pub fn discriminator_loss_weighted(logits_d: &Tensor, mask: &Tensor, labels: &Tensor, weights: &Tensor, label_smoothing: f64) -> Tensor {
    let eps = label_smoothing;
    let target = (labels * (1.0 - eps) + eps / 2.0).unsqueeze(1).expand_as(logits_d);
    // BCE with logits, elementwise: softplus(x) − y·x (numerically stable).
    let bce = logits_d.softplus() - &target * logits_d;
    let per_seq = (bce * mask).sum_dim_intlist(1, false, Kind::Float) / mask.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0);
    (per_seq * weights).sum(Kind::Float)
}

/// Per-token rewards `r_t = logit D_t / temperature`, clipped to `[-clip, clip]` if given, zero on
/// padding.
pub fn token_rewards(logits_d: &Tensor, mask: &Tensor, temperature: f64, clip: Option<f64>) -> Tensor {
    let r = logits_d / temperature;
    let r = match clip {
        Some(c) => r.clamp(-c, c),
        None => r,
    };
    r * mask
}

/// Group-normalised, discounted reward-to-go advantages [N, T].
///
/// For each group (rows sharing a `group_ids` value) the mean and standard deviation (population,
/// over all the group's response tokens) normalise its rewards, `r̃ = (r − μ) / (σ + 1e-6)`;
/// then `A_t = Σ_{k ≥ t} γ^{k−t} r̃_k` over the response tokens (γ = 0: per-token advantages).
/// Whatever rows the caller passes join the statistics: with `policy.expert_in_group` the
/// expert rows are passed with their prompt's group id.
pub fn group_advantages(rewards: &Tensor, mask: &Tensor, group_ids: &[i64], gamma: f64) -> Tensor {
    let (n, t) = (rewards.size()[0], rewards.size()[1]);
    assert_eq!(group_ids.len() as i64, n, "one group id per row");
    let mut normed = rewards.zeros_like();
    let mut groups: Vec<i64> = group_ids.to_vec();
    groups.sort_unstable();
    groups.dedup();
    let ids = Tensor::from_slice(group_ids).to_device(rewards.device());
    for g in groups {
        let rows = ids.eq(g).to_kind(Kind::Float).unsqueeze(1) * mask;
        let count = rows.sum(Kind::Float).clamp_min(1.0);
        let mean = (rewards * &rows).sum(Kind::Float) / &count;
        let var = ((rewards - &mean).square() * &rows).sum(Kind::Float) / &count;
        let z = (rewards - &mean) / (var.sqrt() + 1e-6);
        normed += z * &rows;
    }
    // Discounted reverse cumulative sum as one matmul: A = r̃ · Γᵀ, Γ[t, k] = γ^{k−t} for k ≥ t.
    let idx = Tensor::arange(t, (Kind::Float, rewards.device()));
    let diff = idx.unsqueeze(0) - idx.unsqueeze(1); // [t, k] = k − t
    let gamma_m = if gamma == 0.0 {
        Tensor::eye(t, (Kind::Float, rewards.device()))
    } else {
        Tensor::full([t, t], gamma, (Kind::Float, rewards.device())).pow(&diff.clamp_min(0.0)) * diff.ge(0.0).to_kind(Kind::Float)
    };
    normed.matmul(&gamma_m.tr()) * mask
}

/// Group-normalised sequence advantages (`policy.advantage = "sequence"`): for each group (rows
/// sharing a `group_ids` value), `(s − μ) / (σ + 1e-6)` with the mean and population standard
/// deviation of the group's scores `s`, one value per row (GRPO's outcome advantage). A row
/// alone in its group, or a group whose scores are all equal, gets 0.
pub fn sequence_advantages(scores: &[f64], group_ids: &[i64]) -> Vec<f64> {
    assert_eq!(scores.len(), group_ids.len(), "one group id per score");
    scores
        .iter()
        .zip(group_ids)
        .map(|(&s, &g)| {
            let group: Vec<f64> = scores.iter().zip(group_ids).filter(|(_, &h)| h == g).map(|(&v, _)| v).collect();
            let mean = group.iter().sum::<f64>() / group.len() as f64;
            let var = group.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / group.len() as f64;
            (s - mean) / (var.sqrt() + 1e-6)
        })
        .collect()
}

/// Log-probabilities [N, T] of `targets` [N, T] under `logits` [N, T, V] (computed in fp32).
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits
        .to_kind(Kind::Float)
        .log_softmax(-1, Kind::Float)
        .gather(2, &targets.unsqueeze(2), false)
        .squeeze_dim(2)
}

/// Mean entropy of the distributions `logits` [N, T, V] over response tokens.
pub fn token_entropy(logits: &Tensor, mask: &Tensor) -> Tensor {
    let logp = logits.to_kind(Kind::Float).log_softmax(-1, Kind::Float);
    let ent = -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float);
    masked_mean(&ent, mask)
}

/// `Σ mask · x / Σ mask`.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Tensor {
    (x * mask).sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0)
}

/// The PPO clipped surrogate and its diagnostics.
pub struct PpoOutput {
    /// Token-mean of `max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))`, `ρ = exp(log π − log π_behaviour)`.
    pub loss: Tensor,
    /// Fraction of response tokens where the clipped term is the active one.
    pub clip_fraction: f64,
    /// Token-mean of `(ρ − 1) − log ρ` (the k3 estimator of KL(behaviour ‖ current)).
    pub approx_kl: f64,
}

/// PPO clipped surrogate with token-level advantages against behaviour log-probs.
pub fn ppo_loss(logp: &Tensor, behaviour_logp: &Tensor, advantages: &Tensor, mask: &Tensor, clip_eps: f64) -> PpoOutput {
    let log_ratio = logp - behaviour_logp;
    let (pg1, pg2) = ppo_terms(&log_ratio, advantages, clip_eps);
    let loss = masked_mean(&pg1.maximum(&pg2), mask);
    let clipped = pg2.gt_tensor(&pg1).to_kind(Kind::Float);
    let clip_fraction = masked_mean(&clipped, mask).double_value(&[]);
    // k3 = r − 1 − log r, in f64 through expm1: in f32 `exp(x) − 1 − x` cancels to exactly 0
    // for |x| below about 1e-4, which hid a one-update-old behaviour policy entirely.
    // Summed here in token order, so that the value is the same bit for bit whatever the
    // tensors' layout (a libtorch f64 reduction differed by an ulp after a resume).
    let x: Vec<f32> = Vec::try_from(log_ratio.detach().masked_select(&mask.gt(0.0)).to_kind(Kind::Float).to_device(tch::Device::Cpu)).expect("f32 log-ratios");
    let approx_kl = if x.is_empty() {
        0.0
    } else {
        x.iter().map(|&v| (v as f64).exp_m1() - v as f64).sum::<f64>() / x.len() as f64
    };
    PpoOutput {
        loss,
        clip_fraction,
        approx_kl,
    }
}

/// The unclipped and clipped policy-gradient terms `−A·ρ` and `−A·clip(ρ, 1−ε, 1+ε)`.
fn ppo_terms(log_ratio: &Tensor, advantages: &Tensor, clip_eps: f64) -> (Tensor, Tensor) {
    let ratio = log_ratio.exp();
    (-advantages * &ratio, -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps))
}

/// The per-token PPO clipped surrogate `max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))` (what [`ppo_loss`]
/// averages), for losses summed chunk by chunk.
pub fn ppo_token_terms(logp: &Tensor, behaviour_logp: &Tensor, advantages: &Tensor, clip_eps: f64) -> Tensor {
    let (pg1, pg2) = ppo_terms(&(logp - behaviour_logp), advantages, clip_eps);
    pg1.maximum(&pg2)
}

/// The per-token k3 KL estimate `exp(log π_ref − log π) − (log π_ref − log π) − 1` (what
/// [`kl_penalty`] averages).
pub fn kl_token_terms(logp: &Tensor, ref_logp: &Tensor) -> Tensor {
    let d = ref_logp.detach() - logp;
    d.exp() - &d - 1.0
}

/// KL penalty to a frozen reference policy: token-mean of the k3 estimator
/// `exp(log π_ref − log π) − (log π_ref − log π) − 1` (non-negative, unbiased for KL(π ‖ π_ref)).
pub fn kl_penalty(logp: &Tensor, ref_logp: &Tensor, mask: &Tensor) -> Tensor {
    masked_mean(&kl_token_terms(logp, ref_logp), mask)
}

/// Behaviour-cloning loss: token-mean negative log-likelihood of `targets` under `logits`.
pub fn sft_loss(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Tensor {
    masked_mean(&-token_logprobs(logits, targets), mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: group 7 holds scores 1, 2, 3 (mean 2, population σ = √(2/3)), group 9 the
    /// scores 5, 5 (σ = 0: both 0), group 4 one score (0).
    #[test]
    fn sequence_advantages_normalise_within_each_group() {
        let a = sequence_advantages(&[1.0, 5.0, 2.0, 3.0, 5.0, -4.0], &[7, 9, 7, 7, 9, 4]);
        let z = 1.0 / (2.0f64 / 3.0).sqrt();
        for (got, want) in a.iter().zip([-z, 0.0, 0.0, z, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-5, "{a:?}");
        }
    }
}
