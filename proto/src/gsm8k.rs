//! GSM8K-style data (the Hugging Face layout: `question`, `answer`, the answer's last line
//! `#### <number>`) from JSONL or Parquet, and answer grading.
//!
//! Grading: the reference is the text after the last `####` of the answer. A model's answer is
//! the number after its first `####` if it wrote one, else the last number in its text. Numbers
//! are normalised (thousands commas, `$`, a trailing `.` and surrounding text removed) and
//! compared numerically, so `1,000` = `1000` and `2.50` = `2.5`.

use arrow::array::{Array, LargeStringArray, StringArray, StringViewArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};

/// One problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub question: String,
    /// The full worked solution, ending in `#### <number>`.
    pub answer: String,
}

impl Problem {
    /// The reference final answer (text after the last `####`), normalised.
    pub fn reference(&self) -> Option<String> {
        reference_answer(&self.answer)
    }
}

/// Errors reading a dataset; each names the file and, where it applies, the row (1-based).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: row {row}: {what}")]
    Row { path: PathBuf, row: usize, what: String },
    #[error("{path}: {what}")]
    File { path: PathBuf, what: String },
}

/// Which problems a task's problem ids index: the run's training problems (synthetic, or the
/// `data.train` file when one is set), the synthetic held-out split, a GSM8K-layout file (row
/// `id`, 0-based), or a ProcessBench file (item `id`, 0-based; scored as written, not sampled).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProblemSource {
    SyntheticTrain,
    SyntheticEval,
    File(PathBuf),
    ProcessBench(PathBuf),
}

impl ProblemSource {
    /// Parses the wire form: `synthetic:train` (also the empty string), `synthetic:eval`,
    /// `processbench:PATH`, or a file path.
    pub fn parse(s: &str) -> ProblemSource {
        match s {
            "" | "synthetic:train" => ProblemSource::SyntheticTrain,
            "synthetic:eval" => ProblemSource::SyntheticEval,
            path => match path.strip_prefix("processbench:") {
                Some(p) => ProblemSource::ProcessBench(PathBuf::from(p)),
                None => ProblemSource::File(PathBuf::from(path)),
            },
        }
    }

    /// The wire form ([`ProblemSource::parse`] reads it back).
    pub fn wire(&self) -> String {
        match self {
            ProblemSource::SyntheticTrain => "synthetic:train".into(),
            ProblemSource::SyntheticEval => "synthetic:eval".into(),
            ProblemSource::File(p) => p.display().to_string(),
            ProblemSource::ProcessBench(p) => format!("processbench:{}", p.display()),
        }
    }
}

/// Loads problems from a `.jsonl` (one JSON object per line) or `.parquet` file.
pub fn load(path: &Path) -> Result<Vec<Problem>, DataError> {
    let name = path.to_string_lossy();
    if name.ends_with(".parquet") {
        load_parquet(path)
    } else if name.ends_with(".jsonl") || name.ends_with(".json") {
        load_jsonl(path)
    } else {
        Err(DataError::File {
            path: path.into(),
            what: "unknown extension: expected .jsonl or .parquet".into(),
        })
    }
}

fn check_row(path: &Path, row: usize, question: &str, answer: &str) -> Result<Problem, DataError> {
    let err = |what: String| DataError::Row { path: path.into(), row, what };
    if question.trim().is_empty() {
        return Err(err("field `question` is empty".into()));
    }
    if reference_answer(answer).is_none() {
        return Err(err(format!(
            "field `answer` has no `#### <number>` final line (ends with {:?})",
            answer.lines().last().unwrap_or("")
        )));
    }
    Ok(Problem {
        question: question.to_string(),
        answer: answer.to_string(),
    })
}

fn load_jsonl(path: &Path) -> Result<Vec<Problem>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.into(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let row = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |what: String| DataError::Row { path: path.into(), row, what };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let field = |f: &str| -> Result<String, DataError> {
            v.get(f)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| err(format!("field `{f}` is missing or not a string")))
        };
        out.push(check_row(path, row, &field("question")?, &field("answer")?)?);
    }
    Ok(out)
}

