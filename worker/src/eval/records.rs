//! The evaluation's Parquet files: `samples.parquet` (one row per problem and sample) and
//! `corruptions.parquet` (one row per controlled corruption of a problem's expert answer), each
//! with its per-token rewards and log-probs. Score tasks write parts; the report task merges them.

use arrow::array::{Array, ArrayRef, BooleanArray, Float32Builder, ListArray, ListBuilder, RecordBatch, StringArray, UInt32Array, UInt32Builder, UInt64Array};
use arrow::datatypes::{Field, Float32Type, Schema, UInt32Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;
use std::sync::Arc;

/// One sampled trace of a problem, scored.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRecord {
    pub problem_id: u64,
    pub sample_index: u32,
    /// The rollout task that sampled it.
    pub task_id: u64,
    pub policy_version: u64,
    pub question: String,
    pub reference_answer: Option<String>,
    pub text: String,
    pub response_tokens: Vec<u32>,
    pub behaviour_logprobs: Vec<f32>,
    pub token_rewards: Vec<f32>,
    /// Line (0-based) of each response token.
    pub token_lines: Vec<u32>,
    pub predicted_answer: Option<String>,
    pub correct: bool,
    pub finish_reason: String,
}

/// One controlled corruption of a problem's expert answer, scored.
#[derive(Debug, Clone, PartialEq)]
pub struct CorruptionRecord {
    pub problem_id: u64,
    pub corruption_index: u32,
    pub kind: String,
    pub text: String,
    pub response_tokens: Vec<u32>,
    /// The evaluated policy's log-prob of each token.
    pub policy_logprobs: Vec<f32>,
    pub token_rewards: Vec<f32>,
    pub token_lines: Vec<u32>,
    pub first_error_token: u32,
    pub first_error_line: u32,
}

/// Errors reading an evaluation file; each names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}")]
pub struct RecordError {
    pub path: String,
    pub what: String,
}

fn u64s(v: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(v))
}
fn u32s(v: impl Iterator<Item = u32>) -> ArrayRef {
    Arc::new(UInt32Array::from_iter_values(v))
}
fn strs<'a>(v: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}
fn opt_strs<'a>(v: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}
fn u32_lists<'a>(v: impl Iterator<Item = &'a [u32]>) -> ArrayRef {
    let mut b = ListBuilder::new(UInt32Builder::new());
    for l in v {
        b.values().append_slice(l);
        b.append(true);
    }
    Arc::new(b.finish())
}
fn f32_lists<'a>(v: impl Iterator<Item = &'a [f32]>) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new());
    for l in v {
        b.values().append_slice(l);
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Columns that may hold nulls; every other column is declared non-null whatever the data, so
/// that every evaluation's files have one schema (files of two evaluations concatenate).
const NULLABLE: [&str; 2] = ["reference_answer", "predicted_answer"];

/// A record batch whose schema is fixed by the column names and types alone (not by whether
/// this batch happens to hold a null, as `RecordBatch::try_from_iter` would decide).
fn fixed_batch<const N: usize>(cols: [(&str, ArrayRef); N]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(name, a)| Field::new(*name, a.data_type().clone(), NULLABLE.contains(name)))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols.into_iter().map(|c| c.1).collect())
}

/// Samples → one record batch.
pub fn samples_batch(rows: &[SampleRecord]) -> RecordBatch {
    fixed_batch([
        ("problem_id", u64s(rows.iter().map(|r| r.problem_id))),
        ("sample_index", u32s(rows.iter().map(|r| r.sample_index))),
        ("task_id", u64s(rows.iter().map(|r| r.task_id))),
        ("policy_version", u64s(rows.iter().map(|r| r.policy_version))),
        ("question", strs(rows.iter().map(|r| r.question.as_str()))),
        ("reference_answer", opt_strs(rows.iter().map(|r| r.reference_answer.as_deref()))),
        ("text", strs(rows.iter().map(|r| r.text.as_str()))),
        ("response_tokens", u32_lists(rows.iter().map(|r| r.response_tokens.as_slice()))),
        ("behaviour_logprobs", f32_lists(rows.iter().map(|r| r.behaviour_logprobs.as_slice()))),
        ("token_rewards", f32_lists(rows.iter().map(|r| r.token_rewards.as_slice()))),
        ("token_lines", u32_lists(rows.iter().map(|r| r.token_lines.as_slice()))),
        ("predicted_answer", opt_strs(rows.iter().map(|r| r.predicted_answer.as_deref()))),
        ("correct", Arc::new(rows.iter().map(|r| Some(r.correct)).collect::<BooleanArray>()) as ArrayRef),
        ("finish_reason", strs(rows.iter().map(|r| r.finish_reason.as_str()))),
    ])
    .expect("sample columns agree")
}

