//! `coordinator` binary: parses arguments, sets up logging, and calls the library.

use airlift_proto::auth::{load_token, Stamp};
use airlift_proto::config::RunConfig;
use airlift_proto::pb::coordinator_client::CoordinatorClient;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// airlift coordinator: serves a run to rollout and learner workers.
#[derive(Debug, Parser)]
#[command(name = "coordinator", version)]
struct Cli {
    /// Run config (TOML; AIRLIFT__SECTION__KEY environment variables override keys).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Start the configured workers as local processes and run to the end.
    #[arg(long)]
    local: bool,
    /// Continue the run from a checkpoint: the newest valid one in `run.dir` (`--resume`), or
    /// the folder given (`--resume PATH`). Checked (sizes, SHA-256, config) before anything loads.
    #[arg(long, num_args = 0..=1, value_name = "CHECKPOINT")]
    resume: Option<Option<PathBuf>>,
    /// With `--resume PATH`: branch off that checkpoint into this config's run.dir, whose
    /// config may also differ in the settings that act only in the adversarial iterations
    /// (`policy`, `sampling`, `reward.lr`, `reward.disc_steps`, ...), e.g. several ablations of
    /// the iterations after one warm start. Prints the keys that changed.
    #[arg(long, requires = "resume")]
    fork: bool,
    /// Start afresh in a run.dir that holds another run's outputs, deleting them (a fresh run
    /// refuses such a folder otherwise).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Address to serve on when workers are started by hand or by Slurm (port 0: any free
    /// port). The address workers should use is written to `<run>/coordinator.url`.
    #[arg(long, default_value = "0.0.0.0:50051")]
    listen: String,
    /// For job scripts that requeue themselves (cluster/airlift.sbatch): a lost learner stops
    /// the run at once with exit status 75 instead of failing it, so that the job requeues and
    /// resumes from the newest checkpoint (at most `run.max_restarts` times over the run).
    #[arg(long, conflicts_with = "local")]
    requeue: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show a running coordinator's workers, iteration, policy version and last metrics.
    Status {
        /// The run folder: its coordinator's URL and token are read from `coordinator.url`
        /// and `token` there.
        #[arg(long, conflicts_with = "coordinator")]
        run: Option<PathBuf>,
        /// Coordinator URL (without --run).
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        coordinator: String,
        /// File holding the run token (else env AIRLIFT_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Check the config (--config) and print what launch scripts need, as shell assignments:
    /// RUN_DIR, LEARNERS, ROLLOUTS, DEVICE, HAS_CHECKPOINT (1 when run.dir has a valid one).
    /// Also reads the policy's `config.json` and prints parameter counts and a memory estimate
    /// per learner and rollout worker (on stderr); refuses a plan larger than `workers.memory_gb`.
    Check {
        /// Estimate from this folder's `config.json` instead of `model.policy`'s (a plan made
        /// before the weights are downloaded; `configs/shapes/` holds those of the recipes).
        #[arg(long)]
        model_config: Option<PathBuf>,
    },
    /// Write a checkpoint's policy and reward model as Hugging Face folders (OUT/policy, OUT/reward).
    Export {
        /// The checkpoint folder (`<run>/checkpoints/step-NNNNNN`).
        checkpoint: PathBuf,
        /// Where to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Evaluate a checkpoint (or exported policy and reward folders) on a problem set: N samples
    /// per problem by the rollout workers, every token scored by the learners, controlled
    /// corruptions of the expert answers for error localisation. Writes samples.parquet,
    /// corruptions.parquet, summary.json and report.html into <run>/eval/<name> (or --out) and
    /// prints the table. Starts local workers unless --external.
    Eval {
        /// The checkpoint folder (`<run>/checkpoints/step-NNNNNN`); its manifest's config is
        /// used unless --config is given.
        #[arg(long, conflicts_with_all = ["policy", "reward"])]
        checkpoint: Option<PathBuf>,
        /// An exported policy folder (`coordinator export`); needs --reward and --config.
        #[arg(long, requires = "reward")]
        policy: Option<PathBuf>,
        /// An exported reward folder; its tokenizer must be the policy's.
        #[arg(long, requires = "policy")]
        reward: Option<PathBuf>,
        /// `synthetic:N` (the first N held-out synthetic problems), `synthetic:A..B` (ids A to B - 1:
        /// e.g. a confirmation set beside the first 128) or a GSM8K-layout .jsonl or
        /// .parquet file (`question`, `answer` ending in `#### <number>`).
        #[arg(long, default_value = "synthetic:64")]
        problems: String,
        /// At most this many problems of a file (its first rows).
        #[arg(long)]
        limit: Option<usize>,
        /// Samples per problem (N).
        #[arg(long, default_value_t = 4)]
        samples: u32,
        /// The evaluation's name: its folder is <run>/eval/<name>.
        #[arg(long, default_value = "eval")]
        name: String,
        /// Write into this folder instead.
        #[arg(long)]
        out: Option<PathBuf>,
        /// An earlier evaluation's folder to show beside this one in report.html (repeatable),
        /// e.g. the SFT-only checkpoint's.
        #[arg(long)]
        compare: Vec<PathBuf>,
        /// Corruption kinds of the localisation test, comma-separated (default: the run's
        /// reward.corruption_kinds), e.g. wrong_operation,wrong_quantity for the consistent ones.
        #[arg(long, value_delimiter = ',')]
        corruption_kinds: Vec<String>,
        /// Replace an earlier evaluation of the same name.
        #[arg(long)]
        overwrite: bool,
        /// Learner processes (default: the config's workers.learner).
        #[arg(long)]
        learners: Option<u32>,
        /// Rollout worker processes (default: the config's workers.rollout).
        #[arg(long)]
        rollouts: Option<u32>,
        /// Serve on --listen and wait for workers started elsewhere (e.g. by Slurm) instead of
        /// starting local ones.
        #[arg(long)]
        external: bool,
        /// Check everything and print what launch scripts need (RUN_DIR = the evaluation's
        /// folder, LEARNERS, ROLLOUTS, DEVICE, HAS_CHECKPOINT=0) as shell assignments; start nothing.
        #[arg(long)]
        check: bool,
    },
    /// Print the summary table of a run from its `<run>/metrics.jsonl`.
    Summary {
        /// The run folder.
        run: PathBuf,
    },
    /// Write `<run>/report.html` (learning curves, restarts, checkpoints, evaluations, config)
    /// from the run folder; every run writes it when it ends, this writes it again (e.g. while a
    /// run goes on, or after `coordinator eval` added evaluations).
    Report {
        /// The run folder.
        run: PathBuf,
    },
    /// Make a job's TLS files in DIR: its own CA (`ca.pem`; the CA's key is not kept) and one
    /// certificate and key for all its processes (`node.pem`, `node.key`, mode 0600). Run every
    /// process with `AIRLIFT_TLS=DIR` to encrypt and authenticate every connection.
    TlsInit {
        /// The folder to write (created; existing TLS files there are not overwritten).
        dir: PathBuf,
    },
}

/// What launch scripts need, as shell assignments (`check`, `eval --check`).
fn shell_vars(run_dir: &std::path::Path, cfg: &RunConfig, has_checkpoint: bool) -> String {
    let quote = |v: &str| format!("'{}'", v.replace('\'', "'\\''"));
    format!(
        "RUN_DIR={}\nLEARNERS={}\nROLLOUTS={}\nDEVICE={}\nHAS_CHECKPOINT={}\n",
        quote(&run_dir.display().to_string()),
        cfg.workers.learner,
        cfg.workers.rollout,
        quote(cfg.workers.device.as_str()),
        has_checkpoint as u8
    )
}

fn main() -> anyhow::Result<()> {
    airlift_proto::private_files().map_err(anyhow::Error::msg)?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(airlift_coordinator::progress::ConsoleWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // One connection per worker: 1,000 workers need more than the usual soft limit of 1,024.
    let nofile = airlift_proto::conn::raise_nofile();
    if let Some(Cmd::TlsInit { dir }) = &cli.command {
        airlift_proto::tls::init(dir).map_err(anyhow::Error::msg)?;
        println!(
            "TLS files for a job in {0}: ca.pem, node.pem, node.key; run every process with AIRLIFT_TLS={0}",
            dir.display()
        );
        return Ok(());
    }
    // A TLS folder that cannot be read stops here, never falls back to plaintext.
    tracing::debug!(open_files = nofile, connections = airlift_proto::conn::cap(), "limits");
    if let Some(t) = airlift_proto::tls::current().map_err(anyhow::Error::msg)? {
        tracing::info!(dir = %t.dir.display(), client_certificates = if t.require_client_cert { "required" } else { "optional" }, "TLS on");
    }
    if let Some(Cmd::Summary { run }) = &cli.command {
        let path = run.join("metrics.jsonl");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let records = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{} line {}: not a JSON record", path.display(), i + 1)))
            .collect::<anyhow::Result<Vec<serde_json::Value>>>()?;
        print!("{}", airlift_coordinator::summary::table(&records));
        return Ok(());
    }
    if let Some(Cmd::Report { run }) = &cli.command {
        let path = airlift_coordinator::report::write(run).map_err(anyhow::Error::msg)?;
        println!("report: {}", path.display());
        return Ok(());
    }
    if let Some(Cmd::Export { checkpoint, out }) = &cli.command {
        let t = std::time::Instant::now();
        let (p, r) = airlift_coordinator::export::export(checkpoint, out)?;
        println!(
            "exported {} in {:.1} s\n  policy: {}\n  reward: {}",
            checkpoint.display(),
            t.elapsed().as_secs_f64(),
            p.display(),
            r.display()
        );
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    if let Some(Cmd::Status { run, coordinator, token_file }) = cli.command {
        let (coordinator, token_file) = match run {
            Some(dir) => {
                let f = airlift_coordinator::url_file(&dir);
                let url = std::fs::read_to_string(&f).with_context(|| format!("reading {} (is a coordinator running for this run?)", f.display()))?;
                let tf = airlift_coordinator::token_file(&dir);
                (url.trim().to_string(), if tf.exists() { Some(tf) } else { token_file })
            }
            None => (coordinator, token_file),
        };
        let token = load_token(token_file.as_deref()).map_err(anyhow::Error::msg)?;
        return rt.block_on(async move {
            let ch = airlift_proto::tls::endpoint(&coordinator)
                .map_err(anyhow::Error::msg)?
                .connect()
                .await
                .with_context(|| format!("connecting to {coordinator}"))?;
            let mut c = CoordinatorClient::with_interceptor(ch, Stamp::new(token));
            let s = c.run_status(airlift_proto::pb::StatusRequest {}).await?.into_inner();
            println!(
                "state {} | iteration {} | policy version {} | tasks queued {} running {}",
                s.state, s.iteration, s.policy_version, s.queued_tasks, s.running_tasks
            );
            for w in s.workers {
                let role = airlift_proto::pb::Role::try_from(w.role).map(|r| r.as_str_name()).unwrap_or("?");
                let node = if w.node.is_empty() { "?" } else { w.node.as_str() };
                println!(
                    "  worker {:>3} {:<13} node {:<12} {:<20} {:<16} policy v{}",
                    w.worker_id, role, node, w.host, w.state, w.policy_version
                );
            }
            if !s.last_metrics_json.is_empty() {
                println!("last metrics: {}", s.last_metrics_json);
            }
            Ok(())
        });
    }
    if let Some(Cmd::Eval {
        checkpoint,
        policy,
        reward,
        problems,
        limit,
        samples,
        name,
        out,
        compare,
        corruption_kinds,
        overwrite,
        learners,
        rollouts,
        external,
        check,
    }) = cli.command
    {
        let config = cli.config.as_deref().map(RunConfig::load).transpose()?;
        let args = airlift_coordinator::eval::EvalArgs {
            checkpoint,
            policy,
            reward,
            config,
            problems,
            limit,
            samples,
            name,
            out,
            compare,
            corruption_kinds,
            overwrite,
            learners,
            rollouts,
            check,
        };
        let (cfg, plan, point) = airlift_coordinator::eval::prepare(&args)?;
        if check {
            print!("{}", shell_vars(&cfg.run_dir(), &cfg, false));
            return Ok(());
        }
        let token = load_token(cfg.run.token_file.as_deref()).map_err(anyhow::Error::msg)?;
        let shown = plan.clone();
        let outcome = rt.block_on(async move {
            if external {
                let listener = tokio::net::TcpListener::bind(&cli.listen)
                    .await
                    .with_context(|| format!("binding {}", cli.listen))?;
                tracing::info!(listen = %cli.listen, "evaluation: waiting for workers");
                let opts = airlift_coordinator::ServeOptions {
                    resume: point,
                    launcher: None,
                    eval: Some(plan),
                    requeue: false,
                };
                Ok::<_, anyhow::Error>(airlift_coordinator::serve(cfg, token, listener, std::future::pending::<String>(), opts).await?)
            } else {
                Ok(airlift_coordinator::launcher::eval_local(cfg, token, plan, point).await?)
            }
        })?;
        let result = outcome.records.last().cloned().unwrap_or_default();
        print!("{}", airlift_coordinator::eval::describe(&shown, &result));
        return Ok(());
    }
    let path = cli.config.context("--config <file.toml> is required (or use the `status` subcommand)")?;
    let cfg = RunConfig::load(&path)?;
    if let Some(Cmd::Check { model_config }) = &cli.command {
        let plan = airlift_coordinator::memory::plan_for(&cfg, model_config.as_deref()).map_err(anyhow::Error::msg)?;
        eprint!("{}", plan.table(&cfg));
        plan.fits(&cfg).map_err(anyhow::Error::msg)?;
        let has = airlift_proto::checkpoint::newest_valid(&cfg.run_dir(), Some(&cfg.resume_hash()))
            .chosen
            .is_some();
        print!("{}", shell_vars(&cfg.run_dir(), &cfg, has));
        return Ok(());
    }
    let token = load_token(cfg.run.token_file.as_deref()).map_err(anyhow::Error::msg)?;
    let resume = match cli.resume {
        None => airlift_coordinator::Resume::No,
        Some(None) if cli.fork => anyhow::bail!("--fork needs the checkpoint to branch off: --resume PATH --fork"),
        Some(None) => airlift_coordinator::Resume::Latest,
        Some(Some(p)) if cli.fork => airlift_coordinator::Resume::Fork(p),
        Some(Some(p)) => airlift_coordinator::Resume::Path(p),
    };
    airlift_coordinator::prepare_run_dir(&cfg, resume != airlift_coordinator::Resume::No, cli.overwrite)?;
    let outcome = rt.block_on(async move {
        if cli.local {
            Ok::<_, anyhow::Error>(airlift_coordinator::launcher::run_local(cfg, token, resume).await?)
        } else {
            // Nothing of an earlier attempt is touched before the checkpoint passed its checks.
            let resume = airlift_coordinator::choose_checkpoint(&cfg, &resume)?;
            let listener = tokio::net::TcpListener::bind(&cli.listen)
                .await
                .with_context(|| format!("binding {}", cli.listen))?;
            tracing::info!(listen = %cli.listen, "waiting for workers");
            // SIGTERM / SIGINT are handled by `serve` (stop after a checkpoint).
            Ok(airlift_coordinator::serve(
                cfg,
                token,
                listener,
                std::future::pending::<String>(),
                airlift_coordinator::ServeOptions {
                    resume,
                    launcher: None,
                    eval: None,
                    requeue: cli.requeue,
                },
            )
            .await?)
        }
    })?;
    println!("\n== airlift run summary ({}) ==", outcome.run_dir.display());
    print!("{}", airlift_coordinator::summary::table(&outcome.records));
    for (from, redone, why) in &outcome.restarts {
        println!("learner restart: from the iteration-{from} checkpoint, redid iterations {redone:?} ({why})");
    }
    if !outcome.restarts.is_empty() {
        println!("learners restarted {} time(s)", outcome.restarts.len());
    }
    println!("metrics: {}", outcome.run_dir.join("metrics.jsonl").display());
    match airlift_coordinator::report::write(&outcome.run_dir) {
        Ok(p) => println!("report: {}", p.display()),
        Err(e) => eprintln!("cannot write the run's report: {e}"),
    }
    match &outcome.last_checkpoint {
        Some(c) => println!(
            "last checkpoint: {}\n  resume: coordinator --config <this config> --resume [{}]\n  export: coordinator export {} --out <dir>",
            c.display(),
            c.display(),
            c.display()
        ),
        None => println!("no checkpoint written (checkpoint.every = 0 and checkpoint.at_end = false)"),
    }
    if let Some(why) = &outcome.stopped {
        let next = if cli.requeue {
            "the job script requeues the job, which resumes from it"
        } else {
            "continue it with --resume"
        };
        println!(
            "run stopped ({why}) after its last checkpoint; {next} (exit status {})",
            airlift_coordinator::EXIT_STOPPED
        );
        std::process::exit(airlift_coordinator::EXIT_STOPPED);
    }
    Ok(())
}
