//! The ProcessBench file format (Zheng et al. 2024, <https://arxiv.org/abs/2412.06559>; one JSON
//! object per line: `id`, `generator`, `problem`, `steps`, `final_answer_correct`, `label` = the
//! 0-based earliest wrong step or −1), read here so that the coordinator can refuse a bad file
//! before any worker starts and the learners read the same items. The scoring and the metric are
//! the worker's (`airlift_worker::eval::processbench`).

use serde::Deserialize;
use std::path::Path;

/// One ProcessBench item.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Item {
    pub id: String,
    #[serde(default)]
    pub generator: String,
    pub problem: String,
    pub steps: Vec<String>,
    /// 0-based index of the earliest wrong step, or −1.
    pub label: i64,
    #[serde(default)]
    pub final_answer_correct: Option<bool>,
}

/// What separates steps in the scored response text.
pub const STEP_SEPARATOR: &str = "\n\n";

/// Reads a ProcessBench JSONL file (`id`, `problem`, `steps`, `label`; `generator` and
/// `final_answer_correct` optional); every error names the file, the row (1-based) and the field.
pub fn load(path: &Path) -> Result<Vec<Item>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = i + 1;
        let err = |what: String| format!("{}: row {row}: {what}", path.display());
        let item: Item = serde_json::from_str(line).map_err(|e| {
            err(format!(
                "not a ProcessBench item ({e}); expected fields id, problem, steps (a list of strings), label (an integer)"
            ))
        })?;
        if item.problem.trim().is_empty() {
            return Err(err("field `problem` is empty".into()));
        }
        if item.steps.is_empty() {
            return Err(err("field `steps` is empty".into()));
        }
        if item.steps.iter().any(|s| s.trim().is_empty()) {
            return Err(err("field `steps` holds an empty step".into()));
        }
        if item.label < -1 || item.label >= item.steps.len() as i64 {
            return Err(err(format!(
                "field `label` = {}: expected -1 or a step index below {}",
                item.label,
                item.steps.len()
            )));
        }
        out.push(item);
    }
    if out.is_empty() {
        return Err(format!("{}: no items", path.display()));
    }
    Ok(out)
}

/// The response text of an item (its steps joined by [`STEP_SEPARATOR`]) and each step's byte
/// range in it.
pub fn response_text(steps: &[String]) -> (String, Vec<(usize, usize)>) {
    let mut text = String::new();
    let mut ranges = Vec::with_capacity(steps.len());
    for (k, s) in steps.iter().enumerate() {
        if k > 0 {
            text.push_str(STEP_SEPARATOR);
        }
        let start = text.len();
        text.push_str(s);
        ranges.push((start, text.len()));
    }
    (text, ranges)
}
