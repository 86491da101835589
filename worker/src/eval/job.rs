//! The last step of an evaluation job (the report task, on learner rank 0): merge the Parquet
//! parts the score tasks wrote into `samples.parquet` and `corruptions.parquet`, checking that
//! every (problem, sample) is there exactly once; compute the summary; write `summary.json` and
//! `report.html`, beside earlier evaluations (`--compare`).

use super::records::{self, CorruptionRecord, SampleRecord};
use super::report::{self, Evaluation};
use super::summary::{self, CorruptionScore, SampleScore, Summary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the parts of an evaluation in `dir` go.
pub fn parts_dir(dir: &Path) -> PathBuf {
    dir.join("parts")
}

/// The sample part of score task `task_id`.
pub fn samples_part(dir: &Path, task_id: u64) -> PathBuf {
    parts_dir(dir).join(format!("samples-task-{task_id:08}.parquet"))
}

/// The corruption part of score task `task_id`.
pub fn corruptions_part(dir: &Path, task_id: u64) -> PathBuf {
    parts_dir(dir).join(format!("corruptions-task-{task_id:08}.parquet"))
}

/// What the report task was asked for.
pub struct Job<'a> {
    pub dir: &'a Path,
    /// What was evaluated (checkpoint or model folders), for the report.
    pub label: &'a str,
    pub problem_set: &'a str,
    pub problems: &'a [u64],
    pub samples_per_problem: u32,
    pub compare: &'a [PathBuf],
}

/// The summary as written to `summary.json`: the numbers and what they are of.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SummaryFile {
    pub label: String,
    pub problem_set: String,
    pub summary: serde_json::Value,
    pub table: String,
}

/// `text` (a label or problem set) with every absolute path under `base` written relative to it,
/// so that `summary.json` and the report do not depend on where the run's folder was checked out
/// (`/home/me/airlift/runs/default/checkpoints/step-000005 (iteration 5, …)` becomes
/// `runs/default/checkpoints/step-000005 (iteration 5, …)` with `base` the working folder).
pub fn relative_paths(text: &str, base: &Path) -> String {
    let base = base.to_string_lossy();
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        return text.to_string();
    }
    text.replace(&format!("{base}/"), "")
}

/// Scores for [`summary::summarize`].
pub fn scores(samples: &[SampleRecord], corruptions: &[CorruptionRecord]) -> (Vec<SampleScore>, Vec<CorruptionScore>) {
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let s = samples
        .iter()
        .map(|r| SampleScore {
            problem: r.problem_id,
            answer: r.predicted_answer.clone(),
            correct: r.correct,
            logprobs: f(&r.behaviour_logprobs),
            rewards: f(&r.token_rewards),
        })
        .collect();
    let c = corruptions
        .iter()
        .map(|r| CorruptionScore {
            problem: r.problem_id,
            rewards: f(&r.token_rewards),
            logprobs: f(&r.policy_logprobs),
            steps: r.token_lines.iter().map(|&l| l as usize).collect(),
            first_wrong_line: r.first_error_line as usize,
            kind: r.kind.clone(),
        })
        .collect();
    (s, c)
}

