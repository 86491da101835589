//! The contract between airlift processes.
//!
//! Owns what the coordinator and the workers must agree on: the protocol version, typed ids,
//! and (as the distributed runtime lands) the `.proto` services with their committed generated
//! code, the Arrow schemas of trajectory records, and the config types both sides read.
//! Roles depend on this crate and never on each other.

pub mod ids;

pub use ids::{PolicyVersion, PromptId, TaskId, WorkerId};

/// Version of the wire protocol. Every RPC carries it; a peer with another version is refused
/// with a message naming both versions. Bump it on any incompatible change to the contract.
pub const PROTOCOL_VERSION: u32 = 1;
