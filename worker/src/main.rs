//! `worker` binary: parses arguments, sets up logging, and calls the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    airlift_proto::private_files().map_err(anyhow::Error::msg)?;
    airlift_worker::sysmem::tune_allocator();
    if std::env::var_os("AIRLIFT_WORKER_SIGNALS").is_some_and(|v| v == "coordinator") {
        // Started by `coordinator --local` or the Slurm script: Ctrl-C and SIGTERM reach the
        // whole process group or job step, and they are the coordinator's to handle (it stops
        // the run at a checkpoint, then tells this process to exit). SIGKILL still ends it.
        // SAFETY: installs the ignore disposition before any other thread exists.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = airlift_worker::cli::Cli::parse();
    // A TLS folder (AIRLIFT_TLS) that cannot be read stops here, never falls back to plaintext.
    if let Some(t) = airlift_proto::tls::current().map_err(anyhow::Error::msg)? {
        tracing::debug!(dir = %t.dir.display(), "TLS on");
    }
    airlift_worker::cli::run(cli)
}
