//! `coordinator eval`: an evaluation job of a checkpoint (or exported policy and reward folders)
//! on a problem set, scheduled like training. The coordinator splits the problems into rollout
//! tasks (N samples per problem, with behaviour log-probs); each finished rollout task becomes a
//! score task on the learner that received its rows (per-token rewards of the samples and of
//! the controlled corruptions of those problems' expert answers); after the last one, learner
//! rank 0 merges everything into `<out>/samples.parquet`, `corruptions.parquet`,
//! `summary.json` and `report.html`. Everything the job needs is checked here, before any
//! worker starts.

use crate::CoordinatorError;
use airlift_proto::checkpoint::{self as ckpt, ResumePoint};
use airlift_proto::config::RunConfig;
use airlift_proto::gsm8k::{self, ProblemSource};
use std::path::{Path, PathBuf};

/// What to evaluate and how, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct EvalArgs {
    /// A checkpoint folder (its manifest holds the run's config).
    pub checkpoint: Option<PathBuf>,
    /// Exported policy and reward folders (with `config` for the remaining settings).
    pub policy: Option<PathBuf>,
    pub reward: Option<PathBuf>,
    /// A run config: required with `policy`/`reward`; with a checkpoint it must match the
    /// checkpoint's run (as for a resume) and replaces its config.
    pub config: Option<RunConfig>,
    /// `synthetic:N` (the first N held-out synthetic problems) or `synthetic:A..B` (ids A to B - 1),
    /// a GSM8K-layout file, or
    /// `processbench:FILE` (human-labelled first wrong steps; scored as written, no sampling).
    pub problems: String,
    /// At most this many problems of a file.
    pub limit: Option<usize>,
    pub samples: u32,
    pub name: String,
    /// Output folder (default `<run>/eval/<name>`).
    pub out: Option<PathBuf>,
    /// Earlier evaluations' folders to show beside this one.
    pub compare: Vec<PathBuf>,
    /// Corruption kinds of the localisation test instead of the run's `reward.corruption_kinds`
    /// (empty: the run's).
    pub corruption_kinds: Vec<String>,
    pub overwrite: bool,
    pub learners: Option<u32>,
    pub rollouts: Option<u32>,
    /// Check only: touch no folder (the launch scripts ask before submitting).
    pub check: bool,
}

/// A checked evaluation job.
#[derive(Debug, Clone)]
pub struct EvalPlan {
    pub dir: PathBuf,
    pub label: String,
    pub source: ProblemSource,
    pub problems: Vec<u64>,
    pub samples: u32,
    pub compare: Vec<PathBuf>,
}

