//! `worker` binary: parses arguments, sets up logging, and calls the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    airlift_worker::sysmem::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    airlift_worker::cli::run(airlift_worker::cli::Cli::parse())
}
