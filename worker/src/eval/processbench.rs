//! ProcessBench (Zheng et al. 2024, <https://arxiv.org/abs/2412.06559>): model-written solutions
//! split into steps, each item with the earliest wrong step as annotated by people (`label`, or
//! −1 when every step is right). `coordinator eval --problems processbench:FILE` scores every
//! token of every item with the reward (and the policy's log-probs); this module reads the file,
//! maps tokens to steps, turns step scores into predictions and computes the benchmark's metric.
//!
//! * **Step scores** (one per step, higher = more likely right): the *interval* reading (mean
//!   token reward over the step's tokens), the *dense minimum* (lowest token reward in the step),
//!   and the policy's mean token log-prob (a baseline that needs no reward).
//! * **Prediction** (as ProcessBench does with PRMs): the first step whose score falls below a
//!   threshold, or −1 when none does. The threshold is chosen to maximise F1 on *other* items than
//!   the ones it predicts: the file is cut into two folds by item id (`gsm8k-N`: fold `(N / 2) mod
//!   2`, so the development half's even ids split evenly), each fold is predicted with the
//!   threshold chosen on the other, and the pooled out-of-fold predictions are scored. The
//!   threshold chosen on the whole file is reported too, for scoring a held-out file with it.
//! * **Metric**: accuracy on erroneous items (prediction = label), on correct items (prediction
//!   = −1), and their harmonic mean F1; 95% intervals by bootstrap over items, and paired
//!   bootstrap differences between methods on the same items.
//! * **Baselines**: a uniformly random choice among "no error" and the steps (its expected
//!   value), the same step every time (the best fixed answer, chosen out of fold), the policy's
//!   log-prob, and an *oracle* that knows whether the final answer is right and then blames one
//!   fixed step (about 44 F1 on this subset: the metric rewards saying "no error" on correct
//!   items, so this is the bar a step-level method must clear to show it localises anything).

use crate::airl::iteration::{AirlConfig, IterationBatch, Learner, Sample};
use crate::gsm8k;
use crate::rng::SplitMix64;
use crate::tokenizer::Tokenizer;
pub use airlift_proto::processbench::{load, response_text, Item, STEP_SEPARATOR};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Items scored per forward batch (and per progress line).
const SCORE_CHUNK: usize = 8;

/// One scored item, as a score task writes it (JSON part) and the report merges it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemRecord {
    /// 0-based position in the file.
    pub item_index: u64,
    pub id: String,
    pub label: i64,
    pub final_answer_correct: Option<bool>,
    pub n_steps: u32,
    pub response_tokens: Vec<u32>,
    /// Step (0-based) of each response token.
    pub token_steps: Vec<u32>,
    pub token_rewards: Vec<f32>,
    pub policy_logprobs: Vec<f32>,
}

/// Where score task `task_id` of the evaluation in `dir` writes its items.
pub fn part_path(dir: &Path, task_id: u64) -> PathBuf {
    super::job::parts_dir(dir).join(format!("processbench-task-{task_id:08}.json"))
}

