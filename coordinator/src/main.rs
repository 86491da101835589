//! `coordinator` binary: not built yet; it says so and exits with an error.

fn main() -> anyhow::Result<()> {
    anyhow::bail!(
        "{} (protocol version {})",
        airlift_coordinator::NOT_YET,
        airlift_coordinator::protocol_version()
    )
}
