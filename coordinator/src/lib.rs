//! The airlift coordinator.
//!
//! Will own the run: the gRPC server (Register / Attach / ReportTask / RunStatus), the run state
//! machine driven by one event loop, the task queue with leases, checkpoint manifests, the
//! metrics sink and the local launcher (design §2). None of that exists yet: it is the subject
//! of the distributed-runtime issue. Today the crate only fixes its place in the workspace.

/// What the coordinator binary says while the runtime is not built, so that nobody mistakes
/// the binary for a working scheduler.
pub const NOT_YET: &str = "the airlift coordinator is not implemented yet: the gRPC runtime \
    (design §2) is still to be built; use `worker generate` / `worker gsm8k` for now";

/// The protocol version this coordinator will speak.
pub fn protocol_version() -> u32 {
    airlift_proto::PROTOCOL_VERSION
}