/// Scores items `ids` of ProcessBench file `file`: each item's steps, joined by
/// [`STEP_SEPARATOR`], as the response to the problem's chat prompt (the prompt the policy is
/// trained and sampled with); every token's reward and policy log-prob go to `part` (JSON).
pub fn score_items(l: &Learner, airl: &AirlConfig, tok: &Tokenizer, file: &Path, ids: &[u64], part: &Path) -> Result<usize, String> {
    let items = load(file)?;
    let mut out = Vec::with_capacity(ids.len());
    for (c, chunk) in ids.chunks(SCORE_CHUNK).enumerate() {
        let mut batch = IterationBatch::default();
        let mut steps = Vec::new();
        for &id in chunk {
            let it = items
                .get(id as usize)
                .ok_or_else(|| format!("{}: item {id} asked for, the file has {}", file.display(), items.len()))?;
            let prompt = tok.encode(&tok.chat_prompt(&gsm8k::prompt_for(&it.problem))).map_err(|e| e.to_string())?;
            let (text, ranges) = response_text(&it.steps);
            let (response, offsets) = tok.encode_with_offsets(&text).map_err(|e| e.to_string())?;
            steps.push(token_steps(&offsets, &ranges));
            batch.policy.push(Sample {
                prompt,
                response,
                group: id as i64,
                ..Default::default()
            });
        }
        let rewards = l.rewards(&batch, airl);
        let lps = l.response_token_logprobs(&batch.policy, airl.pad_id);
        for (((&id, s), (rw, lp)), st) in chunk.iter().zip(&batch.policy).zip(rewards.policy.iter().zip(&lps)).zip(steps) {
            let it = &items[id as usize];
            out.push(ItemRecord {
                item_index: id,
                id: it.id.clone(),
                label: it.label,
                final_answer_correct: it.final_answer_correct,
                n_steps: it.steps.len() as u32,
                response_tokens: s.response.clone(),
                token_steps: st,
                token_rewards: rw.iter().map(|&x| x as f32).collect(),
                policy_logprobs: lp.iter().map(|&x| x as f32).collect(),
            });
        }
        tracing::info!(done = out.len(), of = ids.len(), chunk = c + 1, "processbench: items scored");
    }
    if let Some(d) = part.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let tmp = part.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&out).map_err(|e| e.to_string())?).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, part).map_err(|e| format!("{}: {e}", part.display()))?;
    Ok(out.len())
}

/// A scored item's step scores.
pub fn item_scores(r: &ItemRecord) -> ItemScores {
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let n = r.n_steps as usize;
    let (reward_mean, reward_min) = step_mean_min(&f(&r.token_rewards), &r.token_steps, n);
    let (logprob_mean, _) = step_mean_min(&f(&r.policy_logprobs), &r.token_steps, n);
    ItemScores {
        id: r.id.clone(),
        label: r.label,
        final_answer_correct: r.final_answer_correct,
        reward_mean,
        reward_min,
        logprob_mean,
    }
}

/// The report task: merge the parts (every wanted item exactly once), write
/// `processbench.jsonl` (one scored item per line), `summary.json` and `report.html`; returns
/// the summary and its table.
pub fn finish(dir: &Path, label: &str, problem_set: &str, file: &Path, wanted: &[u64]) -> Result<(Summary, String), String> {
    let parts = super::job::parts_dir(dir);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&parts)
        .map_err(|e| format!("{}: {e}", parts.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let mut by_index: BTreeMap<u64, ItemRecord> = BTreeMap::new();
    for p in names.iter().filter(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("processbench-") && n.to_string_lossy().ends_with(".json"))
    }) {
        let text = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let recs: Vec<ItemRecord> = serde_json::from_slice(&text).map_err(|e| format!("{}: not a ProcessBench part: {e}", p.display()))?;
        for r in recs {
            if by_index.insert(r.item_index, r).is_some() {
                return Err(format!("{}: an item was scored twice", parts.display()));
            }
        }
    }
    let missing: Vec<u64> = wanted.iter().copied().filter(|i| !by_index.contains_key(i)).collect();
    if !missing.is_empty() || by_index.len() != wanted.len() {
        return Err(format!(
            "{}: {} of {} items missing (e.g. {:?}), {} scored",
            parts.display(),
            missing.len(),
            wanted.len(),
            &missing[..missing.len().min(5)],
            by_index.len()
        ));
    }
    let records: Vec<ItemRecord> = by_index.into_values().collect();
    let scores: Vec<ItemScores> = records.iter().map(item_scores).collect();
    let summary = summarize(&scores, 0xB0CE);
    let table = table(&summary);
    let mut lines = String::new();
    for r in &records {
        lines.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
        lines.push('\n');
    }
    let write = |name: &str, bytes: &[u8]| -> Result<(), String> {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("processbench.jsonl", lines.as_bytes())?;
    let file_json = serde_json::json!({ "label": label, "problem_set": problem_set, "summary": summary, "table": table });
    write("summary.json", serde_json::to_string_pretty(&file_json).map_err(|e| e.to_string())?.as_bytes())?;
    let items = load(file)?;
    let shown: Vec<Item> = records.iter().map(|r| items[r.item_index as usize].clone()).collect();
    write("report.html", report_html(label, &summary, &shown, &scores, &table).as_bytes())?;
    let _ = std::fs::remove_dir_all(&parts);
    Ok((summary, table))
}

