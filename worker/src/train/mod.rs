//! Training infrastructure shared by every kind of training step: the flat parameter layout
//! ([`flat`]), AdamW over it ([`optim`]), data parallelism over it ([`data_parallel`]) and a
//! rank's part of sharded checkpoints ([`checkpoint`]).
//! Layering: [`crate::airl`] uses this module; this module uses [`crate::collective`] (the
//! transport), which uses neither.

pub mod bench_checkpoint;
pub mod checkpoint;
pub mod data_parallel;
pub mod flat;
pub mod optim;

pub use data_parallel::{DataParallel, GradReducer, NoReduce};