/// Merges the parts, checks them against the job, writes the outputs; returns the summary and
/// its printed table. `token_text` turns a token id into its text (for the shaded traces).
pub fn finish(job: &Job, token_text: &dyn Fn(u32) -> String) -> Result<(Summary, String), String> {
    let parts = parts_dir(job.dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&parts)
        .map_err(|e| format!("{}: {e}", parts.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let (mut samples, mut corruptions) = (Vec::new(), Vec::new());
    for f in &files {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("samples-") && name.ends_with(".parquet") {
            samples.extend(records::read_samples(f).map_err(|e| e.to_string())?);
        } else if name.starts_with("corruptions-") && name.ends_with(".parquet") {
            corruptions.extend(records::read_corruptions(f).map_err(|e| e.to_string())?);
        }
    }
    // Every (problem, sample) of the job exactly once, nothing else.
    let mut seen: BTreeMap<(u64, u32), usize> = BTreeMap::new();
    for s in &samples {
        *seen.entry((s.problem_id, s.sample_index)).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).map(|(k, _)| *k).collect();
    if !twice.is_empty() {
        return Err(format!("{}: (problem, sample) scored more than once: {twice:?}", parts.display()));
    }
    let wanted: Vec<(u64, u32)> = job.problems.iter().flat_map(|&p| (0..job.samples_per_problem).map(move |k| (p, k))).collect();
    let missing: Vec<_> = wanted.iter().filter(|k| !seen.contains_key(k)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "{}: {} of {} (problem, sample) pairs missing, e.g. {:?}",
            parts.display(),
            missing.len(),
            wanted.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    if seen.len() != wanted.len() {
        return Err(format!(
            "{}: {} samples scored, the job asked for {}",
            parts.display(),
            seen.len(),
            wanted.len()
        ));
    }
    samples.sort_by_key(|s| (s.problem_id, s.sample_index));
    corruptions.sort_by_key(|c| (c.problem_id, c.corruption_index));

    records::write_parquet(&job.dir.join("samples.parquet"), &records::samples_batch(&samples)).map_err(|e| e.to_string())?;
    records::write_parquet(&job.dir.join("corruptions.parquet"), &records::corruptions_batch(&corruptions)).map_err(|e| e.to_string())?;
    // The evaluations to compare with (read back from their folders), paired with this one.
    let mut others = Vec::new();
    for d in job.compare {
        let p = d.join("summary.json");
        let text = std::fs::read_to_string(&p).map_err(|e| format!("--compare {}: {e}", p.display()))?;
        let f: SummaryFile = serde_json::from_str(&text).map_err(|e| format!("--compare {}: not an evaluation summary: {e}", p.display()))?;
        let s = records::read_samples(&d.join("samples.parquet")).map_err(|e| format!("--compare: {e}"))?;
        let c = records::read_corruptions(&d.join("corruptions.parquet")).map_err(|e| format!("--compare: {e}"))?;
        others.push((f, s, c));
    }
    let (s, c) = scores(&samples, &corruptions);
    let mut sum = summary::summarize(&s, &c, 0xE7A1);
    for (f, os, oc) in &others {
        let (os, oc) = scores(os, oc);
        sum.versus.push(summary::versus(&s, &c, (&os, &oc), &f.label, 0xE7A2));
    }
    let table = summary::table(&sum);
    let file = SummaryFile {
        label: job.label.into(),
        problem_set: job.problem_set.into(),
        summary: serde_json::to_value(&sum).map_err(|e| e.to_string())?,
        table: table.clone(),
    };
    let path = job.dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?).map_err(|e| format!("{}: {e}", path.display()))?;

    // The report: this evaluation, then the ones it was compared with.
    let mut evals = vec![Evaluation {
        label: job.label,
        problem_set: job.problem_set,
        summary: &file.summary,
        samples: &samples,
        corruptions: &corruptions,
    }];
    for (f, s, c) in &others {
        evals.push(Evaluation {
            label: &f.label,
            problem_set: &f.problem_set,
            summary: &f.summary,
            samples: s,
            corruptions: c,
        });
    }
    let html = report::html(&evals, token_text);
    let path = job.dir.join("report.html");
    std::fs::write(&path, html).map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = std::fs::remove_dir_all(&parts);
    Ok((sum, table))
}

#[cfg(test)]
mod tests {
    use super::relative_paths;
    use std::path::Path;

    #[test]
    fn absolute_paths_under_the_base_become_relative() {
        let label = "/home/me/airlift/runs/default/checkpoints/step-000005 (iteration 5, policy v6)";
        assert_eq!(
            relative_paths(label, Path::new("/home/me/airlift")),
            "runs/default/checkpoints/step-000005 (iteration 5, policy v6)"
        );
        assert_eq!(
            relative_paths("processbench:/home/me/airlift/.cache/pb.jsonl", Path::new("/home/me/airlift/")),
            "processbench:.cache/pb.jsonl"
        );
        // Elsewhere, or a folder whose name only starts like the base: unchanged.
        assert_eq!(relative_paths("/data/gsm8k.jsonl", Path::new("/home/me/airlift")), "/data/gsm8k.jsonl");
        assert_eq!(relative_paths("/home/me/airlift2/x", Path::new("/home/me/airlift")), "/home/me/airlift2/x");
    }
}