/// The step of each token, from the tokens' byte offsets `(start, end)` and the steps' byte
/// ranges: the step a token's first byte falls in; a token of the separator goes to the step
/// before it.
pub fn token_steps(offsets: &[(usize, usize)], ranges: &[(usize, usize)]) -> Vec<u32> {
    offsets
        .iter()
        .map(|&(start, _)| {
            let k = ranges.partition_point(|&(s, _)| s <= start);
            k.saturating_sub(1) as u32
        })
        .collect()
}

/// An item's per-step scores (higher = more likely right).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemScores {
    pub id: String,
    pub label: i64,
    pub final_answer_correct: Option<bool>,
    /// Interval reading: the mean token reward of each step.
    pub reward_mean: Vec<f64>,
    /// Dense reading: the lowest token reward of each step.
    pub reward_min: Vec<f64>,
    /// The policy's mean token log-prob of each step.
    pub logprob_mean: Vec<f64>,
}

/// Per-step mean and minimum of token `values` over `steps` steps (`token_step[i]` is token i's
/// step). A step without tokens gets NaN (it cannot be predicted wrong).
pub fn step_mean_min(values: &[f64], token_step: &[u32], steps: usize) -> (Vec<f64>, Vec<f64>) {
    let mut sum = vec![0.0; steps];
    let mut n = vec![0usize; steps];
    let mut min = vec![f64::INFINITY; steps];
    for (&v, &s) in values.iter().zip(token_step) {
        let s = s as usize;
        if s < steps {
            sum[s] += v;
            n[s] += 1;
            min[s] = min[s].min(v);
        }
    }
    let mean = (0..steps).map(|s| if n[s] > 0 { sum[s] / n[s] as f64 } else { f64::NAN }).collect();
    let min = (0..steps).map(|s| if n[s] > 0 { min[s] } else { f64::NAN }).collect();
    (mean, min)
}

/// The first step whose score is below `threshold`, or −1.
pub fn first_below(scores: &[f64], threshold: f64) -> i64 {
    scores.iter().position(|&s| s < threshold).map_or(-1, |k| k as i64)
}

/// ProcessBench's metric of predictions against labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Accuracy on the items with an error (prediction = label), and how many there are.
    pub acc_error: f64,
    pub n_error: usize,
    /// Accuracy on the items without one (prediction = −1), and how many there are.
    pub acc_correct: f64,
    pub n_correct: usize,
    /// Harmonic mean of the two accuracies (0 when both are 0).
    pub f1: f64,
}

fn harmonic(a: f64, b: f64) -> f64 {
    if a + b > 0.0 {
        2.0 * a * b / (a + b)
    } else {
        0.0
    }
}

/// The metric of `preds` (one per item) against `labels`; rates are NaN for a class with no items.
pub fn metric(preds: &[i64], labels: &[i64]) -> Metric {
    let (mut he, mut ne, mut hc, mut nc) = (0usize, 0usize, 0usize, 0usize);
    for (&p, &l) in preds.iter().zip(labels) {
        if l < 0 {
            nc += 1;
            hc += (p < 0) as usize;
        } else {
            ne += 1;
            he += (p == l) as usize;
        }
    }
    let rate = |h: usize, n: usize| if n > 0 { h as f64 / n as f64 } else { f64::NAN };
    let (acc_error, acc_correct) = (rate(he, ne), rate(hc, nc));
    Metric {
        acc_error,
        n_error: ne,
        acc_correct,
        n_correct: nc,
        f1: harmonic(acc_error, acc_correct),
    }
}

