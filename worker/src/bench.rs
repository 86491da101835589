//! Benchmarks that print numbers (never assert times): generation tokens/s at several batch
//! sizes with a fixed number of forced new tokens, and one training step (forward + backward +
//! AdamW) per precision. The bf16 training row keeps fp32 master weights and optimizer state and
//! computes in bf16 (weights are cast on the fly; gradients land on the fp32 masters).

use crate::generate::{Generator, SamplingParams};
use crate::model::{self, head};
use crate::rng::SplitMix64;
use crate::train::optim::{AdamWConfig, FlatAdamW};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// One result row.
#[derive(Debug, Clone)]
pub struct Row {
    pub what: String,
    pub dtype: String,
    pub batch: usize,
    pub seconds: f64,
    /// Tokens per second (generated tokens for generation, processed tokens for training).
    pub tokens_per_s: f64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub kinds: Vec<Kind>,
    pub gen_batches: Vec<usize>,
    pub new_tokens: usize,
    pub train_batch: usize,
    pub train_seq: usize,
    pub train_steps: usize,
    /// Where the model runs.
    pub device: Device,
}

/// Waits for the device's queued work, so wall-clock timings include it.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Short name of a precision.
pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::BFloat16 => "bf16",
        Kind::Half => "fp16",
        _ => "fp32",
    }
}

const BENCH_PROMPT: &str = "<|im_start|>user\nNatalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?<|im_end|>\n<|im_start|>assistant\n";

/// Runs the benchmark on the model folder `dir`, printing one line per row as it goes.
pub fn run(dir: &Path, spec: &BenchSpec) -> anyhow::Result<Vec<Row>> {
    let tok = crate::tokenizer::Tokenizer::from_dir(dir)?;
    let prompt = tok.encode(BENCH_PROMPT)?;
    let mut rows = Vec::new();
    let mut print = |r: Row| {
        println!(
            "{:<24} {:>5} batch {:>3}  {:>9.3} s  {:>10.1} tok/s",
            r.what, r.dtype, r.batch, r.seconds, r.tokens_per_s
        );
        rows.push(r);
    };
    for &kind in &spec.kinds {
        let m = model::load(dir, spec.device, kind)?;
        let pad = m.model.config().pad_token_id.unwrap_or(0);
        for &b in &spec.gen_batches {
            let params = SamplingParams {
                max_new_tokens: spec.new_tokens,
                ignore_eos: true,
                ..Default::default()
            };
            // Untimed: the cache for this bucket (and its CUDA graph), the kernels' first use.
            let mut g = Generator::new(&m.model, b);
            g.prepare(&m.model, b, prompt.len(), spec.new_tokens, pad);
            let warm = SamplingParams {
                max_new_tokens: 4,
                ..params.clone()
            };
            g.generate(&m.model, &vec![prompt.clone(); b], &[], pad, &warm);
            sync(spec.device);
            let out = g.generate(&m.model, &vec![prompt.clone(); b], &[], pad, &params);
            let secs = out.elapsed_ms / 1e3;
            print(Row {
                what: format!("generate {} new tokens{}", spec.new_tokens, if g.uses_graphs() { " (graph)" } else { "" }),
                dtype: kind_name(kind).into(),
                batch: b,
                seconds: secs,
                tokens_per_s: out.generated_tokens() as f64 / secs,
            });
        }
        drop(m);
        if spec.train_steps > 0 {
            let secs = train_step_seconds(dir, kind, spec)?;
            print(Row {
                what: format!("train step {}x{}", spec.train_batch, spec.train_seq),
                dtype: if kind == Kind::Float {
                    "fp32".into()
                } else {
                    format!("{}*", kind_name(kind))
                },
                batch: spec.train_batch,
                seconds: secs,
                tokens_per_s: (spec.train_batch * spec.train_seq) as f64 / secs,
            });
        }
    }
    Ok(rows)
}

/// Mean seconds of one training step (next-token cross-entropy, backward, AdamW) after one
/// untimed warm-up step, as the learner trains: fp32 parameters and optimizer state in the
/// learner's flat AdamW ([`FlatAdamW`], no clipping here, as in the transformers script), `compute`
/// the activation precision, the LM head and the log-softmax in fp32 fused and chunked as the
/// learner runs them ([`head::logprob_loss`]; `AIRLIFT_FUSED_HEAD=0`: through autograd over the
/// full logits instead, log-softmax in fp32 straight from the compute-precision logits).
pub fn train_step_seconds(dir: &Path, compute: Kind, spec: &BenchSpec) -> anyhow::Result<f64> {
    let mut m = model::load(dir, spec.device, Kind::Float)?;
    m.model.set_compute_kind(compute);
    let vocab = m.model.config().vocab_size;
    let mut opt = FlatAdamW::new(
        &m.vs,
        AdamWConfig {
            lr: 1e-5,
            weight_decay: 0.01,
            max_grad_norm: None,
            ..Default::default()
        },
    );
    let (b, t) = (spec.train_batch as i64, spec.train_seq as i64);
    let mut rng = SplitMix64::new(1234);
    let ids: Vec<i64> = (0..b * t).map(|_| rng.range(0, vocab - 1)).collect();
    let ids = Tensor::from_slice(&ids).view([b, t]).to_device(spec.device);
    let mask = Tensor::ones([b, t], (Kind::Int64, spec.device));
    let targets = ids.narrow(1, 1, t - 1).reshape([-1]);
    let fused_head = std::env::var("AIRLIFT_FUSED_HEAD").as_deref() != Ok("0");
    let mut step = || {
        opt.zero_grad();
        if fused_head {
            let h = m.model.hidden_states_right_padded(&ids, &mask);
            let h = h.narrow(1, 0, t - 1).reshape([-1, h.size()[2]]);
            let tokens = (b * (t - 1)) as f64;
            head::logprob_loss(&h, m.model.head_weight(), &targets, false, |lp, _| -lp.sum(Kind::Float) / tokens).backward();
        } else {
            let logits = m.model.forward_right_padded(&ids, &mask);
            let logp = logits.narrow(1, 0, t - 1).reshape([-1, vocab]).log_softmax(-1, Kind::Float);
            logp.nll_loss(&targets).backward();
        }
        opt.step();
    };
    step();
    sync(spec.device);
    let start = Instant::now();
    for _ in 0..spec.train_steps {
        step();
    }
    sync(spec.device);
    Ok(start.elapsed().as_secs_f64() / spec.train_steps as f64)
}