/// Checks everything the job needs and returns the config the workers get (its `run.dir` is the
/// evaluation's folder, where logs, token and URL go), the plan, and the checkpoint the learners
/// load (none for exported folders).
pub fn prepare(args: &EvalArgs) -> Result<(RunConfig, EvalPlan, Option<ResumePoint>), CoordinatorError> {
    let bad = |what: String| CoordinatorError::Config(what);
    if args.samples == 0 {
        return Err(bad("--samples must be at least 1".into()));
    }
    let (mut cfg, point, label) = match (&args.checkpoint, &args.policy, &args.reward) {
        (Some(dir), None, None) => {
            // The checkpoint's files first: sizes and SHA-256 (and the config, when one is given).
            let hash = args.config.as_ref().map(|c| c.resume_hash());
            let m = ckpt::verify(dir, hash.as_deref()).map_err(|e| CoordinatorError::Checkpoint(format!("--checkpoint {}: {e}", dir.display())))?;
            let cfg = match &args.config {
                Some(c) => c.clone(),
                None => RunConfig::from_toml(&m.config_toml)
                    .map_err(|e| CoordinatorError::Checkpoint(format!("--checkpoint {}: its manifest's config: {e}", dir.display())))?,
            };
            let label = format!("{} (iteration {}, policy v{})", dir.display(), m.iteration, m.policy_version);
            (cfg, Some(ResumePoint { dir: dir.clone(), manifest: m }), label)
        }
        (None, Some(policy), Some(reward)) => {
            let mut cfg = args
                .config
                .clone()
                .ok_or_else(|| bad("--policy/--reward need --config for the sampling, data and reward settings".into()))?;
            for (flag, d) in [("--policy", policy), ("--reward", reward)] {
                for f in ["config.json", "model.safetensors", "tokenizer.json"] {
                    if !d.join(f).exists() {
                        return Err(bad(format!(
                            "{flag} {}: no {f} (expected a folder written by `coordinator export`)",
                            d.display()
                        )));
                    }
                }
            }
            let read = |d: &Path| std::fs::read(d.join("tokenizer.json")).map_err(|e| bad(format!("{}: {e}", d.join("tokenizer.json").display())));
            if read(policy)? != read(reward)? {
                return Err(bad(format!(
                    "--reward {}: its tokenizer.json differs from the policy's ({}); the reward must score the policy's tokens",
                    reward.display(),
                    policy.join("tokenizer.json").display()
                )));
            }
            cfg.model.policy = policy.clone();
            cfg.model.reward = Some(reward.clone());
            cfg.model.reward_weights = Some(reward.clone());
            (cfg, None, format!("{} + {}", policy.display(), reward.display()))
        }
        _ => return Err(bad("give either --checkpoint DIR, or --policy DIR and --reward DIR".into())),
    };

    let (source, problems) = if let Some(file) = args.problems.strip_prefix("processbench:") {
        let path = PathBuf::from(file);
        let items = airlift_proto::processbench::load(&path).map_err(|e| bad(format!("--problems processbench:{e}")))?;
        let n = args.limit.unwrap_or(items.len()).min(items.len()) as u64;
        let abs = std::fs::canonicalize(&path).map_err(|e| bad(format!("--problems processbench:{}: {e}", path.display())))?;
        (ProblemSource::ProcessBench(abs), (0..n).collect())
    } else {
        match args.problems.strip_prefix("synthetic:") {
            Some(spec) => (
                ProblemSource::SyntheticEval,
                synthetic_ids(spec).map_err(|e| bad(format!("--problems {}: {e}", args.problems)))?,
            ),
            None => {
                let path = PathBuf::from(&args.problems);
                let all = gsm8k::load(&path).map_err(|e| bad(format!("--problems {e}")))?;
                if all.is_empty() {
                    return Err(bad(format!("--problems {}: no problems in the file", path.display())));
                }
                let n = args.limit.unwrap_or(all.len()).min(all.len()) as u64;
                // Workers read the file themselves: give them a path that works from any folder.
                let abs = std::fs::canonicalize(&path).map_err(|e| bad(format!("--problems {}: {e}", path.display())))?;
                (ProblemSource::File(abs), (0..n).collect())
            }
        }
    };

    for d in &args.compare {
        for f in ["summary.json", "samples.parquet", "corruptions.parquet"] {
            if !d.join(f).exists() {
                return Err(bad(format!("--compare {}: no {f} (expected the folder of an earlier evaluation)", d.display())));
            }
        }
    }
    let dir = args.out.clone().unwrap_or_else(|| cfg.run_dir().join("eval").join(&args.name));
    let dir = if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir().map(|d| d.join(&dir)).unwrap_or(dir)
    };
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
        if !args.overwrite {
            return Err(bad(format!(
                "{} holds an earlier evaluation: pass --overwrite to replace it, or choose another --name",
                dir.display()
            )));
        }
        if !args.check {
            std::fs::remove_dir_all(&dir).map_err(|e| CoordinatorError::Io {
                path: dir.display().to_string(),
                what: format!("cannot delete for --overwrite: {e}"),
            })?;
            tracing::warn!(dir = %dir.display(), "deleted the earlier evaluation (--overwrite)");
        }
    }
    if !args.check {
        std::fs::create_dir_all(&dir).map_err(|e| CoordinatorError::Io {
            path: dir.display().to_string(),
            what: e.to_string(),
        })?;
    }
    cfg.run.dir = Some(dir.clone());
    if !args.corruption_kinds.is_empty() {
        cfg.reward.corruption_kinds = args.corruption_kinds.clone();
        cfg.validate()
            .map_err(|e| bad(format!("--corruption-kinds: {}", e.to_string().replace("reward.corruption_kinds", "kind"))))?;
    }
    if let Some(n) = args.learners {
        cfg.workers.learner = n;
    }
    if let Some(n) = args.rollouts {
        cfg.workers.rollout = n;
    }
    if cfg.workers.learner == 0 || cfg.workers.rollout == 0 {
        return Err(bad(
            "an evaluation needs at least one learner (--learners) and one rollout worker (--rollouts)".into()
        ));
    }
    let compare = args.compare.iter().map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone())).collect();
    Ok((
        cfg,
        EvalPlan {
            dir,
            label,
            source,
            problems,
            samples: args.samples,
            compare,
        },
        point,
    ))
}

/// The printed end of an evaluation: its table and where the files are.
pub fn describe(plan: &EvalPlan, result: &serde_json::Value) -> String {
    let each = if matches!(plan.source, ProblemSource::ProcessBench(_)) {
        "scored as written".to_string()
    } else {
        format!("{} samples each", plan.samples)
    };
    let mut out = format!("\n== airlift evaluation: {} ==\nproblems: {} ({each})\n", plan.label, plan.source.wire());
    out.push_str(result["table"].as_str().unwrap_or("(no table)\n"));
    let files: &[&str] = if matches!(plan.source, ProblemSource::ProcessBench(_)) {
        &["processbench.jsonl", "summary.json", "report.html"]
    } else {
        &["samples.parquet", "corruptions.parquet", "summary.json", "report.html"]
    };
    for f in files {
        out.push_str(&format!("{f}: {}\n", plan.dir.join(f).display()));
    }
    out
}

/// The held-out synthetic problem ids of `synthetic:SPEC`: `N` is the first N (ids 0..N), `A..B`
/// the ids A to B - 1, e.g. a confirmation set beside the first 128 that results were read on.
fn synthetic_ids(spec: &str) -> Result<Vec<u64>, String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("expected synthetic:N or synthetic:A..B with whole numbers, got `{t}`"))
    };
    let (a, b) = match spec.split_once("..") {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (0, num(spec)?),
    };
    if b <= a {
        return Err(if spec.contains("..") {
            format!("no problems: the range {a}..{b} is empty (A..B needs B larger than A)")
        } else {
            "no problems (N must be at least 1)".to_string()
        });
    }
    if b - a > 1_000_000 {
        return Err(format!("{} problems is more than the 1,000,000 an evaluation takes", b - a));
    }
    Ok((a..b).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_problem_sets_are_a_count_or_a_range() {
        assert_eq!(synthetic_ids("3").unwrap(), vec![0, 1, 2]);
        assert_eq!(synthetic_ids("128..131").unwrap(), vec![128, 129, 130]);
        for bad in ["0", "5..5", "9..2", "x", "1..", "..4", "-1"] {
            let e = synthetic_ids(bad).unwrap_err();
            assert!(e.contains("synthetic:") || e.contains("no problems"), "{bad}: {e}");
        }
    }
}
