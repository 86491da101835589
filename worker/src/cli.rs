//! The `worker` command line: argument types and the code each subcommand runs.

use crate::bench::{self, BenchSpec};
use crate::generate::{generate, SamplingParams};
use crate::gsm8k;
use crate::model;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind};

/// airlift worker: the rollout and learner roles of a run, and model tools and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "worker", version)]
pub struct Cli {
    /// Intra-op CPU threads for libtorch (default: libtorch's choice).
    #[arg(long, global = true)]
    pub threads: Option<i32>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a llama.cpp GGUF file (Llama / Qwen2) into a Hugging Face folder.
    ConvertGguf {
        /// The .gguf file.
        #[arg(long)]
        gguf: PathBuf,
        /// Output folder (replaced if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Generate completions for one or more prompts.
    Generate(GenerateArgs),
    /// Answer GSM8K-style questions and grade them.
    Gsm8k(Gsm8kArgs),
    /// Benchmark generation and a training step; prints numbers.
    Bench(BenchArgs),
    /// Run as a rollout or learner worker of a coordinator.
    Run(RunArgs),
    /// Benchmark Flight trajectory transfer and weight sync on loopback; prints numbers.
    BenchFlight {
        /// Policy folder for the weight-sync row (skipped if absent).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Trajectory rows to send.
        #[arg(long, default_value_t = 8192)]
        rows: usize,
        /// Rows per DoPut call.
        #[arg(long, default_value_t = 256)]
        batch_rows: usize,
        /// Response tokens per row.
        #[arg(long, default_value_t = 256)]
        response_tokens: usize,
    },
    /// Benchmark checkpoint write, verify and load of a model's learner state with 1, 2, ...
    /// ranks against a sequential write + fsync of the same bytes; prints numbers.
    BenchCheckpoint {
        /// Hugging Face model folder (the policy; the reward model is its first layers).
        #[arg(long)]
        model: PathBuf,
        /// Reward trunk layers.
        #[arg(long, default_value_t = 8)]
        reward_layers: usize,
        /// Rank counts to measure.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
        learners: Vec<usize>,
        /// Folder to write into (on the disk to measure).
        #[arg(long, default_value = "runs/bench-checkpoint")]
        dir: PathBuf,
    },
    /// Check NCCL on this host: load it, make a unique id, and (with a GPU) run every collective
    /// of a one-rank communicator on CUDA memory, checking the values; prints timings.
    NcclCheck {
        /// Values (f32) in the test buffer.
        #[arg(long, default_value_t = 16 << 20)]
        values: usize,
    },
    /// Print what this build and host can do: version, libtorch's CUDA support and devices, NCCL.
    Info,
    /// Write a model folder with random weights: the tiny test shape, or the shape of
    /// `--config-from`'s config.json (for speed checks where the real weights are not at hand).
    RandomModel {
        /// Folder with tokenizer.json and tokenizer_config.json to copy.
        #[arg(long)]
        tokenizer_from: PathBuf,
        /// Folder whose config.json gives the shape (else the tiny test shape).
        #[arg(long)]
        config_from: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: i64,
    },
}

/// `worker run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The role of this process.
    #[arg(long, value_enum)]
    pub role: crate::runtime::Role,
    /// Coordinator URL, e.g. http://10.0.0.1:50051.
    #[arg(long)]
    pub coordinator: String,
    /// Learners: the data-parallel rank to ask for (0-based; by default in registration order).
    #[arg(long, default_value_t = u32::MAX)]
    pub rank: u32,
    /// Address this worker's servers bind to and advertise to peers.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// File holding the run token (else env AIRLIFT_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// Storage / compute precision.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Dtype {
    Fp32,
    Bf16,
}

impl Dtype {
    /// The tch kind.
    pub fn kind(self) -> Kind {
        match self {
            Dtype::Fp32 => Kind::Float,
            Dtype::Bf16 => Kind::BFloat16,
        }
    }
}

/// Options shared by the commands that sample.
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Maximum new tokens per completion.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus (top-p) mass; 1 disables it.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Seed of the sampling streams.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Parameter and compute precision [default: bf16, or fp32 on a CPU without AVX-512, whose
    /// bf16 matrix products are about 80x slower than fp32's].
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
}

impl SamplingArgs {
    /// `--dtype`, or its default for this CPU (saying so on stderr when that is not bf16).
    fn dtype(&self) -> Dtype {
        if let Some(d) = self.dtype {
            return d;
        }
        match airlift_proto::host::cpu_bf16_slow() {
            Some(why) if !airlift_proto::host::force_cpu_bf16() => {
                eprintln!("--dtype not given: fp32, since {why} (pass --dtype bf16 to use bf16 anyway)");
                Dtype::Fp32
            }
            _ => Dtype::Bf16,
        }
    }

