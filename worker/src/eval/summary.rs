//! From scored samples and scored corruptions to the evaluation's numbers: per answer-choosing
//! method its accuracy with a 95% interval, correctness prediction from the sequence reward,
//! and error localisation. The evaluation job gathers the scores; this is its
//! last step, and is the same whatever ran the sampling and scoring.

use super::metrics::{auroc, best_of_expected, chance_at, ece, hit_at, lines_by_mean, lines_by_min, pearson, reward_weights, vote_expected, wilson};
use crate::rng::SplitMix64;
use serde::Serialize;
use std::collections::BTreeMap;

/// One sampled trace, scored.
#[derive(Debug, Clone)]
pub struct SampleScore {
    pub problem: u64,
    /// The extracted final answer (`None`: none found).
    pub answer: Option<String>,
    pub correct: bool,
    /// Behaviour log-prob of each response token.
    pub logprobs: Vec<f64>,
    /// Reward of each response token.
    pub rewards: Vec<f64>,
}

/// One controlled corruption of an expert trace, scored.
#[derive(Debug, Clone)]
pub struct CorruptionScore {
    /// The problem whose expert trace was corrupted.
    pub problem: u64,
    pub rewards: Vec<f64>,
    pub logprobs: Vec<f64>,
    /// Line of each response token.
    pub steps: Vec<usize>,
    /// The line holding the first wrong token.
    pub first_wrong_line: usize,
    /// The corruption kind (`operator_flip`, `wrong_quantity`, …).
    pub kind: String,
}

/// A proportion with its Wilson 95% interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

fn rate(k: usize, n: usize) -> Rate {
    let (lo, hi) = wilson(k, n);
    Rate {
        value: if n > 0 { k as f64 / n as f64 } else { f64::NAN },
        lo,
        hi,
        n,
    }
}

/// The mean of per-problem scores with its 95% bootstrap interval over problems (`n` problems):
/// samples of one problem are not independent, so problems are what is resampled.
fn problem_rate(scores: &[f64], seed: u64) -> Rate {
    let n = scores.len();
    let value = if n > 0 { scores.iter().sum::<f64>() / n as f64 } else { f64::NAN };
    let (lo, hi) = bootstrap_interval(n, seed, |idx| idx.iter().map(|&i| scores[i]).sum::<f64>() / n as f64);
    Rate { value, lo, hi, n }
}

/// The 2.5% and 97.5% quantiles of `stat` over [`PAIRED_RESAMPLES`] resamples (with
/// replacement) of the indices `0..n`; NaN for n = 0 and for a statistic that is NaN throughout.
fn bootstrap_interval(n: usize, seed: u64, stat: impl Fn(&[usize]) -> f64) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SplitMix64::new(seed);
    let mut idx = vec![0usize; n];
    let mut boots: Vec<f64> = (0..PAIRED_RESAMPLES)
        .filter_map(|_| {
            for i in idx.iter_mut() {
                *i = (rng.next_u64() % n as u64) as usize;
            }
            Some(stat(&idx)).filter(|v| !v.is_nan())
        })
        .collect();
    if boots.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    boots.sort_by(f64::total_cmp);
    let q = |p: f64| boots[((boots.len() - 1) as f64 * p).round() as usize];
    (q(0.025), q(0.975))
}

/// Fewer correct (or wrong) samples than this and the correctness AUROC and Pearson r are
/// reported as undefined (null), not as a number.
pub const MIN_PER_CLASS: usize = 5;

/// Localisation on one corruption kind: hit@1 of each method and baseline, and its traces.
#[derive(Debug, Clone, Serialize)]
pub struct KindLocalisation {
    pub traces: usize,
    /// Expected hit@1 of a uniformly random line.
    pub random_line: f64,
    pub hit_at_1: BTreeMap<String, Rate>,
}

/// The evaluation's numbers (`summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub problems: usize,
    pub samples_per_problem: f64,
    /// Accuracy of the answer each method chooses, by method name (pass@1 and pass@N are the
    /// mean over samples and the oracle).
    pub methods: BTreeMap<String, Rate>,
    /// The sequence reward used for reranking by default, and why.
    pub default_aggregate: String,
    /// Samples graded right and wrong (the two classes of correctness prediction).
    pub correct_samples: usize,
    pub wrong_samples: usize,
    /// Correctness prediction from the mean token reward: AUROC (with its 95% bootstrap interval
    /// over problems), ECE of sigmoid(mean reward) in 10 bins, Pearson r with correctness (0/1).
    /// AUROC and r are null with fewer than [`MIN_PER_CLASS`] samples of either class.
    pub correctness_auroc: f64,
    pub correctness_auroc_lo: f64,
    pub correctness_auroc_hi: f64,
    pub correctness_ece: f64,
    pub correctness_pearson: f64,
    /// Correctness ranked *within* each problem, which is what a reranker or a policy update
    /// uses (only samples of the same prompt are compared): the share of (right, wrong) sample
    /// pairs of the same problem that the score orders right (ties count ½), pooled over the
    /// problems that have both, with a 95% bootstrap interval over those problems; `n` is their
    /// number. For the mean token reward (`"reward (mean)"`) and, as its baseline, the policy's
    /// mean token log-prob (`"log-prob (mean)"`). The pooled AUROC above also credits a score
    /// for telling easy problems from hard ones; this one does not. Null (NaN) with fewer than
    /// [`MIN_PER_CLASS`] such problems.
    pub within_problem_auroc: BTreeMap<String, Rate>,
    /// The (right, wrong) pairs of the same problem behind `within_problem_auroc`.
    pub within_problem_pairs: usize,
    /// Localisation on the corruptions: hit@k by ranking lines with each method, and the
    /// random-line rate.
    pub localisation: BTreeMap<String, Rate>,
    pub localisation_chance_at_1: f64,
    pub localisation_chance_at_3: f64,
    /// hit@1 per corruption kind, with the first-line, last-line and random-line baselines.
    pub localisation_by_kind: BTreeMap<String, KindLocalisation>,
    /// Paired comparisons of methods on the same problems.
    pub paired: Vec<PairedDiff>,
    /// This evaluation against each `--compare` evaluation, paired on their common problems
    /// (filled by the evaluation job; empty without `--compare`).
    pub versus: Vec<Versus>,
}