fn string_column(path: &Path, batch: &arrow::record_batch::RecordBatch, name: &str) -> Result<Vec<Option<String>>, DataError> {
    let col = batch.column_by_name(name).ok_or_else(|| DataError::File {
        path: path.into(),
        what: format!(
            "no column `{name}` (columns: {:?})",
            batch.schema().fields().iter().map(|f| f.name()).collect::<Vec<_>>()
        ),
    })?;
    let any = col.as_any();
    let get = |i: usize| -> Option<String> {
        if col.is_null(i) {
            return None;
        }
        if let Some(a) = any.downcast_ref::<StringArray>() {
            Some(a.value(i).to_string())
        } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
            Some(a.value(i).to_string())
        } else {
            any.downcast_ref::<StringViewArray>().map(|a| a.value(i).to_string())
        }
    };
    if any.downcast_ref::<StringArray>().is_none() && any.downcast_ref::<LargeStringArray>().is_none() && any.downcast_ref::<StringViewArray>().is_none() {
        return Err(DataError::File {
            path: path.into(),
            what: format!("column `{name}` has type {}, expected a string type", col.data_type()),
        });
    }
    Ok((0..col.len()).map(get).collect())
}

fn load_parquet(path: &Path) -> Result<Vec<Problem>, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io { path: path.into(), source })?;
    let bad = |e: &dyn std::fmt::Display| DataError::File {
        path: path.into(),
        what: format!("not a readable Parquet file: {e}"),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad(&e))?
        .build()
        .map_err(|e| bad(&e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let qs = string_column(path, &batch, "question")?;
        let ans = string_column(path, &batch, "answer")?;
        for (q, a) in qs.into_iter().zip(ans) {
            let row = out.len() + 1;
            let (Some(q), Some(a)) = (q, a) else {
                return Err(DataError::Row {
                    path: path.into(),
                    row,
                    what: "`question` or `answer` is null".into(),
                });
            };
            out.push(check_row(path, row, &q, &a)?);
        }
    }
    Ok(out)
}

/// Normalises a number as written: drops `$`, thousands commas, a trailing `.`, and leading or
/// trailing non-numeric text; returns it in canonical form (`2.50` → `2.5`, `-0` → `0`).
pub fn normalize_number(s: &str) -> Option<String> {
    let cleaned: String = s.chars().filter(|c| !matches!(c, ',' | '$' | ' ')).collect();
    let num = first_number(&cleaned)?;
    let v: f64 = num.parse().ok()?;
    Some(canonical(v))
}

fn canonical(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// All numbers in `s` as (start, text), where a number is an optional `-`, digits possibly
/// grouped with commas, and an optional decimal part. A trailing `.` is not part of the number.
fn numbers(s: &str) -> Vec<(usize, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let neg = b[i] == b'-' && i + 1 < b.len() && b[i + 1].is_ascii_digit();
        if b[i].is_ascii_digit() || neg {
            let start = i;
            if neg {
                i += 1;
            }
            let mut text = String::from(if neg { "-" } else { "" });
            while i < b.len() {
                let c = b[i];
                if c.is_ascii_digit() {
                    text.push(c as char);
                    i += 1;
                } else if c == b',' && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
                    i += 1; // thousands separator
                } else if c == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit() && !text.contains('.') {
                    text.push('.');
                    i += 1;
                } else {
                    break;
                }
            }
            out.push((start, text));
        } else {
            i += 1;
        }
    }
    out
}

fn first_number(s: &str) -> Option<String> {
    numbers(s).into_iter().next().map(|(_, t)| t)
}

/// The reference answer of a GSM8K solution: the number after the last `####`.
pub fn reference_answer(answer: &str) -> Option<String> {
    let idx = answer.rfind("####")?;
    normalize_number(&answer[idx + 4..])
}

/// A model's final answer: the number after its first `####`, else the first number inside its
/// last `\boxed{…}`, else the last number in the text.
pub fn extract_answer(text: &str) -> Option<String> {
    if let Some(idx) = text.find("####") {
        let after = &text[idx + 4..];
        let line = after.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let cleaned: String = line.chars().filter(|c| *c != '$').collect();
        if let Some(n) = first_number(&cleaned) {
            return normalize_number(&n);
        }
    }
    // The LaTeX convention of instruction-tuned math models (Qwen2.5 among them).
    if let Some(idx) = text.rfind("\\boxed{") {
        let inside = &text[idx + 7..];
        let inside = &inside[..inside.find('}').unwrap_or(inside.len())];
        let cleaned: String = inside.chars().filter(|c| *c != '$').collect();
        if let Some(n) = first_number(&cleaned) {
            return normalize_number(&n);
        }
    }
    let cleaned: String = text.chars().filter(|c| *c != '$').collect();
    numbers(&cleaned).pop().and_then(|(_, n)| normalize_number(&n))
}

