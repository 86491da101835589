//! airlift worker library.
//!
//! Owns everything that touches tensors: the model code (Llama / Qwen2 in tch), weight loading,
//! the tokenizer and chat templates, batched generation with a KV cache, GSM8K data and grading,
//! GGUF conversion, the AIRL core (`airl`), collectives, the rollout and learner roles with their
//! Flight services (`runtime`), and benchmarks. The binary `worker` only parses arguments and
//! calls into this library.

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
