//! The metrics of one AIRL iteration: every name here becomes a column of the run's metrics.
//! This struct is the one place where their names and meanings are written down.
//!
//! The learner's held-out evaluation (`eval` in each metrics record, rank 0) reports the AUROCs
//! below on held-out problems under the same names, and also:
//! * `error_step_hit1`: on held-out corrupted traces, the fraction where the line with the lowest
//!   mean token reward is the line holding the first wrong token ([`crate::airl::localize`]);
//! * `error_step_chance`: the same for a uniformly random line (mean of 1 / number of lines);
//! * `policy_accuracy`: fresh policy samples (one per problem) that grade right.
//!
//! The learner adds, per iteration: `learner_peak_rss_mb` (the learner process's peak resident
//! memory so far, MB) and `learner_minor_faults` (minor page faults during the iteration's
//! training steps; see [`crate::sysmem`]).

use serde::Serialize;

/// Metrics of one iteration ([`crate::airl::iteration::Learner::iteration`]).
///
/// "Reward" is the per-token reward `r_t` of design §1 computed with the reward model as it is
/// *after* this iteration's discriminator steps; a sequence's score is the mean of its response
/// tokens' rewards. AUROCs are the probability that a random expert item scores above a random
/// negative item (ties count ½): 0.5 = no separation, 1 = perfect.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IterationMetrics {
    /// Discriminator BCE loss of the last discriminator step (before its update).
    pub disc_loss: f64,
    /// Discriminator loss of the first discriminator step.
    pub disc_loss_first: f64,
    /// Mean sequence score of the expert traces.
    pub reward_expert: f64,
    /// Mean sequence score of the policy samples.
    pub reward_policy: f64,
    /// Mean sequence score of the corrupted expert traces (NaN when there are none).
    pub reward_corrupted: f64,
    /// Sequence-level AUROC, expert vs policy samples.
    pub auroc_expert_policy_seq: f64,
    /// Token-level AUROC, expert tokens vs policy-sample tokens.
    pub auroc_expert_policy_tok: f64,
    /// Sequence-level AUROC, expert vs corrupted traces (any problem against any problem).
    pub auroc_expert_corrupted_seq: f64,
    /// The same with the `min` aggregate: a trace scores its lowest token reward.
    pub auroc_expert_corrupted_seq_min: f64,
    /// Paired: the fraction of corrupted traces that score (mean) below the expert trace they
    /// were made from, ties ½, i.e. the AUROC over same-problem pairs only. The error-free prefix
    /// is the same in both, so this isolates what the reward says after the error, which is
    /// what reranking candidates for one problem needs.
    pub auroc_expert_corrupted_paired: f64,
    /// Token-level AUROC, expert tokens vs corrupted-trace tokens at and after the first error.
    pub auroc_expert_corrupted_tok: f64,
    /// PPO clipped-surrogate loss (token mean), averaged over the policy steps.
    pub policy_loss: f64,
    /// Fraction of response tokens where PPO clipping was active, averaged over policy steps.
    pub clip_fraction: f64,
    /// k3 estimate of KL(behaviour ‖ current policy), averaged over policy steps.
    pub approx_kl: f64,
    /// The train–inference mismatch before any update: k3 estimate of KL(rollout ‖ learner) from
    /// the rollout worker's behaviour log-probs and the learner's own log-probs of the same
    /// tokens with the same weights (at `max_staleness = 0`; with staleness it includes the
    /// policy's change since the samples were drawn).
    pub behaviour_kl: f64,
    /// Share of policy-sample tokens whose rollout/learner probability ratio lies outside
    /// [1 − ε, 1 + ε] before any update: tokens PPO would clip on its first step for rounding alone.
    pub behaviour_outside_clip: f64,
    /// k3 estimate of KL(current ‖ reference policy) (0 when no reference is kept).
    pub kl_ref: f64,
    /// Token-mean negative log-likelihood of the iteration's expert traces under the policy,
    /// averaged over the policy steps (0 unless `policy.sft_coef > 0`, the replay term).
    pub expert_nll: f64,
    /// Mean token entropy of the policy on its samples (first policy step).
    pub entropy: f64,
    /// Mean advantage magnitude over policy-sample tokens (sanity: ≈ O(1) after normalisation).
    pub advantage_abs: f64,
    /// Global gradient norm (before clipping) of the last reward-model step.
    pub reward_grad_norm: f64,
    /// Global gradient norm (before clipping) of the last policy step.
    pub policy_grad_norm: f64,
    /// Learning rates used by the last steps.
    pub reward_lr: f64,
    pub policy_lr: f64,
    /// Fraction of policy samples whose final answer grades right (NaN if ungraded).
    pub policy_accuracy: f64,
    /// Number of policy samples, expert traces and corrupted traces in the batch.
    pub n_policy: usize,
    pub n_expert: usize,
    pub n_corrupted: usize,
    /// Response tokens in the policy samples.
    pub policy_tokens: usize,
    /// Wall time of the discriminator steps, the reward computation and the policy steps (s).
    pub time_disc_s: f64,
    pub time_reward_s: f64,
    pub time_policy_s: f64,
}

/// Area under the ROC curve of `pos` vs `neg` scores (Mann–Whitney U with ties counted ½).
/// NaN if either side is empty.
pub fn auroc(pos: &[f64], neg: &[f64]) -> f64 {
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> = pos.iter().map(|&s| (s, true)).chain(neg.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Average ranks over ties.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += all[i..=j].iter().filter(|x| x.1).count() as f64 * avg_rank;
        i = j + 1;
    }
    let (np, nn) = (pos.len() as f64, neg.len() as f64);
    (rank_sum_pos - np * (np + 1.0) / 2.0) / (np * nn)
}

#[cfg(test)]
mod tests {
    use super::auroc;

    #[test]
    fn auroc_counts_pairs_and_ties() {
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(auroc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(auroc(&[1.0], &[1.0]), 0.5);
        // pos {2, 4} vs neg {1, 3}: pairs won 2>1, 4>1, 4>3 → 3 of 4.
        assert_eq!(auroc(&[2.0, 4.0], &[1.0, 3.0]), 0.75);
        assert!(auroc(&[], &[1.0]).is_nan());
    }
}