    fn params(&self) -> Result<SamplingParams> {
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p must be in (0, 1], got {}", self.top_p);
        }
        if self.temperature < 0.0 {
            bail!("--temperature must be >= 0, got {}", self.temperature);
        }
        if self.max_new_tokens == 0 {
            bail!("--max-new-tokens must be at least 1");
        }
        Ok(SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            ignore_eos: false,
        })
    }
}

/// `worker generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Hugging Face model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// A prompt (repeat for a batch).
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// Use the prompt text as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// `worker gsm8k`.
#[derive(Debug, Args)]
pub struct Gsm8kArgs {
    /// Hugging Face model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// GSM8K file (.jsonl or .parquet with `question`, `answer`).
    #[arg(long)]
    pub data: PathBuf,
    /// Number of questions, from the start of the file.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Questions generated together in one batch.
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// `worker bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Hugging Face model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Precisions to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Dtype::Fp32, Dtype::Bf16])]
    pub dtypes: Vec<Dtype>,
    /// Generation batch sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 16])]
    pub batches: Vec<usize>,
    /// Skip generation (time only the training step).
    #[arg(long)]
    pub skip_generate: bool,
    /// Forced new tokens per sequence (EOS ignored).
    #[arg(long, default_value_t = 128)]
    pub new_tokens: usize,
    /// Training-step batch size.
    #[arg(long, default_value_t = 8)]
    pub train_batch: usize,
    /// Training-step sequence length.
    #[arg(long, default_value_t = 256)]
    pub train_seq: usize,
    /// Timed training steps per precision (after one warm-up step); 0 skips training.
    #[arg(long, default_value_t = 2)]
    pub train_steps: usize,
    /// `cpu`, or `cuda` (GPU 0 of what CUDA_VISIBLE_DEVICES shows).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        if n < 1 {
            bail!("--threads must be at least 1, got {n}");
        }
        tch::set_num_threads(n);
    }
    match cli.command {
        Command::ConvertGguf { gguf, out } => {
            let g = crate::gguf::Gguf::open(&gguf)?;
            println!("converting {}: {}", gguf.display(), crate::convert::describe(&g));
            drop(g);
            let c = crate::convert::convert(&gguf, &out)?;
            println!(
                "wrote {} ({} tensors, {:.1} M parameters, {})",
                c.dir.display(),
                c.tensors,
                c.parameters as f64 / 1e6,
                c.architecture
            );
            Ok(())
        }
        Command::Generate(a) => run_generate(a),
        Command::BenchFlight {
            model,
            rows,
            batch_rows,
            response_tokens,
        } => {
            if batch_rows == 0 {
                bail!("--batch-rows must be at least 1");
            }
            crate::runtime::bench_flight::run(model.as_deref(), rows, batch_rows, response_tokens)?;
            Ok(())
        }
        Command::BenchCheckpoint {
            model,
            reward_layers,
            learners,
            dir,
        } => crate::train::bench_checkpoint::run(&model, reward_layers, &learners, &dir),
        Command::Info => {
            println!("airlift worker {}", env!("CARGO_PKG_VERSION"));
            println!("{}", crate::cuda::support());
            match crate::collective::nccl::version() {
                Ok(v) => println!("NCCL: {v} loadable"),
                Err(e) => println!("NCCL: {e}"),
            }
            Ok(())
        }
        Command::NcclCheck { values } => crate::collective::nccl::self_check(values).map_err(anyhow::Error::msg),
        Command::RandomModel {
            tokenizer_from,
            config_from,
            out,
            seed,
        } => {
            crate::model::write_random_llama(&out, config_from.as_deref(), &tokenizer_from, seed)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Run(a) => {
            let token = airlift_proto::auth::load_token(a.token_file.as_deref()).map_err(anyhow::Error::msg)?;
            let opts = crate::runtime::WorkerOptions {
                role: a.role,
                coordinator: a.coordinator,
                rank: a.rank,
                host: a.host,
                token,
            };
            crate::runtime::run(opts)?;
            Ok(())
        }
        Command::Gsm8k(a) => run_gsm8k(a),
        Command::Bench(a) => {
            let device = match a.device.as_str() {
                "cpu" => Device::Cpu,
                "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
                "cuda" => bail!("--device cuda: libtorch sees no CUDA device on this host ({})", crate::cuda::support()),
                other => bail!("--device must be `cpu` or `cuda`, got `{other}`"),
            };
            let spec = BenchSpec {
                device,
                kinds: a.dtypes.iter().map(|d| d.kind()).collect(),
                gen_batches: if a.skip_generate { Vec::new() } else { a.batches },
                new_tokens: a.new_tokens,
                train_batch: a.train_batch,
                train_seq: a.train_seq,
                train_steps: a.train_steps,
            };
            println!("airlift bench: {} on {:?} (threads {})", a.model.display(), device, tch::get_num_threads());
            bench::run(&a.model, &spec)?;
            Ok(())
        }
    }
}