/// The threshold that maximises F1 of [`first_below`] over `items` (score lists with labels);
/// ties go to the lowest threshold. Candidates: "never below" and just above each step score.
pub fn best_threshold(items: &[(&[f64], i64)]) -> f64 {
    let mut cands: Vec<f64> = items.iter().flat_map(|(s, _)| s.iter().copied()).filter(|x| x.is_finite()).collect();
    cands.sort_by(f64::total_cmp);
    cands.dedup();
    let labels: Vec<i64> = items.iter().map(|(_, l)| *l).collect();
    let f1_at = |t: f64| metric(&items.iter().map(|(s, _)| first_below(s, t)).collect::<Vec<_>>(), &labels).f1;
    let mut best = (f64::NEG_INFINITY, f1_at(f64::NEG_INFINITY));
    for &c in &cands {
        // Just above c: every step scoring c or less counts as below.
        let t = c + c.abs().max(1e-12) * 1e-9;
        let f = f1_at(t);
        if f > best.1 {
            best = (t, f);
        }
    }
    best.0
}

/// The fold of an item for cross-fitting: `(N / 2) mod 2` for ids `…-N`, else its position mod 2.
pub fn fold_of(id: &str, position: usize) -> usize {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(position % 2, |n| ((n / 2) % 2) as usize)
}

/// Out-of-fold predictions of one step score: each fold predicted with the threshold chosen on
/// the other fold. Returns the predictions and the two thresholds (fold 0's, fold 1's).
pub fn cross_fit(items: &[ItemScores], score: &dyn Fn(&ItemScores) -> Vec<f64>) -> (Vec<i64>, [f64; 2]) {
    let folds: Vec<usize> = items.iter().enumerate().map(|(i, it)| fold_of(&it.id, i)).collect();
    let scores: Vec<Vec<f64>> = items.iter().map(score).collect();
    let mut thresholds = [0.0; 2];
    for (f, t) in thresholds.iter_mut().enumerate() {
        let train: Vec<(&[f64], i64)> = items
            .iter()
            .zip(&scores)
            .zip(&folds)
            .filter(|(_, &g)| g != f)
            .map(|((it, s), _)| (s.as_slice(), it.label))
            .collect();
        *t = best_threshold(&train);
    }
    let preds = scores.iter().zip(&folds).map(|(s, &f)| first_below(s, thresholds[f])).collect();
    (preds, thresholds)
}

/// The fixed answer (−1 or a step index) with the best F1 on the items of one fold, applied to
/// the other (out of fold), optionally only to items whose final answer is wrong (`oracle`:
/// items with a right final answer get −1).
pub fn fixed_step_cross_fit(items: &[ItemScores], oracle: bool) -> (Vec<i64>, [i64; 2]) {
    let folds: Vec<usize> = items.iter().enumerate().map(|(i, it)| fold_of(&it.id, i)).collect();
    let predict = |it: &ItemScores, k: i64| if oracle && it.final_answer_correct == Some(true) { -1 } else { k };
    let max_steps = items.iter().map(|it| it.reward_mean.len()).max().unwrap_or(1) as i64;
    let mut chosen = [-1i64; 2];
    for (f, c) in chosen.iter_mut().enumerate() {
        let train: Vec<&ItemScores> = items.iter().zip(&folds).filter(|(_, &g)| g != f).map(|(it, _)| it).collect();
        let labels: Vec<i64> = train.iter().map(|it| it.label).collect();
        let mut best = (-1i64, f64::NEG_INFINITY);
        for k in -1..max_steps {
            let f1 = metric(&train.iter().map(|it| predict(it, k)).collect::<Vec<_>>(), &labels).f1;
            if f1 > best.1 {
                best = (k, f1);
            }
        }
        *c = best.0;
    }
    let preds = items.iter().zip(&folds).map(|(it, &f)| predict(it, chosen[f])).collect();
    (preds, chosen)
}

/// One method's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodResult {
    pub method: String,
    pub metric: Metric,
    /// 95% bootstrap interval of F1 (over items).
    pub f1_ci: (f64, f64),
    /// hit@1 on erroneous items: the lowest-scoring step is the labelled one (NaN for methods
    /// without step scores).
    pub hit_at_1: f64,
    /// How the method was set: thresholds or fixed steps per fold.
    pub setting: String,
    #[serde(skip)]
    pub preds: Vec<i64>,
}

