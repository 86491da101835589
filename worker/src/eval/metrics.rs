//! The numbers of an evaluation (issue "Evaluation: reranking, correctness prediction and error
//! localisation"): choosing one of N sampled answers (random, log-prob, majority vote, best-of-N
//! by reward, reward-weighted vote), predicting correctness from a sequence reward (AUROC, ECE,
//! Pearson r), error localisation (hit@k over ranked lines), and 95% intervals. Pure functions
//! over plain numbers, each checked against a hand-computed case.

pub use crate::airl::metrics::auroc;

/// Wilson score 95% interval of a proportion `k / n` (`(0, 1)` for `n = 0`).
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054;
    let (n, p) = (n as f64, k as f64 / n as f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Expected calibration error with `bins` equal-width bins over [0, 1]: the sample-weighted mean
/// of |accuracy − mean confidence| per bin (a probability of exactly 1 goes in the last bin).
pub fn ece(probs: &[f64], labels: &[bool], bins: usize) -> f64 {
    assert_eq!(probs.len(), labels.len());
    if probs.is_empty() {
        return 0.0;
    }
    let mut sum_p = vec![0.0; bins];
    let mut sum_y = vec![0.0; bins];
    let mut count = vec![0usize; bins];
    for (&p, &y) in probs.iter().zip(labels) {
        let b = ((p.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sum_p[b] += p;
        sum_y[b] += y as u8 as f64;
        count[b] += 1;
    }
    let n = probs.len() as f64;
    (0..bins).filter(|&b| count[b] > 0).map(|b| (sum_y[b] - sum_p[b]).abs() / n).sum()
}

/// Pearson correlation of `x` and `y` (`NaN` when either is constant).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// The index of the highest score (the first on ties); `None` for no scores.
pub fn best_of(scores: &[f64]) -> Option<usize> {
    (0..scores.len()).reduce(|best, i| if scores[i] > scores[best] { i } else { best })
}

/// Weighted vote over the samples' answers (`None` = no answer, which never wins): the answer
/// with the largest total weight; ties go to the answer that appears first. Returns the index
/// of that answer's first sample. Majority vote is every weight 1.
pub fn weighted_vote(answers: &[Option<String>], weights: &[f64]) -> Option<usize> {
    assert_eq!(answers.len(), weights.len());
    let mut totals: Vec<(&str, usize, f64)> = Vec::new();
    for (i, (a, &w)) in answers.iter().zip(weights).enumerate() {
        let Some(a) = a else { continue };
        match totals.iter_mut().find(|t| t.0 == a) {
            Some(t) => t.2 += w,
            None => totals.push((a, i, w)),
        }
    }
    totals
        .iter()
        .fold(None::<&(&str, usize, f64)>, |best, t| match best {
            Some(b) if b.2 >= t.2 => Some(b),
            _ => Some(t),
        })
        .map(|t| t.1)
}

/// The expected correctness of [`weighted_vote`] when a tie for the largest total is broken
/// uniformly at random (rather than by sample order): the share of correct answers among those
/// tied at the top. `correct[i]` says whether sample i's answer is right; 0 when no sample has an
/// answer. Majority vote is every weight 1.
pub fn vote_expected(answers: &[Option<String>], weights: &[f64], correct: &[bool]) -> f64 {
    assert!(answers.len() == weights.len() && answers.len() == correct.len());
    let mut totals: Vec<(&str, bool, f64)> = Vec::new();
    for ((a, &w), &c) in answers.iter().zip(weights).zip(correct) {
        let Some(a) = a else { continue };
        match totals.iter_mut().find(|t| t.0 == a) {
            Some(t) => t.2 += w,
            None => totals.push((a, c, w)),
        }
    }
    top_share(totals.iter().map(|t| (t.2, t.1)))
}

/// The expected correctness of [`best_of`] with ties for the best score broken at random.
pub fn best_of_expected(scores: &[f64], correct: &[bool]) -> f64 {
    top_share(scores.iter().copied().zip(correct.iter().copied()))
}

/// The share of `true` among the items with the largest score (equal to 1e-12 relative).
fn top_share(items: impl Iterator<Item = (f64, bool)> + Clone) -> f64 {
    let Some(top) = items.clone().map(|x| x.0).reduce(f64::max) else { return 0.0 };
    let tied = |v: f64| v == top || (v - top).abs() <= 1e-12 * top.abs().max(1e-300);
    let (n, k) = items.filter(|x| tied(x.0)).fold((0usize, 0usize), |(n, k), x| (n + 1, k + x.1 as usize));
    if n == 0 {
        0.0
    } else {
        k as f64 / n as f64
    }
}

/// Majority vote ([`weighted_vote`] with weight 1 each).
pub fn majority_vote(answers: &[Option<String>]) -> Option<usize> {
    weighted_vote(answers, &vec![1.0; answers.len()])
}

/// Vote weights from sequence rewards: `exp(r − max r)`, so the best sample weighs 1 and a sample
/// one reward unit lower weighs e⁻¹.
pub fn reward_weights(rewards: &[f64]) -> Vec<f64> {
    let m = rewards.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    rewards.iter().map(|r| (r - m).exp()).collect()
}

/// Lines ranked from most to least suspicious by the mean token score of each line (lowest
/// first; ties by line order). `steps[t]` is token t's line.
pub fn lines_by_mean(scores: &[f64], steps: &[usize]) -> Vec<usize> {
    let n = steps.iter().max().map_or(0, |&m| m + 1);
    let mut sum = vec![0.0; n];
    let mut count = vec![0usize; n];
    for (&r, &s) in scores.iter().zip(steps) {
        sum[s] += r;
        count[s] += 1;
    }
    let mut lines: Vec<usize> = (0..n).filter(|&s| count[s] > 0).collect();
    lines.sort_by(|&a, &b| (sum[a] / count[a] as f64).total_cmp(&(sum[b] / count[b] as f64)).then(a.cmp(&b)));
    lines
}

/// Lines ranked by their lowest token score (lowest first; ties by line order): the dense
/// reading, where one bad token marks its line.
pub fn lines_by_min(scores: &[f64], steps: &[usize]) -> Vec<usize> {
    let n = steps.iter().max().map_or(0, |&m| m + 1);
    let mut min = vec![f64::INFINITY; n];
    for (&r, &s) in scores.iter().zip(steps) {
        min[s] = min[s].min(r);
    }
    let mut lines: Vec<usize> = (0..n).filter(|&s| min[s].is_finite()).collect();
    lines.sort_by(|&a, &b| min[a].total_cmp(&min[b]).then(a.cmp(&b)));
    lines
}

/// Whether `truth` is among the first `k` of `ranked`.
pub fn hit_at(ranked: &[usize], truth: usize, k: usize) -> bool {
    ranked.iter().take(k).any(|&l| l == truth)
}

/// The chance of hit@k for a line drawn at random among `lines` lines: min(k, lines) / lines.
pub fn chance_at(lines: usize, k: usize) -> f64 {
    if lines == 0 {
        0.0
    } else {
        k.min(lines) as f64 / lines as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|a| a.map(String::from)).collect()
    }

    #[test]
    fn ties_are_split_by_hand() {
        // Two answers tied 2–2, one right: majority vote is right half the time whatever the
        // sample order; with weights the right one wins.
        let a = s(&[Some("4"), Some("5"), Some("4"), Some("5"), None]);
        let c = [false, true, false, true, false];
        assert_eq!(vote_expected(&a, &[1.0; 5], &c), 0.5);
        assert_eq!(vote_expected(&a, &[1.0, 2.0, 1.0, 1.0, 9.0], &c), 1.0);
        assert_eq!(vote_expected(&s(&[None, None]), &[1.0; 2], &[false; 2]), 0.0);
        // Three samples tied on score, one right: 1/3; a clear best: its own correctness.
        assert!((best_of_expected(&[0.5, 0.5, 0.5], &[true, false, false]) - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(best_of_expected(&[0.1, 0.7, 0.5], &[true, false, true]), 0.0);
    }

    #[test]
    fn wilson_interval_by_hand() {
        // 8 of 10: p = 0.8, z² = 3.8415; centre = (0.8 + 0.19207) / 1.38415 = 0.71674;
        // half = 1.95996 / 1.38415 · sqrt(0.016 + 0.0096037) = 1.41600 · 0.16001 = 0.22657.
        let (lo, hi) = wilson(8, 10);
        assert!((lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3, "{lo} {hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, hi) = wilson(0, 5);
        assert!(lo == 0.0 && hi > 0.4 && hi < 0.5);
    }

    #[test]
    fn ece_by_hand() {
        // Bin [0.1, 0.2): p 0.1, 0.1 with labels 0, 1 → |1 − 0.2| = 0.8; bin [0.9, 1]: p 0.9,
        // 1.0 with labels 1, 1 → |2 − 1.9| = 0.1; ECE = (0.8 + 0.1) / 4 = 0.225.
        let e = ece(&[0.1, 0.1, 0.9, 1.0], &[false, true, true, true], 10);
        assert!((e - 0.225).abs() < 1e-12, "{e}");
        assert_eq!(ece(&[0.5, 0.5], &[true, false], 10), 0.0);
    }

    #[test]
    fn pearson_by_hand() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
        // x = 1, 2, 3; y = 1, 3, 2: sxy = 1, sxx = 2, syy = 2 → r = 0.5.
        assert!((pearson(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]) - 0.5).abs() < 1e-12);
        assert!(pearson(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
    }

    #[test]
    fn auroc_with_ties_by_hand() {
        // Pairs (pos, neg): (0.9, 0.5) win, (0.9, 0.5) win, (0.5, 0.5) tie, (0.5, 0.5) tie →
        // (2 + 0.5 · 2) / 4 = 0.75.
        assert!((auroc(&[0.9, 0.5], &[0.5, 0.5]) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn votes_and_their_ties_by_hand() {
        let a = s(&[Some("3"), Some("5"), None, Some("5"), Some("3")]);
        // Majority: "3" and "5" have 2 votes each; "3" appears first → sample 0.
        assert_eq!(majority_vote(&a), Some(0));
        // Weighted: "3" 0.1 + 0.2 = 0.3, "5" 0.4 + 0.4 = 0.8 → first "5" sample, index 1.
        assert_eq!(weighted_vote(&a, &[0.1, 0.4, 9.0, 0.4, 0.2]), Some(1));
        // Equal totals: the answer seen first wins.
        assert_eq!(weighted_vote(&a, &[0.5, 0.25, 1.0, 0.25, 0.0]), Some(0));
        assert_eq!(majority_vote(&s(&[None, None])), None);
        assert_eq!(best_of(&[0.1, 0.7, 0.7]), Some(1));
        assert_eq!(best_of(&[]), None);
        let w = reward_weights(&[1.0, 0.0]);
        assert!((w[0] - 1.0).abs() < 1e-12 && (w[1] - (-1.0f64).exp()).abs() < 1e-12);
    }

    #[test]
    fn localisation_rankings_and_hits_by_hand() {
        // Three lines: means 0.5, −0.1, 0.2; minima 0.0, −0.1, −0.4.
        let scores = [1.0, 0.0, -0.1, 0.8, -0.4];
        let steps = [0, 0, 1, 2, 2];
        assert_eq!(lines_by_mean(&scores, &steps), [1, 2, 0]);
        assert_eq!(lines_by_min(&scores, &steps), [2, 1, 0]);
        assert!(hit_at(&[1, 2, 0], 1, 1) && !hit_at(&[1, 2, 0], 2, 1) && hit_at(&[1, 2, 0], 2, 3));
        assert_eq!(chance_at(3, 1), 1.0 / 3.0);
        assert_eq!(chance_at(2, 3), 1.0);
        // Equal means: line order breaks the tie.
        assert_eq!(lines_by_mean(&[0.0, 0.0], &[0, 1]), [0, 1]);
    }
}