fn load(dir: &std::path::Path, dtype: Dtype) -> Result<(model::LoadedModel, Tokenizer)> {
    let m = model::load(dir, Device::Cpu, dtype.kind()).with_context(|| format!("loading model {}", dir.display()))?;
    let tok = Tokenizer::from_dir(dir)?;
    Ok((m, tok))
}

fn run_generate(a: GenerateArgs) -> Result<()> {
    let params = a.sampling.params()?;
    let (m, tok) = load(&a.model, a.sampling.dtype())?;
    let cfg = m.model.config();
    let pad = cfg.pad_token_id.unwrap_or(0);
    let prompts = a
        .prompt
        .iter()
        .map(|p| tok.encode(&if a.raw { p.clone() } else { tok.chat_prompt(p) }))
        .collect::<Result<Vec<_>, _>>()?;
    let out = generate(&m.model, &prompts, &cfg.eos_token_ids, pad, &params);
    for (i, c) in out.completions.iter().enumerate() {
        println!("--- [{i}] {} tokens, finish={}", c.tokens.len(), c.finish.as_str());
        println!("{}", tok.decode(&c.tokens)?);
    }
    println!(
        "--- {} tokens in {:.2} s: {:.1} tok/s",
        out.generated_tokens(),
        out.elapsed_ms / 1e3,
        out.generated_tokens() as f64 / (out.elapsed_ms / 1e3)
    );
    Ok(())
}

fn run_gsm8k(a: Gsm8kArgs) -> Result<()> {
    let params = a.sampling.params()?;
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let problems = gsm8k::load(&a.data)?;
    let n = a.limit.min(problems.len());
    let dtype = a.sampling.dtype();
    let (m, tok) = load(&a.model, dtype)?;
    let cfg = m.model.config();
    let pad = cfg.pad_token_id.unwrap_or(0);
    println!(
        "gsm8k: {} questions from {}, model {}, {}, greedy={}",
        n,
        a.data.display(),
        a.model.display(),
        match dtype {
            Dtype::Fp32 => "fp32",
            Dtype::Bf16 => "bf16",
        },
        params.temperature == 0.0
    );
    let start = Instant::now();
    let (mut correct, mut tokens, mut gen_ms) = (0usize, 0usize, 0f64);
    for (chunk_idx, chunk) in problems[..n].chunks(a.batch_size).enumerate() {
        let prompts = chunk
            .iter()
            .map(|p| tok.encode(&tok.chat_prompt(&gsm8k::prompt_for(&p.question))))
            .collect::<Result<Vec<_>, _>>()?;
        let out = generate(&m.model, &prompts, &cfg.eos_token_ids, pad, &params);
        tokens += out.generated_tokens();
        gen_ms += out.elapsed_ms;
        for (j, (p, c)) in chunk.iter().zip(&out.completions).enumerate() {
            let idx = chunk_idx * a.batch_size + j + 1;
            let text = tok.decode(&c.tokens)?;
            let (pred, ok) = gsm8k::grade(&text, p);
            correct += ok as usize;
            println!(
                "[{idx:>3}/{n}] {} predicted {:<10} reference {:<10} ({} tokens, {})",
                if ok { "RIGHT" } else { "wrong" },
                pred.as_deref().unwrap_or("-"),
                p.reference().unwrap_or_default(),
                c.tokens.len(),
                c.finish.as_str()
            );
            println!("        {}", text.trim().replace('\n', "\n        "));
        }
        println!(
            "progress: {}/{} questions, {:.1} tok/s so far",
            (chunk_idx * a.batch_size + chunk.len()),
            n,
            tokens as f64 / (gen_ms / 1e3)
        );
    }
    println!(
        "gsm8k summary: accuracy {}/{} = {:.1}%, {} generated tokens, {:.1} tok/s, wall {:.1} s",
        correct,
        n,
        100.0 * correct as f64 / n.max(1) as f64,
        tokens,
        tokens as f64 / (gen_ms / 1e3),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
