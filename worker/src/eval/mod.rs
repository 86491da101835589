//! Evaluation of a learned reward (issue "Evaluation: reranking, correctness prediction and
//! error localisation"). Built so far: the metrics ([`metrics`]) and the summary of scored
//! samples and corruptions with its printed table ([`summary`]). Not built yet: the evaluation
//! job that samples and scores, its Parquet outputs, `report.html`, `make eval`.

pub mod metrics;
pub mod summary;
