//! Evaluation of a learned reward and its policy (`coordinator eval`): the metrics
//! ([`metrics`]), the summary of scored samples and corruptions with its printed table
//! ([`summary`]), the job's Parquet files ([`records`]), the report task's merge and outputs
//! ([`job`]) and `report.html` ([`report`]). Sampling is done by rollout workers and scoring by
//! learners (`runtime::learner`), as tasks of the coordinator.

pub mod job;
pub mod metrics;
pub mod processbench;
pub mod records;
pub mod report;
pub mod summary;