/// Corruptions → one record batch.
pub fn corruptions_batch(rows: &[CorruptionRecord]) -> RecordBatch {
    fixed_batch([
        ("problem_id", u64s(rows.iter().map(|r| r.problem_id))),
        ("corruption_index", u32s(rows.iter().map(|r| r.corruption_index))),
        ("kind", strs(rows.iter().map(|r| r.kind.as_str()))),
        ("text", strs(rows.iter().map(|r| r.text.as_str()))),
        ("response_tokens", u32_lists(rows.iter().map(|r| r.response_tokens.as_slice()))),
        ("policy_logprobs", f32_lists(rows.iter().map(|r| r.policy_logprobs.as_slice()))),
        ("token_rewards", f32_lists(rows.iter().map(|r| r.token_rewards.as_slice()))),
        ("token_lines", u32_lists(rows.iter().map(|r| r.token_lines.as_slice()))),
        ("first_error_token", u32s(rows.iter().map(|r| r.first_error_token))),
        ("first_error_line", u32s(rows.iter().map(|r| r.first_error_line))),
    ])
    .expect("corruption columns agree")
}

/// Writes `batch` to `path` through a temporary file and a rename (a reader never sees half a file).
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), RecordError> {
    let err = |e: &dyn std::fmt::Display| RecordError {
        path: path.display().to_string(),
        what: e.to_string(),
    };
    let tmp = path.with_extension("parquet.part");
    let file = std::fs::File::create(&tmp).map_err(|e| err(&e))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| err(&e))?;
    w.write(batch).map_err(|e| err(&e))?;
    w.close().map_err(|e| err(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(&e))
}

/// The record batches of a Parquet file.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, RecordError> {
    let err = |e: &dyn std::fmt::Display| RecordError {
        path: path.display().to_string(),
        what: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| err(&e))?
        .build()
        .map_err(|e| err(&e))?;
    reader.map(|b| b.map_err(|e| err(&e))).collect()
}

/// Typed access to a batch's columns, naming the file and column on a mismatch.
struct Cols<'a> {
    b: &'a RecordBatch,
    path: &'a Path,
}

impl<'a> Cols<'a> {
    fn get<T: 'static>(&self, name: &str) -> Result<&'a T, RecordError> {
        let c = self.b.column_by_name(name).ok_or_else(|| self.err(format!("no column `{name}`")))?;
        c.as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| self.err(format!("column `{name}` has type {}", c.data_type())))
    }
    fn err(&self, what: String) -> RecordError {
        RecordError {
            path: self.path.display().to_string(),
            what,
        }
    }
    fn u64(&self, name: &str) -> Result<Vec<u64>, RecordError> {
        Ok(self.get::<UInt64Array>(name)?.values().to_vec())
    }
    fn u32(&self, name: &str) -> Result<Vec<u32>, RecordError> {
        Ok(self.get::<UInt32Array>(name)?.values().to_vec())
    }
    fn str(&self, name: &str) -> Result<Vec<Option<String>>, RecordError> {
        let a = self.get::<StringArray>(name)?;
        Ok((0..a.len()).map(|i| (!a.is_null(i)).then(|| a.value(i).to_string())).collect())
    }
    fn u32_lists(&self, name: &str) -> Result<Vec<Vec<u32>>, RecordError> {
        let a = self.get::<ListArray>(name)?;
        (0..a.len())
            .map(|i| {
                a.value(i)
                    .as_any()
                    .downcast_ref::<arrow::array::PrimitiveArray<UInt32Type>>()
                    .map(|v| v.values().to_vec())
                    .ok_or_else(|| self.err(format!("`{name}` items are not u32")))
            })
            .collect()
    }
    fn f32_lists(&self, name: &str) -> Result<Vec<Vec<f32>>, RecordError> {
        let a = self.get::<ListArray>(name)?;
        (0..a.len())
            .map(|i| {
                a.value(i)
                    .as_any()
                    .downcast_ref::<arrow::array::PrimitiveArray<Float32Type>>()
                    .map(|v| v.values().to_vec())
                    .ok_or_else(|| self.err(format!("`{name}` items are not f32")))
            })
            .collect()
    }
}

