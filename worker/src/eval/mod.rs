//! Evaluation of a learned reward (issue "Evaluation: reranking, correctness prediction and
//! error localisation"). Built so far: the metrics ([`metrics`]). Not built yet: the evaluation
//! job, its Parquet outputs and the report.

pub mod metrics;
