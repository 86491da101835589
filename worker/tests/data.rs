//! GSM8K loading from Parquet (the JSONL path is covered by unit tests) and the real test split.

mod common;

use airlift_worker::gsm8k;
use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

#[test]
fn parquet_rows_load_and_grade() {
    let dir = std::env::temp_dir().join(format!("airlift-parquet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("train.parquet");
    let q: ArrayRef = Arc::new(StringArray::from(vec!["How many?", "And now?"]));
    let a: ArrayRef = Arc::new(StringArray::from(vec!["2 + 3 = <<2+3=5>>5\n#### 5", "#### 1,200"]));
    let batch = RecordBatch::try_from_iter([("question", q), ("answer", a)]).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let rows = gsm8k::load(&path).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].reference().as_deref(), Some("1200"));
    assert!(gsm8k::grade("so 1200", &rows[1]).1);

    // A file without an `answer` column names the file and the column.
    let q: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
    let batch = RecordBatch::try_from_iter([("question", q)]).unwrap();
    let bad = dir.join("bad.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&bad).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let e = gsm8k::load(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.parquet") && e.contains("no column `answer`"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn real_gsm8k_test_split_loads_with_1319_graded_rows() {
    let path = common::cache().join("data").join("gsm8k").join("test.jsonl");
    assert!(path.exists(), "{} is missing: run `make assets`", path.display());
    let rows = gsm8k::load(&path).unwrap();
    assert_eq!(rows.len(), 1319);
    assert_eq!(rows[0].reference().as_deref(), Some("18"));
    // Every reference answer grades itself right.
    assert!(rows.iter().all(|r| gsm8k::grade(&r.answer, r).1));
}
