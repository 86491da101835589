//! The trajectory record of design §2 as an Arrow schema (the same columns go to Parquet), and
//! conversion between rows and record batches with validation that names the column and row.

use arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Float32Builder, Int32Array, ListArray, ListBuilder, RecordBatch, StringArray, UInt32Array, UInt32Builder,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use std::sync::Arc;

/// One sampled completion (or expert / corrupted trace).
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryRow {
    pub iteration: u64,
    pub policy_version: u64,
    pub task_id: u64,
    pub prompt_id: u64,
    pub sample_index: u32,
    pub prompt_tokens: Vec<u32>,
    pub response_tokens: Vec<u32>,
    pub behaviour_logprobs: Vec<f32>,
    /// `stop` or `length`.
    pub finish_reason: String,
    pub response_text: String,
    pub predicted_answer: Option<String>,
    pub correct: Option<bool>,
    pub generation_ms: u32,
    /// `policy`, `expert` or `corrupted`.
    pub source: String,
    pub first_error_token: Option<i32>,
}

/// The Arrow schema of trajectory records.
pub fn schema() -> SchemaRef {
    let list_u32 = DataType::List(Arc::new(Field::new("item", DataType::UInt32, true)));
    let list_f32 = DataType::List(Arc::new(Field::new("item", DataType::Float32, true)));
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new("iteration", DataType::UInt64, false),
        Field::new("policy_version", DataType::UInt64, false),
        Field::new("task_id", DataType::UInt64, false),
        Field::new("prompt_id", DataType::UInt64, false),
        Field::new("sample_index", DataType::UInt32, false),
        Field::new("prompt_tokens", list_u32.clone(), false),
        Field::new("response_tokens", list_u32, false),
        Field::new("behaviour_logprobs", list_f32, false),
        Field::new("finish_reason", dict.clone(), false),
        Field::new("response_text", DataType::Utf8, false),
        Field::new("predicted_answer", DataType::Utf8, true),
        Field::new("correct", DataType::Boolean, true),
        Field::new("generation_ms", DataType::UInt32, false),
        Field::new("source", dict, false),
        Field::new("first_error_token", DataType::Int32, true),
    ]))
}

fn u32_lists(rows: &[TrajectoryRow], f: impl Fn(&TrajectoryRow) -> &[u32]) -> ArrayRef {
    let mut b = ListBuilder::new(UInt32Builder::new());
    for r in rows {
        b.values().append_slice(f(r));
        b.append(true);
    }
    Arc::new(b.finish())
}

fn dict(values: impl Iterator<Item = String>) -> ArrayRef {
    let arr: DictionaryArray<Int32Type> = values.collect::<Vec<_>>().iter().map(|s| s.as_str()).collect();
    Arc::new(arr)
}

/// Rows → one record batch.
pub fn to_batch(rows: &[TrajectoryRow]) -> RecordBatch {
    let mut lp = ListBuilder::new(Float32Builder::new());
    for r in rows {
        lp.values().append_slice(&r.behaviour_logprobs);
        lp.append(true);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.iteration))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.policy_version))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.task_id))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.prompt_id))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.sample_index))),
        u32_lists(rows, |r| &r.prompt_tokens),
        u32_lists(rows, |r| &r.response_tokens),
        Arc::new(lp.finish()),
        dict(rows.iter().map(|r| r.finish_reason.clone())),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.response_text.as_str()))),
        Arc::new(StringArray::from(rows.iter().map(|r| r.predicted_answer.as_deref()).collect::<Vec<_>>())),
        Arc::new(BooleanArray::from(rows.iter().map(|r| r.correct).collect::<Vec<_>>())),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.generation_ms))),
        dict(rows.iter().map(|r| r.source.clone())),
        Arc::new(Int32Array::from(rows.iter().map(|r| r.first_error_token).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(schema(), cols).expect("columns match the schema")
}

/// An invalid record batch: which column / row and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("trajectory batch: column `{column}`{row}: {what}", row = .row.map(|r| format!(", row {r}")).unwrap_or_default())]
pub struct BatchError {
    pub column: String,
    pub row: Option<usize>,
    pub what: String,
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, BatchError> {
    let c = b.column_by_name(name).ok_or_else(|| BatchError {
        column: name.into(),
        row: None,
        what: "missing".into(),
    })?;
    c.as_any().downcast_ref::<T>().ok_or_else(|| BatchError {
        column: name.into(),
        row: None,
        what: format!("has type {}, expected the trajectory schema's type", c.data_type()),
    })
}

/// A dictionary-encoded string column; plain utf8 is accepted too (Flight may hydrate
/// dictionaries in transit).
fn dict_values(b: &RecordBatch, name: &str, allowed: &[&str]) -> Result<Vec<String>, BatchError> {
    let check = |i: usize, s: String| {
        if allowed.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(BatchError {
                column: name.into(),
                row: Some(i),
                what: format!("`{s}` is not one of {allowed:?}"),
            })
        }
    };
    if let Some(c) = b.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>()) {
        return (0..c.len()).map(|i| check(i, c.value(i).to_string())).collect();
    }
    let d: &DictionaryArray<Int32Type> = col(b, name)?;
    let vals = d.values().as_any().downcast_ref::<StringArray>().ok_or_else(|| BatchError {
        column: name.into(),
        row: None,
        what: "dictionary values are not utf8".into(),
    })?;
    (0..d.len()).map(|i| check(i, vals.value(d.keys().value(i) as usize).to_string())).collect()
}

