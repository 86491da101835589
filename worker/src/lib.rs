//! airlift worker library.
//!
//! Owns everything that touches tensors: the model code (Llama / Qwen2 in tch), weight loading,
//! the tokenizer and chat templates, batched generation with a KV cache, GSM8K data and grading,
//! GGUF conversion, the AIRL core (`airl`), collectives, the rollout and learner roles with their
//! Flight services (`runtime`), and benchmarks. The binary `worker` only parses arguments and
//! calls into this library.

// `x = x + h` must not become `x += h` on tensors: tch's `+=` is the in-place `add_`, which
// overwrites a value autograd saved for the backward pass (clippy --fix made exactly that change
// in the residual stream once, and every training step with 2 learners failed).
#![allow(clippy::assign_op_pattern)]

pub mod airl;
pub mod bench;
pub mod cli;
pub mod collective;
pub mod convert;
pub mod cuda;
pub mod eval;
pub mod generate;
pub mod gguf;
/// GSM8K-style problem files and answer grading (shared with the coordinator, which checks problem files up front).
pub use airlift_proto::gsm8k;
pub mod model;
pub mod rng;
pub mod runtime;
pub mod sysmem;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use model::llama::{Config, Llama};