/// Method `a` minus method `b` on the same problems: the difference of their accuracies (or, for
/// [`WITHIN_REWARD`] − [`WITHIN_LOGPROB`], of their within-problem AUROCs on the same sample
/// pairs), its 95% interval by bootstrap over problems, and the problems where `a` / `b` did
/// better.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PairedDiff {
    pub a: String,
    pub b: String,
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
    pub only_a: usize,
    pub only_b: usize,
    pub n: usize,
}

/// Names of the within-problem AUROC difference in [`Summary::paired`].
pub const WITHIN_REWARD: &str = "within-problem AUROC, reward (mean)";
pub const WITHIN_LOGPROB: &str = "within-problem AUROC, log-prob (mean)";

/// Bootstrap resamples of the paired differences.
const PAIRED_RESAMPLES: usize = 2000;

/// [`PairedDiff`] of per-problem scores `a` and `b` (0/1, or a fraction for pass@1).
pub fn paired_diff(name_a: &str, a: &[f64], name_b: &str, b: &[f64], seed: u64) -> PairedDiff {
    let n = a.len().min(b.len());
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let diff = if n > 0 { d.iter().sum::<f64>() / n as f64 } else { f64::NAN };
    let (lo, hi) = bootstrap_interval(n, seed, |idx| idx.iter().map(|&i| d[i]).sum::<f64>() / n as f64);
    PairedDiff {
        a: name_a.into(),
        b: name_b.into(),
        diff,
        lo,
        hi,
        only_a: a.iter().zip(b).filter(|(x, y)| **x > **y).count(),
        only_b: a.iter().zip(b).filter(|(x, y)| **x < **y).count(),
        n,
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NEG_INFINITY
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Sequence scores of a sample by aggregate name.
fn aggregate(s: &SampleScore, how: &str) -> f64 {
    match how {
        "mean" => mean(&s.rewards),
        "min" => {
            if s.rewards.is_empty() {
                f64::NEG_INFINITY
            } else {
                min(&s.rewards)
            }
        }
        "last" => s.rewards.last().copied().unwrap_or(f64::NEG_INFINITY),
        _ => unreachable!("aggregate {how}"),
    }
}

fn group_by_problem(samples: &[SampleScore]) -> BTreeMap<u64, Vec<&SampleScore>> {
    let mut by_problem: BTreeMap<u64, Vec<&SampleScore>> = BTreeMap::new();
    for s in samples {
        by_problem.entry(s.problem).or_default().push(s);
    }
    by_problem
}

/// Each choosing method's expected correctness on each problem: method name -> problem -> score.
fn method_scores(samples: &[SampleScore]) -> BTreeMap<String, BTreeMap<u64, f64>> {
    let mut per_problem: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for (&problem, group) in &group_by_problem(samples) {
        let mut add = |name: &str, score: f64| {
            per_problem.entry(name.to_string()).or_default().insert(problem, score);
        };
        let correct: Vec<bool> = group.iter().map(|s| s.correct).collect();
        let right = correct.iter().filter(|&&c| c).count() as f64 / group.len() as f64;
        add("pass@1 (mean over samples)", right);
        add("random choice", right);
        add("pass@N (oracle)", if right > 0.0 { 1.0 } else { 0.0 });
        let lp: Vec<f64> = group.iter().map(|s| mean(&s.logprobs)).collect();
        add("highest mean log-prob", best_of_expected(&lp, &correct));
        let answers: Vec<Option<String>> = group.iter().map(|s| s.answer.clone()).collect();
        add("majority vote", vote_expected(&answers, &vec![1.0; group.len()], &correct));
        for how in ["mean", "min", "last"] {
            let r: Vec<f64> = group.iter().map(|s| aggregate(s, how)).collect();
            add(&format!("best-of-N by reward ({how})"), best_of_expected(&r, &correct));
        }
        let r: Vec<f64> = group.iter().map(|s| aggregate(s, "mean")).collect();
        add("reward-weighted vote", vote_expected(&answers, &reward_weights(&r), &correct));
    }
    per_problem
}

/// The line-ranking methods of localisation, by name, with their ranking of a corruption's lines
/// (from its token rewards, token log-probs and the line of each token); the three scored
/// methods first, then the first-line and last-line baselines.
pub(super) fn line_rankings(rewards: &[f64], logprobs: &[f64], steps: &[usize]) -> [(&'static str, Vec<usize>); 5] {
    let lines = steps.iter().max().map_or(0, |&m| m + 1);
    [
        ("interval reward (lowest mean line)", lines_by_mean(rewards, steps)),
        ("dense reward (lowest token's line)", lines_by_min(rewards, steps)),
        ("log-prob (lowest mean line)", lines_by_mean(logprobs, steps)),
        ("first line", (0..lines).collect()),
        ("last line", (0..lines).rev().collect()),
    ]
}

/// Each localisation method's hit@1 averaged over each problem's corruptions: method name ->
/// problem -> share of that problem's corruptions whose first wrong line it ranked first.
fn localisation_scores(corruptions: &[CorruptionScore]) -> BTreeMap<String, BTreeMap<u64, f64>> {
    let mut hits: BTreeMap<String, BTreeMap<u64, (f64, usize)>> = BTreeMap::new();
    for c in corruptions {
        for (name, ranked) in line_rankings(&c.rewards, &c.logprobs, &c.steps) {
            let e = hits.entry(format!("{name} hit@1")).or_default().entry(c.problem).or_default();
            e.0 += hit_at(&ranked, c.first_wrong_line, 1) as u8 as f64;
            e.1 += 1;
        }
    }
    hits.into_iter()
        .map(|(k, v)| (k, v.into_iter().map(|(p, (h, n))| (p, h / n as f64)).collect()))
        .collect()
}

/// This evaluation against another one of the same problems (`--compare`): for every choosing
/// method and localisation method, this evaluation's score minus the other's, paired on the
/// problems both scored, with a 95% bootstrap interval over those problems.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Versus {
    /// The other evaluation's label.
    pub other: String,
    /// Problems both evaluations scored.
    pub problems: usize,
    /// `a`: the method; `b`: the other evaluation's label; `only_a` / `only_b`: problems where
    /// this / the other evaluation scored higher.
    pub methods: Vec<PairedDiff>,
    pub localisation: Vec<PairedDiff>,
    /// Within-problem AUROC (`a`: `"reward (mean)"` or `"log-prob (mean)"`) of this evaluation
    /// minus the other's, pooled over the common problems with pairs in either, bootstrap over
    /// those problems; `only_a` / `only_b` count problems with pairs in both. With the same
    /// policy's samples (two rewards scoring one checkpoint's samples) the pairs are the same.
    pub within_problem: Vec<PairedDiff>,
}

/// [`Versus`] of this evaluation's scores against `other`'s (labelled `other_label`).
pub fn versus(samples: &[SampleScore], corruptions: &[CorruptionScore], other: (&[SampleScore], &[CorruptionScore]), other_label: &str, seed: u64) -> Versus {
    let diffs = |a: BTreeMap<String, BTreeMap<u64, f64>>,
                 b: BTreeMap<String, BTreeMap<u64, f64>>,
                 order: &dyn Fn(&BTreeMap<String, BTreeMap<u64, f64>>) -> Vec<String>|
     -> Vec<PairedDiff> {
        order(&a)
            .into_iter()
            .filter_map(|name| {
                let (x, y) = (a.get(&name)?, b.get(&name)?);
                let common: Vec<u64> = x.keys().filter(|p| y.contains_key(p)).copied().collect();
                let xs: Vec<f64> = common.iter().map(|p| x[p]).collect();
                let ys: Vec<f64> = common.iter().map(|p| y[p]).collect();
                Some(paired_diff(&name, &xs, other_label, &ys, seed))
            })
            .collect()
    };
    let this = group_by_problem(samples);
    let that = group_by_problem(other.0);
    let methods = diffs(method_scores(samples), method_scores(other.0), &|m| {
        in_method_order(m.keys()).into_iter().cloned().collect()
    });
    let localisation = diffs(localisation_scores(corruptions), localisation_scores(other.1), &|m| m.keys().cloned().collect());
    let common: Vec<u64> = this.keys().filter(|p| that.contains_key(p)).copied().collect();
    let within_problem = within_problem_scores(&this)
        .into_iter()
        .zip(within_problem_scores(&that))
        .map(|((name, a), (_, b))| within_problem_diff(name, &a, other_label, &b, &common, seed ^ 0x3A1))
        .collect();
    Versus {
        other: other_label.into(),
        problems: common.len(),
        methods,
        localisation,
        within_problem,
    }
}

/// The printed comparison with another evaluation.
pub fn versus_table(v: &Versus) -> String {
    let mut out = format!(
        "against {} (paired on {} common problems; difference, 95% bootstrap interval over problems, problems better / worse):\n",
        v.other, v.problems
    );
    for p in v.methods.iter().chain(&v.localisation) {
        out.push_str(&format!(
            "  {:<48} {:+.3} [{:+.3}, {:+.3}]  ({} / {} of {})\n",
            p.a, p.diff, p.lo, p.hi, p.only_a, p.only_b, p.n
        ));
    }
    for p in &v.within_problem {
        out.push_str(&format!(
            "  {:<48} {:+.3} [{:+.3}, {:+.3}]  ({} / {} of {} problems with pairs)\n",
            format!("within-problem AUROC, {}", p.a),
            p.diff,
            p.lo,
            p.hi,
            p.only_a,
            p.only_b,
            p.n
        ));
    }
    out
}

/// Per problem with both classes, by problem: (concordant pairs, ties counting ½; pairs) of
/// `score` ordering its right samples above its wrong ones.
fn within_problem_pairs(by_problem: &BTreeMap<u64, Vec<&SampleScore>>, score: impl Fn(&SampleScore) -> f64) -> BTreeMap<u64, (f64, f64)> {
    by_problem
        .iter()
        .filter_map(|(&p, g)| {
            let pos: Vec<f64> = g.iter().filter(|s| s.correct).map(|s| score(s)).collect();
            let neg: Vec<f64> = g.iter().filter(|s| !s.correct).map(|s| score(s)).collect();
            if pos.is_empty() || neg.is_empty() {
                return None;
            }
            let pairs = (pos.len() * neg.len()) as f64;
            Some((p, (auroc(&pos, &neg) * pairs, pairs)))
        })
        .collect()
}

/// The scores whose within-problem AUROC is reported: the mean token reward and, as its
/// baseline, the policy's mean token log-prob.
fn within_problem_scores(by_problem: &BTreeMap<u64, Vec<&SampleScore>>) -> [(&'static str, BTreeMap<u64, (f64, f64)>); 2] {
    [
        ("reward (mean)", within_problem_pairs(by_problem, |s| aggregate(s, "mean"))),
        ("log-prob (mean)", within_problem_pairs(by_problem, |s| mean(&s.logprobs))),
    ]
}

/// Pooled within-problem AUROC `a` minus `b` (each as [`within_problem_pairs`]) on the problems
/// either has pairs in among `problems`, with a 95% bootstrap interval over those problems
/// (each drawn with its pairs under both); `only_a` / `only_b`: problems with pairs under both
/// where `a` / `b` orders a larger share right. NaN when either side has no pairs.
fn within_problem_diff(name_a: &str, a: &BTreeMap<u64, (f64, f64)>, name_b: &str, b: &BTreeMap<u64, (f64, f64)>, problems: &[u64], seed: u64) -> PairedDiff {
    let rows: Vec<((f64, f64), (f64, f64))> = problems
        .iter()
        .filter(|p| a.contains_key(p) || b.contains_key(p))
        .map(|p| (a.get(p).copied().unwrap_or((0.0, 0.0)), b.get(p).copied().unwrap_or((0.0, 0.0))))
        .collect();
    let n = rows.len();
    let stat = |idx: &[usize]| {
        let (mut ca, mut pa, mut cb, mut pb) = (0.0, 0.0, 0.0, 0.0);
        for &i in idx {
            let ((c1, p1), (c2, p2)) = rows[i];
            (ca, pa, cb, pb) = (ca + c1, pa + p1, cb + c2, pb + p2);
        }
        if pa > 0.0 && pb > 0.0 {
            ca / pa - cb / pb
        } else {
            f64::NAN
        }
    };
    let (lo, hi) = bootstrap_interval(n, seed, stat);
    let both = || rows.iter().filter(|((_, p1), (_, p2))| *p1 > 0.0 && *p2 > 0.0);
    PairedDiff {
        a: name_a.into(),
        b: name_b.into(),
        diff: stat(&(0..n).collect::<Vec<_>>()),
        lo,
        hi,
        only_a: both().filter(|((c1, p1), (c2, p2))| c1 / p1 > c2 / p2).count(),
        only_b: both().filter(|((c1, p1), (c2, p2))| c1 / p1 < c2 / p2).count(),
        n,
    }
}

/// The pooled within-problem AUROC of [`within_problem_pairs`], with its bootstrap interval over
/// problems (NaN with fewer than [`MIN_PER_CLASS`] problems).
fn within_problem_rate(per_problem: &BTreeMap<u64, (f64, f64)>, seed: u64) -> Rate {
    let per_problem: Vec<(f64, f64)> = per_problem.values().copied().collect();
    let n = per_problem.len();
    let pooled = |idx: &[usize]| {
        let (c, p) = idx.iter().fold((0.0, 0.0), |(c, p), &i| (c + per_problem[i].0, p + per_problem[i].1));
        if p > 0.0 {
            c / p
        } else {
            f64::NAN
        }
    };
    if n < MIN_PER_CLASS {
        return Rate {
            value: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
            n,
        };
    }
    let (lo, hi) = bootstrap_interval(n, seed, pooled);
    Rate {
        value: pooled(&(0..n).collect::<Vec<_>>()),
        lo,
        hi,
        n,
    }
}

/// Computes the summary. `seed` fixes the bootstrap resamples. Every choosing method is scored
/// by its expected correctness per problem: random choice is the share of right samples, and
/// ties (of votes or scores) are split evenly among the tied answers instead of going to the
/// first sample.
pub fn summarize(samples: &[SampleScore], corruptions: &[CorruptionScore], seed: u64) -> Summary {
    let by_problem = group_by_problem(samples);
    let problems = by_problem.len();
    let per_problem: BTreeMap<String, Vec<f64>> = method_scores(samples).into_iter().map(|(k, v)| (k, v.into_values().collect())).collect();
    let methods: BTreeMap<String, Rate> = per_problem.iter().map(|(k, v)| (k.clone(), problem_rate(v, seed ^ 0xB007))).collect();

    let seq: Vec<f64> = samples.iter().map(|s| aggregate(s, "mean")).collect();
    let labels: Vec<bool> = samples.iter().map(|s| s.correct).collect();
    let split = |seq: &[f64], labels: &[bool]| -> (Vec<f64>, Vec<f64>) {
        let pos = seq.iter().zip(labels).filter(|(_, &c)| c).map(|(&r, _)| r).collect();
        let neg = seq.iter().zip(labels).filter(|(_, &c)| !c).map(|(&r, _)| r).collect();
        (pos, neg)
    };
    let (pos, neg) = split(&seq, &labels);
    let defined = pos.len() >= MIN_PER_CLASS && neg.len() >= MIN_PER_CLASS;
    let probs: Vec<f64> = seq.iter().map(|r| 1.0 / (1.0 + (-r).exp())).collect();
    let y: Vec<f64> = labels.iter().map(|&c| c as u8 as f64).collect();
    // AUROC's interval: resample problems, each with all its samples.
    let groups: Vec<Vec<(f64, bool)>> = by_problem
        .values()
        .map(|g| g.iter().map(|s| (aggregate(s, "mean"), s.correct)).collect())
        .collect();
    let (auroc_lo, auroc_hi) = if defined {
        bootstrap_interval(groups.len(), seed ^ 0xA0C, |idx| {
            let (seq, labels): (Vec<f64>, Vec<bool>) = idx.iter().flat_map(|&i| groups[i].iter().copied()).unzip();
            let (p, n) = split(&seq, &labels);
            if p.is_empty() || n.is_empty() {
                f64::NAN
            } else {
                auroc(&p, &n)
            }
        })
    } else {
        (f64::NAN, f64::NAN)
    };

    let [(_, within_reward), (_, within_logprob)] = within_problem_scores(&by_problem);
    let within_problem_auroc: BTreeMap<String, Rate> = [
        ("reward (mean)".to_string(), within_problem_rate(&within_reward, seed ^ 0x3A1)),
        ("log-prob (mean)".to_string(), within_problem_rate(&within_logprob, seed ^ 0x3A1)),
    ]
    .into();
    let within_problem_pairs = within_reward.values().map(|&(_, p)| p as usize).sum();

    let mut loc: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<String, (usize, f64, BTreeMap<String, usize>)> = BTreeMap::new();
    let (mut chance1, mut chance3) = (0.0, 0.0);
    for c in corruptions {
        let lines = c.steps.iter().max().map_or(0, |&m| m + 1);
        chance1 += chance_at(lines, 1);
        chance3 += chance_at(lines, 3);
        let kind = by_kind.entry(c.kind.clone()).or_default();
        kind.0 += 1;
        kind.1 += chance_at(lines, 1);
        for (name, ranked) in line_rankings(&c.rewards, &c.logprobs, &c.steps) {
            for k in [1, 3] {
                *loc.entry(format!("{name} hit@{k}")).or_default() += hit_at(&ranked, c.first_wrong_line, k) as usize;
            }
            *kind.2.entry(name.to_string()).or_default() += hit_at(&ranked, c.first_wrong_line, 1) as usize;
        }
    }
    let nc = corruptions.len();
    let paired = [
        ("reward-weighted vote", "majority vote"),
        ("best-of-N by reward (mean)", "majority vote"),
        ("best-of-N by reward (mean)", "random choice"),
        ("best-of-N by reward (mean)", "highest mean log-prob"),
        ("reward-weighted vote", "pass@1 (mean over samples)"),
    ]
    .iter()
    .filter_map(|(a, b)| Some(paired_diff(a, per_problem.get(*a)?, b, per_problem.get(*b)?, seed ^ 0xD1FF)))
    .chain((within_problem_auroc["reward (mean)"].n >= MIN_PER_CLASS).then(|| {
        let problems: Vec<u64> = by_problem.keys().copied().collect();
        within_problem_diff(WITHIN_REWARD, &within_reward, WITHIN_LOGPROB, &within_logprob, &problems, seed ^ 0xD1FF)
    }))
    .collect();
    let undefined = |v: f64| if defined { v } else { f64::NAN };
    Summary {
        problems,
        samples_per_problem: if problems > 0 { samples.len() as f64 / problems as f64 } else { 0.0 },
        methods,
        default_aggregate: "mean: every token counts once, so neither one noisy token (min) nor only the end of the trace (last) decides; the held-out AUROCs of training runs were highest with it or with min".into(),
        correct_samples: pos.len(),
        wrong_samples: neg.len(),
        correctness_auroc: undefined(auroc(&pos, &neg)),
        correctness_auroc_lo: auroc_lo,
        correctness_auroc_hi: auroc_hi,
        correctness_ece: ece(&probs, &labels, 10),
        correctness_pearson: undefined(pearson(&seq, &y)),
        within_problem_auroc,
        within_problem_pairs,
        localisation: loc.into_iter().map(|(k, v)| (k, rate(v, nc))).collect(),
        localisation_chance_at_1: if nc > 0 { chance1 / nc as f64 } else { f64::NAN },
        localisation_chance_at_3: if nc > 0 { chance3 / nc as f64 } else { f64::NAN },
        localisation_by_kind: by_kind
            .into_iter()
            .map(|(kind, (n, chance, hits))| (kind, KindLocalisation { traces: n, random_line: chance / n as f64, hit_at_1: hits.into_iter().map(|(m, k)| (m, rate(k, n))).collect() }))
            .collect(),
        paired,
        versus: Vec::new(),
    }
}

/// The methods in reading order: baselines first (random choice, its expectation pass@1,
/// majority vote, the policy's own log-prob), then the reward's choices, the oracle last.
pub const METHOD_ORDER: [&str; 9] = [
    "random choice",
    "pass@1 (mean over samples)",
    "majority vote",
    "highest mean log-prob",
    "best-of-N by reward (mean)",
    "best-of-N by reward (min)",
    "best-of-N by reward (last)",
    "reward-weighted vote",
    "pass@N (oracle)",
];

/// `names` sorted by [`METHOD_ORDER`] (unknown names last, alphabetically).
pub fn in_method_order<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<&'a String> {
    let mut v: Vec<&String> = names.into_iter().collect();
    v.sort_by_key(|n| (METHOD_ORDER.iter().position(|m| m == n).unwrap_or(METHOD_ORDER.len()), n.to_string()));
    v
}

/// The printed table.
pub fn table(s: &Summary) -> String {
    let mut out = format!(
        "{} problems, {:.1} samples each ({} right, {} wrong)\n",
        s.problems, s.samples_per_problem, s.correct_samples, s.wrong_samples
    );
    out.push_str(&format!(
        "{:<42} {:>8}  {:>17}  {:>5}\n",
        "method (expected value, ties split)", "accuracy", "95% interval", "n"
    ));
    for name in in_method_order(s.methods.keys()) {
        let r = &s.methods[name];
        out.push_str(&format!("{name:<42} {:>8.3}  [{:>6.3}, {:>6.3}]  {:>5}\n", r.value, r.lo, r.hi, r.n));
    }
    if s.correctness_auroc.is_nan() {
        out.push_str(&format!(
            "correctness from the mean token reward: AUROC undefined (fewer than {MIN_PER_CLASS} right or wrong samples), ECE {:.3}\n",
            s.correctness_ece
        ));
    } else {
        out.push_str(&format!(
            "correctness from the mean token reward: AUROC {:.3} [{:.3}, {:.3}], ECE {:.3}, Pearson r {:.3}\n",
            s.correctness_auroc, s.correctness_auroc_lo, s.correctness_auroc_hi, s.correctness_ece, s.correctness_pearson
        ));
    }
    for (name, r) in &s.within_problem_auroc {
        if r.value.is_nan() {
            out.push_str(&format!(
                "correctness within problems from the {name}: undefined ({} problems with right and wrong samples, fewer than {MIN_PER_CLASS})\n",
                r.n
            ));
        } else {
            out.push_str(&format!(
                "correctness within problems from the {name}: AUROC {:.3} [{:.3}, {:.3}] ({} problems, {} pairs)\n",
                r.value, r.lo, r.hi, r.n, s.within_problem_pairs
            ));
        }
    }
    if !s.localisation.is_empty() {
        out.push_str(&format!("{:<50} {:>8}  {:>17}  {:>5}\n", "error localisation", "rate", "95% interval", "n"));
        for (name, r) in &s.localisation {
            out.push_str(&format!("{name:<50} {:>8.3}  [{:>6.3}, {:>6.3}]  {:>5}\n", r.value, r.lo, r.hi, r.n));
        }
        out.push_str(&format!(
            "random line: hit@1 {:.3}, hit@3 {:.3}\n",
            s.localisation_chance_at_1, s.localisation_chance_at_3
        ));
        out.push_str("hit@1 by corruption kind (n traces; random line):\n");
        for (kind, k) in &s.localisation_by_kind {
            let cells: Vec<String> = k
                .hit_at_1
                .iter()
                .map(|(m, r)| format!("{} {:.3}", m.split(" (").next().unwrap_or(m), r.value))
                .collect();
            out.push_str(&format!("  {kind:<16} n={:<4} random {:.3}; {}\n", k.traces, k.random_line, cells.join(", ")));
        }
    }
    out.push_str("paired on the same problems (difference, 95% bootstrap interval over problems, problems where a / b did better):\n");
    for p in &s.paired {
        out.push_str(&format!(
            "  {} - {}: {:+.3} [{:+.3}, {:+.3}]  ({} / {} of {})\n",
            p.a, p.b, p.diff, p.lo, p.hi, p.only_a, p.only_b, p.n
        ));
    }
    for v in &s.versus {
        out.push_str(&versus_table(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(problem: u64, answer: &str, correct: bool, lp: f64, rewards: &[f64]) -> SampleScore {
        SampleScore {
            problem,
            answer: Some(answer.into()),
            correct,
            logprobs: vec![lp; rewards.len()],
            rewards: rewards.to_vec(),
        }
    }

    #[test]
    fn within_problem_auroc_by_hand_is_blind_to_problem_difficulty() {
        // Problems 0-4: one right and one wrong sample, the wrong one rewarded higher (problem
        // 0: a tie); problems 5-9 all right with reward 100, 10-14 all wrong with -100.
        let mut samples = Vec::new();
        for k in 0..5u64 {
            let r = 10.0 * k as f64;
            samples.push(sample(k, "1", true, -0.1, &[r]));
            samples.push(sample(k, "2", false, -0.5, &[if k == 0 { r } else { r + 1.0 }]));
        }
        for k in 5..10 {
            samples.push(sample(k, "1", true, -0.3, &[100.0]));
        }
        for k in 10..15 {
            samples.push(sample(k, "2", false, -0.3, &[-100.0]));
        }
        let s = summarize(&samples, &[], 0);
        // Pooled over problems, 10 right x 10 wrong: the right samples of 5-9 beat all 10 wrong
        // (50), the other five right beat the five -100s (25) and the wrong samples of the
        // problems below theirs (1 + 2 + 3 + 4 = 10), problem 0's tie counts ½: 85.5 / 100.
        assert!((s.correctness_auroc - 0.855).abs() < 1e-12, "{}", s.correctness_auroc);
        // Within problems: 5 pairs, only problem 0's tie scores (½): 0.1; log-prob orders all 5.
        let w = &s.within_problem_auroc;
        assert_eq!(s.within_problem_pairs, 5);
        assert_eq!((w["reward (mean)"].n, w["log-prob (mean)"].n), (5, 5));
        assert!((w["reward (mean)"].value - 0.1).abs() < 1e-12, "{:?}", w);
        assert_eq!(w["log-prob (mean)"].value, 1.0);
        assert!(w["reward (mean)"].lo <= 0.1 && w["reward (mean)"].hi >= 0.1);
        assert!(table(&s).contains("correctness within problems from the reward (mean): AUROC 0.100"));
        // Reward minus log-prob on the same pairs: 0.1 − 1.0, log-prob better on all 5 problems;
        // a resample's share of reward-concordant pairs is in [0, 0.5], its difference in [−1, −0.5].
        let d = s.paired.iter().find(|p| p.a == WITHIN_REWARD && p.b == WITHIN_LOGPROB).unwrap();
        assert!((d.diff + 0.9).abs() < 1e-12, "{d:?}");
        assert_eq!((d.only_a, d.only_b, d.n), (0, 5, 5));
        assert!(d.lo >= -1.0 && d.hi <= -0.5 && d.lo <= d.diff && d.diff <= d.hi, "{d:?}");
        // Against the same samples with the rewards negated (problems 1-4 then ordered right,
        // problem 0 still tied: 4.5 / 5 = 0.9): 0.1 − 0.9 on the 5 problems with pairs; the
        // log-probs are the same on both sides.
        let flipped: Vec<SampleScore> = samples
            .iter()
            .map(|x| SampleScore {
                rewards: x.rewards.iter().map(|r| -r).collect(),
                ..x.clone()
            })
            .collect();
        let v = versus(&samples, &[], (&flipped, &[]), "flipped", 1);
        let w_r = v.within_problem.iter().find(|p| p.a == "reward (mean)").unwrap();
        assert!((w_r.diff + 0.8).abs() < 1e-12, "{w_r:?}");
        assert_eq!((w_r.only_a, w_r.only_b, w_r.n, w_r.b.as_str()), (0, 4, 5, "flipped"));
        let w_l = v.within_problem.iter().find(|p| p.a == "log-prob (mean)").unwrap();
        assert_eq!((w_l.diff, w_l.lo, w_l.hi, w_l.only_a, w_l.only_b), (0.0, 0.0, 0.0, 0, 0));
        assert!(versus_table(&v).contains("within-problem AUROC, reward (mean)"));
        // With fewer than MIN_PER_CLASS problems that have both classes: undefined.
        let s = summarize(&samples[..8], &[], 0);
        assert!(s.within_problem_auroc["reward (mean)"].value.is_nan());
        assert!(serde_json::to_value(&s).unwrap()["within_problem_auroc"]["reward (mean)"]["value"].is_null());
    }

    #[test]
    fn methods_on_two_problems_by_hand() {
        let samples = vec![
            // Problem 0: the majority ("4") is wrong, the single right answer has the best reward.
            sample(0, "4", false, -0.1, &[0.0, 0.0]),
            sample(0, "4", false, -0.2, &[0.1, -0.1]),
            sample(0, "5", true, -0.9, &[2.0, 1.0]),
            // Problem 1: all right.
            sample(1, "7", true, -0.5, &[0.5, 0.5]),
            sample(1, "7", true, -0.4, &[0.2, 0.3]),
            sample(1, "7", true, -0.3, &[-1.0, 3.0]),
        ];
        let s = summarize(&samples, &[], 0);
        let m = |k: &str| s.methods[k].value;
        assert_eq!(s.problems, 2);
        assert_eq!(m("pass@N (oracle)"), 1.0);
        assert_eq!(m("pass@1 (mean over samples)"), 4.0 / 6.0);
        assert_eq!(m("majority vote"), 0.5);
        assert_eq!(m("highest mean log-prob"), 0.5);
        assert_eq!(m("best-of-N by reward (mean)"), 1.0);
        // Reward-weighted: problem 0 has "4" with e^(0 − 1.5) + e^(0 − 1.5) = 0.446, "5" with 1.
        assert_eq!(m("reward-weighted vote"), 1.0);
        // 4 right and 2 wrong samples: too few of each for an AUROC.
        assert_eq!((s.correct_samples, s.wrong_samples), (4, 2));
        assert!(s.correctness_auroc.is_nan() && s.correctness_pearson.is_nan());
        assert!(table(&s).contains("majority vote") && table(&s).contains("AUROC undefined"));
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["correctness_auroc"].is_null());
    }

    #[test]
    fn ties_random_choice_and_auroc_by_hand() {
        // Problem 0: "4" ×2 (wrong) against "5" ×2 (right): majority vote 0.5 whatever the order.
        // Problem 1: 1 right of 4. Random choice is the share of right samples: (0.5 + 0.25) / 2.
        let mut samples = vec![
            sample(0, "4", false, -0.1, &[0.0]),
            sample(0, "5", true, -0.1, &[1.0]),
            sample(0, "4", false, -0.1, &[0.0]),
            sample(0, "5", true, -0.1, &[1.0]),
            sample(1, "1", false, -0.1, &[-1.0]),
            sample(1, "2", false, -0.2, &[-1.0]),
            sample(1, "3", true, -0.3, &[2.0]),
            sample(1, "2", false, -0.4, &[-1.0]),
        ];
        let s = summarize(&samples, &[], 0);
        let m = |k: &str| s.methods[k].value;
        assert_eq!(m("majority vote"), 0.25); // 0.5 and 0 ("2" wins problem 1)
        assert_eq!(m("random choice"), 0.375);
        assert_eq!(m("pass@1 (mean over samples)"), 0.375);
        // Equal log-probs on problem 0: a 4-way tie, 2 right.
        assert_eq!(m("highest mean log-prob"), 0.25);
        assert_eq!(m("best-of-N by reward (mean)"), 1.0);
        assert!(s.methods.values().all(|r| r.n == 2 && r.lo <= r.value && r.value <= r.hi));
        // Five of each class: AUROC defined (rewards separate them), with an interval.
        samples.extend((0..4).map(|i| sample(2 + i, "9", i % 2 == 0, -0.1, &[if i % 2 == 0 { 3.0 } else { -3.0 }])));
        samples.push(sample(6, "9", true, -0.1, &[3.0]));
        let s = summarize(&samples, &[], 0);
        assert_eq!((s.correct_samples, s.wrong_samples), (6, 7));
        assert_eq!(s.correctness_auroc, 1.0);
        assert!(s.correctness_auroc_lo <= 1.0 && s.correctness_auroc_hi == 1.0);
    }

    #[test]
    fn paired_difference_by_hand() {
        // 4 problems: a right on 0, 1, 2; b right on 1, 3: difference (3 - 2) / 4.
        let p = paired_diff("a", &[1.0, 1.0, 1.0, 0.0], "b", &[0.0, 1.0, 0.0, 1.0], 7);
        assert_eq!((p.diff, p.only_a, p.only_b, p.n), (0.25, 2, 1, 4));
        assert!(p.lo <= p.diff && p.diff <= p.hi && p.lo >= -1.0 && p.hi <= 1.0);
        // Identical methods: a zero difference with a zero-width interval.
        let same = paired_diff("a", &[1.0, 0.0], "b", &[1.0, 0.0], 7);
        assert_eq!((same.diff, same.lo, same.hi), (0.0, 0.0, 0.0));
    }

    #[test]
    fn versus_pairs_two_evaluations_on_their_common_problems_by_hand() {
        // This evaluation: problem 0 right 2 of 2, problem 1 right 0 of 2, problem 2 (only here).
        // The other: problem 0 right 1 of 2, problem 1 right 1 of 2, problem 3 (only there).
        let this = vec![
            sample(0, "1", true, -0.1, &[1.0]),
            sample(0, "1", true, -0.1, &[1.0]),
            sample(1, "2", false, -0.1, &[0.0]),
            sample(1, "2", false, -0.1, &[0.0]),
            sample(2, "3", true, -0.1, &[0.0]),
        ];
        let other = vec![
            sample(0, "1", true, -0.1, &[1.0]),
            sample(0, "9", false, -0.1, &[0.0]),
            sample(1, "2", true, -0.1, &[1.0]),
            sample(1, "8", false, -0.1, &[0.0]),
            sample(3, "3", false, -0.1, &[0.0]),
        ];
        let corruption = |problem, rewards: Vec<f64>| CorruptionScore {
            problem,
            rewards,
            logprobs: vec![0.0; 2],
            steps: vec![0, 1],
            first_wrong_line: 1,
            kind: "k".into(),
        };
        // Interval reward: this finds the error on problem 0, the other does not.
        let v = versus(&this, &[corruption(0, vec![1.0, -1.0])], (&other, &[corruption(0, vec![-1.0, 1.0])]), "sft", 3);
        assert_eq!((v.other.as_str(), v.problems), ("sft", 2));
        let m = |k: &str| v.methods.iter().find(|p| p.a == k).unwrap().clone();
        // pass@1: (1 − 0.5 + 0 − 0.5) / 2 = 0; better on problem 0, worse on 1.
        let p1 = m("pass@1 (mean over samples)");
        assert_eq!((p1.diff, p1.only_a, p1.only_b, p1.n, p1.b.as_str()), (0.0, 1, 1, 2, "sft"));
        // Best-of-N by mean reward: this 1 and 0, the other 1 and 1: −0.5.
        assert_eq!(m("best-of-N by reward (mean)").diff, -0.5);
        assert_eq!(v.methods[0].a, "random choice");
        let l = v.localisation.iter().find(|p| p.a == "interval reward (lowest mean line) hit@1").unwrap();
        assert_eq!((l.diff, l.n), (1.0, 1));
        assert!(versus_table(&v).contains("against sft (paired on 2 common problems"));
        // This evaluation has no problem with both classes: no within-problem difference.
        assert!(v.within_problem.iter().all(|p| p.diff.is_nan() && p.n == 2));
    }

    #[test]
    fn localisation_by_hand() {
        // Lines 0, 1, 2; the error is on line 1. Mean rewards per line 0.5, −0.5, 0.0 (hit);
        // minimum per line 0.0, −0.5, −1.0 (miss at 1, hit at 3); log-probs lowest on line 0.
        let c = CorruptionScore {
            problem: 0,
            rewards: vec![1.0, 0.0, -0.5, 1.0, -1.0],
            logprobs: vec![-3.0, -3.0, -0.1, -0.1, -0.1],
            steps: vec![0, 0, 1, 2, 2],
            first_wrong_line: 1,
            kind: "wrong_quantity".into(),
        };
        let s = summarize(&[], &[c], 0);
        let l = |k: &str| s.localisation[k].value;
        assert_eq!(l("interval reward (lowest mean line) hit@1"), 1.0);
        assert_eq!(l("dense reward (lowest token's line) hit@1"), 0.0);
        assert_eq!(l("dense reward (lowest token's line) hit@3"), 1.0);
        assert_eq!(l("log-prob (lowest mean line) hit@1"), 0.0);
        assert_eq!(s.localisation_chance_at_1, 1.0 / 3.0);
        assert_eq!((l("first line hit@1"), l("last line hit@1"), l("last line hit@3")), (0.0, 0.0, 1.0));
        let k = &s.localisation_by_kind["wrong_quantity"];
        assert_eq!(
            (k.traces, k.random_line, k.hit_at_1["interval reward (lowest mean line)"].value),
            (1, 1.0 / 3.0, 1.0)
        );
    }
}