/// A paired comparison: F1 of `a` minus F1 of `b` on the same items, with a bootstrap interval.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paired {
    pub a: String,
    pub b: String,
    pub diff: f64,
    pub ci: (f64, f64),
}

/// The ProcessBench summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub items: usize,
    pub n_error: usize,
    pub n_correct: usize,
    pub methods: Vec<MethodResult>,
    pub paired: Vec<Paired>,
    /// Thresholds chosen on all the items here, for scoring a held-out file (interval reward,
    /// dense minimum, log-prob), with the in-sample F1 they give (optimistic: tuned on these items).
    pub full_thresholds: Vec<(String, f64, f64)>,
    pub bootstrap_resamples: usize,
}

const RESAMPLES: usize = 2000;

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Bootstrap (over items, the same resamples for every method) of the F1 of each prediction set.
fn bootstrap(preds: &[&[i64]], labels: &[i64], seed: u64) -> Vec<Vec<f64>> {
    let n = labels.len();
    let mut rng = SplitMix64::new(seed);
    let mut out = vec![Vec::with_capacity(RESAMPLES); preds.len()];
    let mut idx = vec![0usize; n];
    for _ in 0..RESAMPLES {
        for i in idx.iter_mut() {
            *i = (rng.next_u64() % n as u64) as usize;
        }
        let l: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
        for (m, p) in preds.iter().enumerate() {
            let p: Vec<i64> = idx.iter().map(|&i| p[i]).collect();
            out[m].push(metric(&p, &l).f1);
        }
    }
    out
}

fn argmin(v: &[f64]) -> Option<usize> {
    (0..v.len()).filter(|&i| !v[i].is_nan()).min_by(|&a, &b| v[a].total_cmp(&v[b]))
}