/// Reads `samples.parquet` (or a part of it).
pub fn read_samples(path: &Path) -> Result<Vec<SampleRecord>, RecordError> {
    let mut out = Vec::new();
    for b in read_parquet(path)? {
        let c = Cols { b: &b, path };
        let (pid, si, task, ver) = (c.u64("problem_id")?, c.u32("sample_index")?, c.u64("task_id")?, c.u64("policy_version")?);
        let (q, refs, text, pred, fin) = (
            c.str("question")?,
            c.str("reference_answer")?,
            c.str("text")?,
            c.str("predicted_answer")?,
            c.str("finish_reason")?,
        );
        let (toks, lps, rws, lines) = (
            c.u32_lists("response_tokens")?,
            c.f32_lists("behaviour_logprobs")?,
            c.f32_lists("token_rewards")?,
            c.u32_lists("token_lines")?,
        );
        let correct = c.get::<BooleanArray>("correct")?;
        for i in 0..b.num_rows() {
            out.push(SampleRecord {
                problem_id: pid[i],
                sample_index: si[i],
                task_id: task[i],
                policy_version: ver[i],
                question: q[i].clone().unwrap_or_default(),
                reference_answer: refs[i].clone(),
                text: text[i].clone().unwrap_or_default(),
                response_tokens: toks[i].clone(),
                behaviour_logprobs: lps[i].clone(),
                token_rewards: rws[i].clone(),
                token_lines: lines[i].clone(),
                predicted_answer: pred[i].clone(),
                correct: correct.value(i),
                finish_reason: fin[i].clone().unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// Reads `corruptions.parquet` (or a part of it).
pub fn read_corruptions(path: &Path) -> Result<Vec<CorruptionRecord>, RecordError> {
    let mut out = Vec::new();
    for b in read_parquet(path)? {
        let c = Cols { b: &b, path };
        let (pid, idx, kind, text) = (c.u64("problem_id")?, c.u32("corruption_index")?, c.str("kind")?, c.str("text")?);
        let (toks, lps, rws, lines) = (
            c.u32_lists("response_tokens")?,
            c.f32_lists("policy_logprobs")?,
            c.f32_lists("token_rewards")?,
            c.u32_lists("token_lines")?,
        );
        let (fe, fl) = (c.u32("first_error_token")?, c.u32("first_error_line")?);
        for i in 0..b.num_rows() {
            out.push(CorruptionRecord {
                problem_id: pid[i],
                corruption_index: idx[i],
                kind: kind[i].clone().unwrap_or_default(),
                text: text[i].clone().unwrap_or_default(),
                response_tokens: toks[i].clone(),
                policy_logprobs: lps[i].clone(),
                token_rewards: rws[i].clone(),
                token_lines: lines[i].clone(),
                first_error_token: fe[i],
                first_error_line: fl[i],
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_and_corruptions_round_trip_through_parquet() {
        let dir = std::env::temp_dir().join(format!("airlift-eval-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = SampleRecord {
            problem_id: 3,
            sample_index: 1,
            task_id: 9,
            policy_version: 4,
            question: "q".into(),
            reference_answer: Some("7".into()),
            text: "a\n#### 7".into(),
            response_tokens: vec![5, 6, 7],
            behaviour_logprobs: vec![-0.5, -1.0, -0.1],
            token_rewards: vec![0.1, -0.2, 0.3],
            token_lines: vec![0, 0, 1],
            predicted_answer: None,
            correct: true,
            finish_reason: "stop".into(),
        };
        let c = CorruptionRecord {
            problem_id: 3,
            corruption_index: 0,
            kind: "answer_nudge".into(),
            text: "a\n#### 8".into(),
            response_tokens: vec![5, 8],
            policy_logprobs: vec![-0.5, -4.0],
            token_rewards: vec![0.1, -2.0],
            token_lines: vec![0, 1],
            first_error_token: 1,
            first_error_line: 1,
        };
        write_parquet(&dir.join("s.parquet"), &samples_batch(std::slice::from_ref(&s))).unwrap();
        write_parquet(&dir.join("c.parquet"), &corruptions_batch(std::slice::from_ref(&c))).unwrap();
        // One schema whatever the data: a sample with both answers has the same as one with none.
        let answered = SampleRecord {
            predicted_answer: Some("7".into()),
            ..s.clone()
        };
        let unanswered = SampleRecord {
            reference_answer: None,
            ..s.clone()
        };
        assert_eq!(
            samples_batch(std::slice::from_ref(&answered)).schema(),
            samples_batch(std::slice::from_ref(&unanswered)).schema()
        );
        assert!(!samples_batch(std::slice::from_ref(&s)).schema().field_with_name("text").unwrap().is_nullable());
        assert_eq!(read_samples(&dir.join("s.parquet")).unwrap(), vec![s]);
        assert_eq!(read_corruptions(&dir.join("c.parquet")).unwrap(), vec![c]);
        let e = read_samples(&dir.join("c.parquet")).unwrap_err().to_string();
        assert!(e.contains("c.parquet") && e.contains("sample_index"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