fn lists<T: arrow::datatypes::ArrowPrimitiveType>(b: &RecordBatch, name: &str) -> Result<Vec<Vec<T::Native>>, BatchError> {
    let l: &ListArray = col(b, name)?;
    (0..l.len())
        .map(|i| {
            let v = l.value(i);
            let p = v.as_any().downcast_ref::<arrow::array::PrimitiveArray<T>>().ok_or_else(|| BatchError {
                column: name.into(),
                row: Some(i),
                what: "list items have the wrong type".into(),
            })?;
            Ok(p.values().to_vec())
        })
        .collect()
}

/// Record batch → rows, validating the columns and that per-token lists agree in length.
pub fn from_batch(b: &RecordBatch) -> Result<Vec<TrajectoryRow>, BatchError> {
    let it: &UInt64Array = col(b, "iteration")?;
    let pv: &UInt64Array = col(b, "policy_version")?;
    let task: &UInt64Array = col(b, "task_id")?;
    let pid: &UInt64Array = col(b, "prompt_id")?;
    let si: &UInt32Array = col(b, "sample_index")?;
    let prompts = lists::<arrow::datatypes::UInt32Type>(b, "prompt_tokens")?;
    let responses = lists::<arrow::datatypes::UInt32Type>(b, "response_tokens")?;
    let lps = lists::<arrow::datatypes::Float32Type>(b, "behaviour_logprobs")?;
    let finish = dict_values(b, "finish_reason", &["stop", "length"])?;
    let text: &StringArray = col(b, "response_text")?;
    let pred: &StringArray = col(b, "predicted_answer")?;
    let correct: &BooleanArray = col(b, "correct")?;
    let ms: &UInt32Array = col(b, "generation_ms")?;
    let source = dict_values(b, "source", &["policy", "expert", "corrupted"])?;
    let fe: &Int32Array = col(b, "first_error_token")?;
    let mut out = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        if source[i] == "policy" && lps[i].len() != responses[i].len() {
            return Err(BatchError {
                column: "behaviour_logprobs".into(),
                row: Some(i),
                what: format!("{} values for {} response tokens", lps[i].len(), responses[i].len()),
            });
        }
        if prompts[i].is_empty() {
            return Err(BatchError {
                column: "prompt_tokens".into(),
                row: Some(i),
                what: "empty prompt".into(),
            });
        }
        out.push(TrajectoryRow {
            iteration: it.value(i),
            policy_version: pv.value(i),
            task_id: task.value(i),
            prompt_id: pid.value(i),
            sample_index: si.value(i),
            prompt_tokens: prompts[i].clone(),
            response_tokens: responses[i].clone(),
            behaviour_logprobs: lps[i].clone(),
            finish_reason: finish[i].clone(),
            response_text: text.value(i).to_string(),
            predicted_answer: (!pred.is_null(i)).then(|| pred.value(i).to_string()),
            correct: (!correct.is_null(i)).then(|| correct.value(i)),
            generation_ms: ms.value(i),
            source: source[i].clone(),
            first_error_token: (!fe.is_null(i)).then(|| fe.value(i)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u32) -> TrajectoryRow {
        TrajectoryRow {
            iteration: 1,
            policy_version: 1,
            task_id: 7,
            prompt_id: 3,
            sample_index: i,
            prompt_tokens: vec![1, 2, 3],
            response_tokens: vec![4, 5],
            behaviour_logprobs: vec![-0.5, -1.5],
            finish_reason: "stop".into(),
            response_text: "hi".into(),
            predicted_answer: if i == 0 { Some("5".into()) } else { None },
            correct: Some(i == 0),
            generation_ms: 12,
            source: "policy".into(),
            first_error_token: None,
        }
    }

    #[test]
    fn rows_round_trip_and_bad_rows_are_named() {
        let rows = vec![row(0), row(1)];
        let b = to_batch(&rows);
        assert_eq!(from_batch(&b).unwrap(), rows);
        let mut bad = row(1);
        bad.behaviour_logprobs.pop();
        let e = from_batch(&to_batch(&[row(0), bad])).unwrap_err().to_string();
        assert!(e.contains("column `behaviour_logprobs`, row 1"), "{e}");
    }
}
