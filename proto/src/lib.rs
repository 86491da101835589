//! The contract between airlift processes.
//!
//! Owns what the coordinator and the workers must agree on: the protocol version, the gRPC
//! service (`proto/airlift.proto`, generated code committed under `src/generated/`), typed ids,
//! the run config, the call metadata (version + shared token) and its checks, and the Arrow
//! schema of trajectory records, and the sharded checkpoint format. Roles depend on this crate and never on each other.

pub mod auth;
pub mod checkpoint;
pub mod config;
pub mod gsm8k;
pub mod processbench;
pub mod ids;
pub mod trajectory;

/// Generated gRPC / protobuf code (do not edit; see `build.rs`).
#[rustfmt::skip]
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!("generated/airlift.v1.rs");
}

pub use ids::{PolicyVersion, PromptId, TaskId, WorkerId};

/// Version of the wire protocol. Every RPC carries it; a peer with another version is refused
/// with a message naming both versions. Bump it on any incompatible change to the contract.
pub const PROTOCOL_VERSION: u32 = 1;