/// Whether two normalised answers are numerically equal.
pub fn answers_match(predicted: &str, reference: &str) -> bool {
    match (predicted.parse::<f64>(), reference.parse::<f64>()) {
        (Ok(a), Ok(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
        _ => predicted == reference,
    }
}

/// Grades a model's output against a problem: (predicted answer, correct).
pub fn grade(output: &str, problem: &Problem) -> (Option<String>, bool) {
    let predicted = extract_answer(output);
    let correct = match (&predicted, problem.reference()) {
        (Some(p), Some(r)) => answers_match(p, &r),
        _ => false,
    };
    (predicted, correct)
}

/// The instruction put in front of a question when prompting a chat model.
pub fn prompt_for(question: &str) -> String {
    format!(
        "{question}\nSolve the problem step by step, one calculation per line. \
         On the last line write the final answer as '#### <number>'."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(answer: &str) -> Problem {
        Problem {
            question: "q".into(),
            answer: answer.into(),
        }
    }

    #[test]
    fn reference_answers() {
        assert_eq!(reference_answer("a\nb\n#### 1,000").as_deref(), Some("1000"));
        assert_eq!(reference_answer("#### -3").as_deref(), Some("-3"));
        assert_eq!(reference_answer("#### 2.50").as_deref(), Some("2.5"));
        assert_eq!(reference_answer("#### $18").as_deref(), Some("18"));
        assert_eq!(reference_answer("no marker 5"), None);
    }

    #[test]
    fn extracted_answers() {
        assert_eq!(extract_answer("so 2 + 3 = 5\n#### 1,000\n").as_deref(), Some("1000"));
        assert_eq!(extract_answer("#### -3").as_deref(), Some("-3"));
        assert_eq!(extract_answer("The total is $2.50.").as_deref(), Some("2.5"));
        assert_eq!(extract_answer("She pays $18.").as_deref(), Some("18"));
        assert_eq!(extract_answer("so \\[ 48 + 24 = 72 \\] \\boxed{72} (not 5)").as_deref(), Some("72"));
        assert_eq!(extract_answer("\\boxed{\\$1,250} then 7").as_deref(), Some("1250"));
        // Missing ####: the last number wins.
        assert_eq!(extract_answer("First 3 apples, then 4 more, so 7").as_deref(), Some("7"));
        // Text after the answer: the #### line wins over later numbers.
        assert_eq!(extract_answer("#### 42\nI hope this helps! Step 2 was hard.").as_deref(), Some("42"));
        assert_eq!(extract_answer("#### 42 apples").as_deref(), Some("42"));
        assert_eq!(extract_answer("no numbers here"), None);
        // `-` as a word separator is not a sign.
        assert_eq!(extract_answer("10 - 3 = 7").as_deref(), Some("7"));
    }

    #[test]
    fn grading_compares_numerically() {
        assert!(grade("#### 1000", &p("#### 1,000")).1);
        assert!(grade("The answer is 2.5", &p("#### 2.50")).1);
        assert!(grade("#### $18.00", &p("#### 18")).1);
        assert!(grade("#### -3", &p("#### -3")).1);
        assert!(!grade("#### 3", &p("#### -3")).1);
        assert!(!grade("no answer", &p("#### 3")).1);
        assert!(!grade("#### 41\nnot 42", &p("#### 42")).1);
    }

    #[test]
    fn malformed_rows_name_file_and_row() {
        let dir = std::env::temp_dir().join(format!("airlift-gsm8k-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.jsonl");
        std::fs::write(&f, "{\"question\": \"q\", \"answer\": \"#### 1\"}\n{\"question\": \"q2\"}\n").unwrap();
        let e = load(&f).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl: row 2") && e.contains("answer"), "{e}");
        std::fs::write(&f, "{\"question\": \"q\", \"answer\": \"no final line\"}\n").unwrap();
        let e = load(&f).unwrap_err().to_string();
        assert!(e.contains("row 1") && e.contains("####"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