/// Scores the methods and baselines on `items`.
pub fn summarize(items: &[ItemScores], seed: u64) -> Summary {
    let labels: Vec<i64> = items.iter().map(|it| it.label).collect();
    type Score = fn(&ItemScores) -> Vec<f64>;
    let scored: [(&str, Score); 3] = [
        ("interval reward (step mean)", |it| it.reward_mean.clone()),
        ("dense reward (step minimum)", |it| it.reward_min.clone()),
        ("policy log-prob (step mean)", |it| it.logprob_mean.clone()),
    ];
    let errors: Vec<&ItemScores> = items.iter().filter(|it| it.label >= 0).collect();
    let hit = |f: &dyn Fn(&ItemScores) -> Vec<f64>| {
        if errors.is_empty() {
            return f64::NAN;
        }
        errors.iter().filter(|it| argmin(&f(it)) == Some(it.label as usize)).count() as f64 / errors.len() as f64
    };
    let mut methods = Vec::new();
    // Baselines first: random (expected value), fixed step, the outcome oracle, then log-prob.
    let inv = |it: &&ItemScores| 1.0 / (it.reward_mean.len() + 1) as f64;
    let (ne, nc) = (errors.len(), items.len() - errors.len());
    let acc_e = if ne > 0 { errors.iter().map(inv).sum::<f64>() / ne as f64 } else { f64::NAN };
    let corrects: Vec<&ItemScores> = items.iter().filter(|it| it.label < 0).collect();
    let acc_c = if nc > 0 {
        corrects.iter().map(inv).sum::<f64>() / nc as f64
    } else {
        f64::NAN
    };
    methods.push(MethodResult {
        method: "random (no error or a step, uniformly; expected value)".into(),
        metric: Metric {
            acc_error: acc_e,
            n_error: ne,
            acc_correct: acc_c,
            n_correct: nc,
            f1: harmonic(acc_e, acc_c),
        },
        f1_ci: (f64::NAN, f64::NAN),
        hit_at_1: if ne > 0 {
            errors.iter().map(|it| 1.0 / it.reward_mean.len() as f64).sum::<f64>() / ne as f64
        } else {
            f64::NAN
        },
        setting: "analytic".into(),
        preds: Vec::new(),
    });
    for (name, oracle) in [
        ("same step every time (best fixed answer, out of fold)", false),
        ("oracle final-answer correctness + one fixed step", true),
    ] {
        let (preds, k) = fixed_step_cross_fit(items, oracle);
        methods.push(MethodResult {
            method: name.into(),
            metric: metric(&preds, &labels),
            f1_ci: (0.0, 0.0),
            hit_at_1: f64::NAN,
            setting: format!("step per fold: {} / {}", k[0], k[1]),
            preds,
        });
    }
    let mut full_thresholds = Vec::new();
    for (name, f) in scored.iter().rev() {
        let (preds, t) = cross_fit(items, f);
        let all: Vec<Vec<f64>> = items.iter().map(f).collect();
        let pairs: Vec<(&[f64], i64)> = all.iter().zip(&labels).map(|(s, &l)| (s.as_slice(), l)).collect();
        let full = best_threshold(&pairs);
        let in_sample = metric(&all.iter().map(|s| first_below(s, full)).collect::<Vec<_>>(), &labels).f1;
        full_thresholds.push((name.to_string(), full, in_sample));
        methods.push(MethodResult {
            method: name.to_string(),
            metric: metric(&preds, &labels),
            f1_ci: (0.0, 0.0),
            hit_at_1: hit(f),
            setting: format!("threshold per fold: {:.4} / {:.4}", t[0], t[1]),
            preds,
        });
    }
    // Bootstrap intervals and paired differences (same resamples for all).
    let with_preds: Vec<usize> = (0..methods.len()).filter(|&m| !methods[m].preds.is_empty()).collect();
    let boot = bootstrap(&with_preds.iter().map(|&m| methods[m].preds.as_slice()).collect::<Vec<_>>(), &labels, seed);
    for (b, &m) in with_preds.iter().enumerate() {
        let mut v = boot[b].clone();
        methods[m].f1_ci = (percentile(&mut v, 0.025), percentile(&mut v, 0.975));
    }
    let pos = |name: &str| with_preds.iter().position(|&m| methods[m].method == name);
    let mut paired = Vec::new();
    for (a, b) in [
        ("interval reward (step mean)", "policy log-prob (step mean)"),
        ("dense reward (step minimum)", "policy log-prob (step mean)"),
        ("interval reward (step mean)", "oracle final-answer correctness + one fixed step"),
        ("interval reward (step mean)", "dense reward (step minimum)"),
    ] {
        if let (Some(i), Some(j)) = (pos(a), pos(b)) {
            let mut d: Vec<f64> = boot[i].iter().zip(&boot[j]).map(|(x, y)| x - y).collect();
            let diff = methods[with_preds[i]].metric.f1 - methods[with_preds[j]].metric.f1;
            paired.push(Paired {
                a: a.into(),
                b: b.into(),
                diff,
                ci: (percentile(&mut d, 0.025), percentile(&mut d, 0.975)),
            });
        }
    }
    Summary {
        items: items.len(),
        n_error: ne,
        n_correct: nc,
        methods,
        paired,
        full_thresholds,
        bootstrap_resamples: RESAMPLES,
    }
}

/// The printed table of a summary.
pub fn table(s: &Summary) -> String {
    let pct = |x: f64| if x.is_nan() { "    -".to_string() } else { format!("{:5.1}", 100.0 * x) };
    let mut out = format!(
        "ProcessBench: {} items ({} with an error, {} without); thresholds chosen out of fold (2 folds by id)\n{:<56} {:>7} {:>7} {:>6}  {:>13}  {:>6}\n",
        s.items, s.n_error, s.n_correct, "method", "acc err", "acc ok", "F1", "F1 95% CI", "hit@1"
    );
    for m in &s.methods {
        let ci = if m.f1_ci.0.is_nan() {
            "-".to_string()
        } else {
            format!("{}-{}", pct(m.f1_ci.0).trim(), pct(m.f1_ci.1).trim())
        };
        out.push_str(&format!(
            "{:<56} {:>7} {:>7} {:>6}  {:>13}  {:>6}\n",
            m.method,
            pct(m.metric.acc_error),
            pct(m.metric.acc_correct),
            pct(m.metric.f1),
            ci,
            pct(m.hit_at_1)
        ));
    }
    out.push_str("paired F1 differences (same items, bootstrap over items):\n");
    for p in &s.paired {
        out.push_str(&format!(
            "  {} - {}: {:+.1} [{:+.1}, {:+.1}]\n",
            p.a,
            p.b,
            100.0 * p.diff,
            100.0 * p.ci.0,
            100.0 * p.ci.1
        ));
    }
    out.push_str("thresholds on all items (for a held-out file; in-sample F1 is optimistic):\n");
    for (name, t, f1) in &s.full_thresholds {
        out.push_str(&format!("  {name}: {t:.4} (in-sample F1 {})\n", pct(*f1).trim()));
    }
    out
}

/// A few items drawn step by step with their scores, the human label and each method's pick.
pub fn report_html(label: &str, s: &Summary, items: &[Item], scores: &[ItemScores], table: &str) -> String {
    let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut h = format!("<!doctype html><meta charset=utf-8><title>airlift ProcessBench</title><style>body{{font:14px sans-serif;max-width:1100px;margin:2em auto}}pre{{background:#f6f6f6;padding:1em}}td{{vertical-align:top;padding:2px 6px;border-bottom:1px solid #ddd}}.err{{background:#fdd}}.pick{{outline:2px solid #36c}}</style><h1>ProcessBench</h1><p>{}</p><pre>{}</pre>", esc(label), esc(table));
    let interval = s.methods.iter().find(|m| m.method.starts_with("interval"));
    let mut shown = 0;
    for (i, (it, sc)) in items.iter().zip(scores).enumerate() {
        // A mix: erroneous and correct items, the first few of each.
        if shown >= 8 || (shown % 2 == 0) != (it.label >= 0) {
            continue;
        }
        shown += 1;
        let pick = interval.and_then(|m| m.preds.get(i).copied()).unwrap_or(-2);
        h.push_str(&format!("<h3>{} — human label: {} · interval-reward prediction: {}</h3><p>{}</p><table><tr><th>step</th><th>text</th><th>reward mean</th><th>reward min</th><th>log-prob mean</th></tr>", esc(&it.id), if it.label < 0 { "no error".into() } else { format!("step {}", it.label) }, if pick < 0 { "no error".into() } else { format!("step {pick}") }, esc(&it.problem)));
        for (k, step) in it.steps.iter().enumerate() {
            let class = match (k as i64 == it.label, k as i64 == pick) {
                (true, true) => " class='err pick'",
                (true, false) => " class=err",
                (false, true) => " class=pick",
                _ => "",
            };
            h.push_str(&format!(
                "<tr{class}><td>{k}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                esc(step),
                sc.reward_mean[k],
                sc.reward_min[k],
                sc.logprob_mean[k]
            ));
        }
        h.push_str("</table>");
    }
    h.push_str("<p>Red: the human-labelled first wrong step. Blue outline: the interval reward's predicted first wrong step.</p>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, label: i64, reward: &[f64]) -> ItemScores {
        ItemScores {
            id: id.into(),
            label,
            final_answer_correct: Some(label < 0),
            reward_mean: reward.to_vec(),
            reward_min: reward.to_vec(),
            logprob_mean: vec![0.0; reward.len()],
        }
    }

    #[test]
    fn metric_by_hand() {
        // Two erroneous items (labels 1, 0), two correct ones.
        let m = metric(&[1, 2, -1, 0], &[1, 0, -1, -1]);
        assert_eq!((m.acc_error, m.n_error, m.acc_correct, m.n_correct), (0.5, 2, 0.5, 2));
        assert!((m.f1 - 0.5).abs() < 1e-12);
        let m = metric(&[-1, -1], &[0, -1]);
        assert_eq!((m.acc_error, m.acc_correct, m.f1), (0.0, 1.0, 0.0));
        // F1 = 2·(2/3)·(1/2) / (2/3 + 1/2) = 4/7.
        let m = metric(&[0, 1, 0, -1, 0], &[0, 1, 2, -1, -1]);
        assert!((m.f1 - 4.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn first_step_below_the_threshold_is_predicted() {
        assert_eq!(first_below(&[0.5, -0.2, -0.9], 0.0), 1);
        assert_eq!(first_below(&[0.5, 0.2], 0.0), -1);
        // The best threshold separates the erroneous steps (scores -1) from the right ones (+1).
        let a = [1.0, -1.0];
        let b = [1.0, 1.0];
        let t = best_threshold(&[(&a, 1), (&b, -1)]);
        assert_eq!(first_below(&a, t), 1);
        assert_eq!(first_below(&b, t), -1);
    }

    #[test]
    fn tokens_map_to_steps_and_separators_to_the_step_before() {
        let steps = vec!["ab".to_string(), "cd".to_string()];
        let (text, ranges) = response_text(&steps);
        assert_eq!(text, "ab\n\ncd");
        assert_eq!(ranges, vec![(0, 2), (4, 6)]);
        // tokens: "a" "b" "\n\n" "cd"
        assert_eq!(token_steps(&[(0, 1), (1, 2), (2, 4), (4, 6)], &ranges), vec![0, 0, 0, 1]);
        let (mean, min) = step_mean_min(&[1.0, 3.0, 2.0, -1.0], &[0, 0, 0, 1], 3);
        assert_eq!(mean[..2], [2.0, -1.0]);
        assert_eq!(min[..2], [1.0, -1.0]);
        assert!(mean[2].is_nan());
    }

    #[test]
    fn folds_split_even_ids_and_thresholds_come_from_the_other_fold() {
        assert_eq!(
            (fold_of("gsm8k-0", 9), fold_of("gsm8k-2", 9), fold_of("gsm8k-4", 9), fold_of("x", 3)),
            (0, 1, 0, 1)
        );
        // Fold 0 (ids 0, 4) wants a threshold between 1 and 2; fold 1 (ids 2, 6) between -1 and 0.
        let items = vec![
            item("g-0", 0, &[1.0]),
            item("g-4", -1, &[2.0]),
            item("g-2", 0, &[-1.0]),
            item("g-6", -1, &[0.0]),
        ];
        let (preds, t) = cross_fit(&items, &|it| it.reward_mean.clone());
        assert!(t[0] > -1.0 && t[0] <= 0.0 + 1e-6, "fold 0 predicted with fold 1's threshold: {t:?}");
        assert!(t[1] > 1.0 && t[1] <= 2.0 + 1e-6, "fold 1 predicted with fold 0's threshold: {t:?}");
        // Fold 0 with fold 1's threshold (just above -1): no score below it, "no error" for both.
        // Fold 1 with fold 0's (just above 1): both scores (-1, 0) are below it, step 0 for both.
        assert_eq!(preds, vec![-1, -1, 0, 0]);
    }

    #[test]
    fn summary_orders_baselines_first_and_pairs_methods() {
        // Both classes in both folds (fold = i mod 2 for id 2i; the class alternates every two).
        let items: Vec<ItemScores> = (0..40)
            .map(|i| {
                if (i / 2) % 2 == 0 {
                    item(&format!("g-{}", 2 * i), 1, &[1.0, -1.0, 0.5])
                } else {
                    item(&format!("g-{}", 2 * i), -1, &[1.0, 1.0, 1.0])
                }
            })
            .collect();
        let s = summarize(&items, 1);
        assert!(s.methods[0].method.starts_with("random"));
        let interval = s.methods.iter().find(|m| m.method.starts_with("interval")).unwrap();
        assert_eq!(interval.metric.f1, 1.0, "a reward that separates perfectly scores F1 1");
        assert_eq!(interval.hit_at_1, 1.0);
        // Random: 1 / 4 on both classes.
        assert!((s.methods[0].metric.f1 - 0.25).abs() < 1e-12);
        assert!(s
            .paired
            .iter()
            .any(|p| p.a.starts_with("interval") && p.b.starts_with("policy") && p.diff > 0.9));
    }
}
