//! The Llama / Qwen2 family of decoder-only transformers, as Hugging Face `transformers` writes
//! them (`LlamaForCausalLM`, `Qwen2ForCausalLM`): RMSNorm, rotary embeddings (with `rope_theta`
//! and Llama-3 / linear `rope_scaling`), grouped-query attention, SwiGLU MLP, optional q/k/v
//! (and o / MLP) biases, tied or untied embeddings.
//!
//! References: Llama 2 (<https://arxiv.org/abs/2307.09288>), Llama 3
//! (<https://arxiv.org/abs/2407.21783>), Qwen2 (<https://arxiv.org/abs/2407.10671>),
//! SmolLM2 (<https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct>).
//!
//! Variable names equal the checkpoint keys (`model.layers.3.self_attn.q_proj.weight`), so that
//! loading and exporting are name-for-name. Parameters live in a `tch::nn::VarStore` whose kind
//! is the storage precision; [`Llama::forward`] computes in `compute_kind`, casting weights on
//! the fly when the two differ (fp32 master weights with bf16 compute for training).

use super::packed::Packed;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

/// Errors in a model's `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a valid model config: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("model config field `{field}`: {what}")]
    Invalid { field: &'static str, what: String },
}

/// `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5, which also carries
/// `rope_theta`) as Hugging Face writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `"llama3"`, `"linear"` or `"default"` (older configs call it `type`).
    #[serde(alias = "type", default = "default_rope_type")]
    pub rope_type: String,
    /// Only in `rope_parameters`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default = "one")]
    pub factor: f64,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

fn default_rope_type() -> String {
    "default".into()
}

fn one() -> f64 {
    1.0
}

/// A token id or a list of them (`eos_token_id` may be either).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

impl TokenIds {
    /// All ids as a list.
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            TokenIds::One(x) => vec![*x],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

/// The raw `config.json` of a Llama / Qwen2 checkpoint. Field names mirror Hugging Face.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `"llama"` or `"qwen2"`.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers 5 writes `rope_theta` and the scaling here instead.
    #[serde(default)]
    pub rope_parameters: Option<RopeScaling>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama: bias on q, k, v and o projections. (Qwen2 always has q/k/v bias and no o bias.)
    #[serde(default)]
    pub attention_bias: bool,
    /// Llama: bias on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub torch_dtype: Option<String>,
}

fn default_max_pos() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_act() -> String {
    "silu".into()
}

/// The resolved, validated model configuration used at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub head_dim: i64,
    pub max_position_embeddings: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub eos_token_ids: Vec<i64>,
    pub bos_token_id: Option<i64>,
    pub pad_token_id: Option<i64>,
}

impl RawConfig {
    /// Reads `config.json` from a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: p.clone(), source })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse { path: p, source })
    }

    /// Validates and resolves the raw config.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let invalid = |field, what: String| Err(ConfigError::Invalid { field, what });
        let (qkv_bias, o_bias) = match self.model_type.as_str() {
            "llama" => (self.attention_bias, self.attention_bias),
            "qwen2" => (true, false),
            other => return invalid("model_type", format!("`{other}` is not supported (expected `llama` or `qwen2`)")),
        };
        if self.hidden_act != "silu" {
            return invalid("hidden_act", format!("`{}` is not supported (expected `silu`)", self.hidden_act));
        }
        // Sizes in ranges no real model leaves, before anything is allocated from them (a
        // flipped bit in a config must be an error, not a 17 GB allocation).
        for (field, v, max) in [
            ("num_hidden_layers", self.num_hidden_layers, 1024),
            ("hidden_size", self.hidden_size, 1 << 17),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            ("num_attention_heads", self.num_attention_heads, 1024),
            ("vocab_size", self.vocab_size, 1 << 22),
        ] {
            if v == 0 || v > max {
                return invalid(field, format!("{v} is outside 1..={max}"));
            }
        }
        let params = (self.vocab_size as u128) * (self.hidden_size as u128) * 2
            + (self.num_hidden_layers as u128) * (self.hidden_size as u128) * (4 * self.hidden_size as u128 + 3 * self.intermediate_size as u128);
        if params > 1_000_000_000_000 {
            return invalid(
                "num_hidden_layers",
                format!("the shape describes about {:.0}B parameters, more than 1,000B", params as f64 / 1e9),
            );
        }
        let kv = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        if self.num_attention_heads == 0 || kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return invalid(
                "num_key_value_heads",
                format!("{kv} must be positive and divide num_attention_heads = {}", self.num_attention_heads),
            );
        }
        let head_dim = match self.head_dim {
            Some(d) => d,
            None if self.hidden_size.is_multiple_of(self.num_attention_heads) => self.hidden_size / self.num_attention_heads,
            None => {
                return invalid(
                    "hidden_size",
                    format!("{} is not divisible by num_attention_heads = {}", self.hidden_size, self.num_attention_heads),
                )
            }
        };
        if head_dim % 2 != 0 {
            return invalid("head_dim", format!("{head_dim} must be even for rotary embeddings"));
        }
        let rope_theta = self.rope_parameters.as_ref().and_then(|p| p.rope_theta).unwrap_or(self.rope_theta);
        let rope_scaling = self
            .rope_scaling
            .clone()
            .or_else(|| self.rope_parameters.clone())
            .filter(|s| s.rope_type != "default");
        if let Some(rs) = &rope_scaling {
            match rs.rope_type.as_str() {
                "default" | "linear" => {}
                "llama3" => {
                    if rs.low_freq_factor.is_none() || rs.high_freq_factor.is_none() || rs.original_max_position_embeddings.is_none() {
                        return invalid(
                            "rope_scaling",
                            "llama3 scaling needs low_freq_factor, high_freq_factor and original_max_position_embeddings".into(),
                        );
                    }
                }
                other => {
                    return invalid(
                        "rope_scaling.rope_type",
                        format!("`{other}` is not supported (expected default, linear or llama3)"),
                    )
                }
            }
        }
        Ok(Config {
            vocab_size: self.vocab_size as i64,
            hidden_size: self.hidden_size as i64,
            intermediate_size: self.intermediate_size as i64,
            num_layers: self.num_hidden_layers as i64,
            num_heads: self.num_attention_heads as i64,
            num_kv_heads: kv as i64,
            head_dim: head_dim as i64,
            max_position_embeddings: self.max_position_embeddings as i64,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias: self.mlp_bias,
            eos_token_ids: self.eos_token_id.map(|e| e.to_vec()).unwrap_or_default(),
            bos_token_id: self.bos_token_id,
            pad_token_id: self.pad_token_id,
        })
    }
}

impl Config {
    /// Reads and resolves `<dir>/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, ConfigError> {
        RawConfig::from_file(&dir.join("config.json"))?.into_config()
    }

    /// Rotary inverse frequencies (length head_dim / 2), with `rope_scaling` applied, exactly as
    /// `transformers.modeling_rope_utils` computes them.
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim as f64;
        let base: Vec<f64> = (0..self.head_dim / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d)).collect();
        let Some(rs) = &self.rope_scaling else { return base };
        match rs.rope_type.as_str() {
            "linear" => base.iter().map(|f| f / rs.factor).collect(),
            "llama3" => {
                let (low, high) = (rs.low_freq_factor.unwrap(), rs.high_freq_factor.unwrap());
                let old = rs.original_max_position_embeddings.unwrap() as f64;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / rs.factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / rs.factor + smooth * f
                        }
                    })
                    .collect()
            }
            _ => base,
        }
    }
}

struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn new(p: nn::Path, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let weight = p.var("weight", &[out_dim, in_dim], Init::Uniform { lo: -bound, up: bound });
        let bias = bias.then(|| p.var("bias", &[out_dim], Init::Const(0.0)));
        Linear { weight, bias }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.apply(x, |x, w, b| x.linear(w, b))
    }

    /// [`Linear::forward`] for a decode step's [B, in] rows ([`decode_linear`]).
    fn decode(&self, x: &Tensor) -> Tensor {
        self.apply(x, decode_linear)
    }

    /// `f(x, weight, bias)` with the parameters in `x`'s precision.
    fn apply(&self, x: &Tensor, f: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor) -> Tensor {
        let k = x.kind();
        f(x, &self.weight.to_kind(k), self.bias.as_ref().map(|b| b.to_kind(k)).as_ref())
    }
}

/// Rows of the weight [out, in] taken per GEMM by [`decode_linear`] on the CPU.
const DECODE_ROWS_PER_GEMM: i64 = 4096;

/// `x · wᵀ + b` for a decode step's few rows `x` [B, in]. On the CPU it is computed as
/// `(w · xᵀ)ᵀ`, in blocks of [`DECODE_ROWS_PER_GEMM`] output features: with x as the right-hand
/// operand MKL packs the small activations instead of re-packing the whole weight at every call
/// (which `perf` showed as 43% of an fp32 decode step at batch 16, in
/// `mkl_blas_def_sgemm_scopy_right16`), and a block of the weight stays in cache while it is
/// used. Measured with libtorch 2.11 on this project's 2-core AMD EPYC machine at batch 16:
/// SmolLM2's gate|up 572 → 455 µs, q|k|v 380 → 335 µs, tied LM head 25 → 15 ms (fp32). bf16 goes
/// through oneDNN, where this gains nothing (the LM head got slower: 8.4 → 9.1 ms), and other
/// devices take the plain `linear` too.
fn decode_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    if x.device() != Device::Cpu || x.kind() != Kind::Float {
        return x.linear(w, b);
    }
    let xt = x.tr();
    let out = w.size()[0];
    let y = if out <= DECODE_ROWS_PER_GEMM {
        w.mm(&xt)
    } else {
        let blocks: Vec<Tensor> = (0..out)
            .step_by(DECODE_ROWS_PER_GEMM as usize)
            .map(|s| w.narrow(0, s, DECODE_ROWS_PER_GEMM.min(out - s)).mm(&xt))
            .collect();
        Tensor::cat(&blocks, 0)
    };
    let y = y.tr().contiguous();
    match b {
        Some(b) => y + b,
        None => y,
    }
}

struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(p: nn::Path, dim: i64, eps: f64) -> Self {
        RmsNorm {
            weight: p.var("weight", &[dim], Init::Const(1.0)),
            eps,
        }
    }

    /// As `LlamaRMSNorm` (normalise in fp32, cast back, scale), as libtorch's one `rms_norm`
    /// op: one fused kernel forward and backward on CUDA where transformers launches eight.
    fn forward(&self, x: &Tensor) -> Tensor {
        let dim = *x.size().last().expect("rms norm over the last dimension");
        x.rms_norm([dim], Some(&self.weight.to_kind(x.kind())), self.eps)
    }
}

/// Per-layer key/value cache, preallocated for `capacity` positions.
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: i64,
    capacity: i64,
}

impl KvCache {
    /// The number of positions written so far.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    Tensor::cat(&[-x.narrow(3, half, half), x.narrow(3, 0, half)], 3)
}

impl Attention {
    fn new(p: nn::Path, cfg: &Config) -> Self {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        Attention {
            q_proj: Linear::new(&p / "q_proj", h, cfg.num_heads * d, cfg.qkv_bias),
            k_proj: Linear::new(&p / "k_proj", h, cfg.num_kv_heads * d, cfg.qkv_bias),
            v_proj: Linear::new(&p / "v_proj", h, cfg.num_kv_heads * d, cfg.qkv_bias),
            o_proj: Linear::new(&p / "o_proj", cfg.num_heads * d, h, cfg.o_bias),
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: d,
        }
    }

    /// `x`: [B, T, H]; `cos`/`sin`: [B, 1, T, D]; `mask`: [B, 1, T, S] bool (true = attend), or
    /// `None` for causal attention over the T positions (no cache).
    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: Option<&Tensor>, cache: Option<(&mut Tensor, &mut Tensor, i64)>) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let q = self.q_proj.forward(x).view([b, t, self.num_heads, self.head_dim]).transpose(1, 2);
        let k = self.k_proj.forward(x).view([b, t, self.num_kv_heads, self.head_dim]).transpose(1, 2);
        let v = self.v_proj.forward(x).view([b, t, self.num_kv_heads, self.head_dim]).transpose(1, 2);
        let q = &q * cos + rotate_half(&q) * sin;
        let k = &k * cos + rotate_half(&k) * sin;
        let (k, v) = match cache {
            Some((kc, vc, start)) => {
                kc.narrow(2, start, t).copy_(&k);
                vc.narrow(2, start, t).copy_(&v);
                (kc.narrow(2, 0, start + t), vc.narrow(2, 0, start + t))
            }
            None => (k, v),
        };
        // No mask = plain causal attention, which lets SDPA pick flash attention.
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, mask.is_none(), None, true);
        let y = y.transpose(1, 2).reshape([b, t, self.num_heads * self.head_dim]);
        self.o_proj.forward(&y)
    }
}

struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(p: nn::Path, cfg: &Config) -> Self {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Mlp {
            gate_proj: Linear::new(&p / "gate_proj", h, i, cfg.mlp_bias),
            up_proj: Linear::new(&p / "up_proj", h, i, cfg.mlp_bias),
            down_proj: Linear::new(&p / "down_proj", i, h, cfg.mlp_bias),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj.forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }
}

/// How logits are produced.
enum Head {
    /// The LM head is the transposed embedding matrix.
    Tied,
    Untied(Linear),
    /// A backbone without an LM head (e.g. a reward model's trunk).
    None,
}

struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn new(p: nn::Path, cfg: &Config) -> Self {
        Block {
            input_layernorm: RmsNorm::new(&p / "input_layernorm", cfg.hidden_size, cfg.rms_norm_eps),
            self_attn: Attention::new(&p / "self_attn", cfg),
            post_attention_layernorm: RmsNorm::new(&p / "post_attention_layernorm", cfg.hidden_size, cfg.rms_norm_eps),
            mlp: Mlp::new(&p / "mlp", cfg),
        }
    }
}

/// A causal LM of the Llama / Qwen2 family.
pub struct Llama {
    cfg: Config,
    embed_tokens: Tensor,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Head,
    inv_freq: Tensor,
    compute_kind: Kind,
}

/// What [`Llama::forward`] takes besides the token ids.
pub struct ForwardInput<'a> {
    /// [B, T] int64 token ids.
    pub input_ids: &'a Tensor,
    /// [B, T] int64 rotary positions of each token.
    pub positions: &'a Tensor,
    /// [B, S] bool, true where a key position holds a real token; S = cached + T.
    pub key_mask: &'a Tensor,
}

impl Llama {
    /// Creates the model's variables under `root` (which should be the var store's root, so that
    /// names equal the checkpoint keys). Weights are randomly initialised; load a checkpoint with
    /// [`crate::weights::load_into`].
    pub fn new(root: &nn::Path, cfg: &Config) -> Self {
        Self::build(root, cfg, true)
    }

    /// Like [`Llama::new`] without the LM head: only `model.*` variables ([`Llama::logits`] then
    /// panics). Used as the reward model's trunk.
    pub fn new_backbone(root: &nn::Path, cfg: &Config) -> Self {
        Self::build(root, cfg, false)
    }

    fn build(root: &nn::Path, cfg: &Config, with_head: bool) -> Self {
        let model = root / "model";
        let embed_tokens = (&model / "embed_tokens").var("weight", &[cfg.vocab_size, cfg.hidden_size], Init::Randn { mean: 0.0, stdev: 0.02 });
        let layers = (0..cfg.num_layers).map(|i| Block::new(&model / "layers" / i, cfg)).collect();
        let norm = RmsNorm::new(&model / "norm", cfg.hidden_size, cfg.rms_norm_eps);
        let lm_head = match (with_head, cfg.tie_word_embeddings) {
            (false, _) => Head::None,
            (true, true) => Head::Tied,
            (true, false) => Head::Untied(Linear::new(root / "lm_head", cfg.hidden_size, cfg.vocab_size, false)),
        };
        let inv_freq = Tensor::from_slice(&cfg.inv_freq()).to_kind(Kind::Float).to_device(root.device());
        Llama {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq,
            compute_kind: root.kind(),
        }
    }

    /// The resolved config.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.embed_tokens.device()
    }

    /// The precision activations are computed in.
    pub fn compute_kind(&self) -> Kind {
        self.compute_kind
    }

    /// Sets the precision activations are computed in (weights are cast on the fly if stored in
    /// another precision; gradients still reach the stored weights).
    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.compute_kind = kind;
    }

    /// Zeroed per-layer keys and values for `rows` rows of `capacity` positions, in `kind`.
    fn kv_buffers(&self, rows: i64, capacity: i64, kind: Kind) -> (Vec<Tensor>, Vec<Tensor>) {
        let shape = [rows, self.cfg.num_kv_heads, capacity, self.cfg.head_dim];
        let opts = (kind, self.device());
        let n = self.cfg.num_layers as usize;
        (
            (0..n).map(|_| Tensor::zeros(shape, opts)).collect(),
            (0..n).map(|_| Tensor::zeros(shape, opts)).collect(),
        )
    }

    /// A cache for `batch` sequences of up to `capacity` positions.
    pub fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        let (keys, values) = self.kv_buffers(batch, capacity, self.compute_kind);
        KvCache {
            keys,
            values,
            len: 0,
            capacity,
        }
    }

    /// Final hidden states [B, T, H] (after the last norm), in the compute precision.
    pub fn hidden_states(&self, input: &ForwardInput, cache: Option<&mut KvCache>) -> Tensor {
        self.hidden_states_masked(input, cache, false)
    }

    /// Final hidden states [B, T, H] of right-padded rows (padding only after each row's tokens;
    /// `attention_mask` [B, T], 1 = token): plain causal attention with no mask, which is exact
    /// for every real token (none of them can see the padding after it) and lets SDPA use flash
    /// attention. Padding positions get values nobody should read.
    pub fn hidden_states_right_padded(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let positions = positions_from_mask(attention_mask);
        let key_mask = attention_mask.to_kind(Kind::Bool);
        self.hidden_states_masked(
            &ForwardInput {
                input_ids,
                positions: &positions,
                key_mask: &key_mask,
            },
            None,
            true,
        )
    }

    fn hidden_states_masked(&self, input: &ForwardInput, cache: Option<&mut KvCache>, causal_only: bool) -> Tensor {
        let (b, t) = (input.input_ids.size()[0], input.input_ids.size()[1]);
        let start = cache.as_ref().map_or(0, |c| c.len);
        let s = start + t;
        assert_eq!(input.key_mask.size(), [b, s], "key_mask must be [batch, cached + new]");
        if let Some(c) = &cache {
            assert!(s <= c.capacity, "kv cache overflow: {s} positions, capacity {}", c.capacity);
        }
        // Causal mask over absolute cache positions, restricted to real keys. A position may always
        // see itself, so padded rows never have an empty softmax (which would produce NaN).
        let dev = self.device();
        let q_pos = Tensor::arange_start(start, s, (Kind::Int64, dev)).view([t, 1]);
        let k_pos = Tensor::arange(s, (Kind::Int64, dev)).view([1, s]);
        let causal = k_pos.le_tensor(&q_pos).view([1, 1, t, s]);
        let diag = k_pos.eq_tensor(&q_pos).view([1, 1, t, s]);
        let mask = causal.logical_and(&input.key_mask.view([b, 1, 1, s])).logical_or(&diag);
        let mask = (!causal_only || cache.is_some()).then_some(mask);
        self.run_layers(input.input_ids, input.positions, mask.as_ref(), cache)
    }

    /// Final hidden states [rows, width, H] of the rows of `packed`, in their own layout
    /// (columns past a row's end hold values nobody should read); see [`super::packed`].
    pub fn hidden_states_packed(&self, packed: &Packed) -> Tensor {
        packed.unpack(&self.run_layers(&packed.ids, &packed.positions, packed.mask.as_ref(), None))
    }

    /// The embedding, the blocks and the final norm for `input_ids` at `positions` ([B, T]),
    /// with attention `mask` ([B, 1, T, S] bool, true = attend; `None` = causal over the T
    /// positions), extending `cache` if one is given.
    fn run_layers(&self, input_ids: &Tensor, positions: &Tensor, mask: Option<&Tensor>, mut cache: Option<&mut KvCache>) -> Tensor {
        let start = cache.as_ref().map_or(0, |c| c.len);
        let kind = self.compute_kind;
        let mut x = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false).to_kind(kind);

        // Rotary tables for these positions, computed in fp32 as transformers does.
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        let (cos, sin) = (emb.cos().to_kind(kind), emb.sin().to_kind(kind));

        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(&x);
            let kv = cache.as_deref_mut().map(|c| {
                // SAFETY of aliasing: keys and values are distinct vectors.
                let (k, v) = (&mut c.keys[i], &mut c.values[i]);
                (k, v, start)
            });
            let h = layer.self_attn.forward(&h, &cos, &sin, mask, kv);
            x = x + h;
            let h = layer.mlp.forward(&layer.post_attention_layernorm.forward(&x));
            x = x + h;
        }
        if let Some(c) = cache {
            c.len = start + input_ids.size()[1];
        }
        self.norm.forward(&x)
    }

    /// Projects hidden states [.., H] to vocabulary logits [.., V].
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        self.head(hidden, |x, w, b| x.linear(w, b))
    }

    /// The LM head's weight [V, H]: the parameter itself (the token embedding when tied), for
    /// [`super::head::logprob_loss`]. Heads with a bias are not supported there.
    pub fn head_weight(&self) -> &Tensor {
        match &self.lm_head {
            Head::Untied(head) => {
                assert!(head.bias.is_none(), "the fused LM head takes heads without a bias");
                &head.weight
            }
            Head::Tied => &self.embed_tokens,
            Head::None => panic!("this model was built as a backbone without an LM head"),
        }
    }

    /// `f(hidden, head weight, head bias)`: the LM head through `f` (a plain or a decode linear).
    fn head(&self, hidden: &Tensor, f: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor) -> Tensor {
        match &self.lm_head {
            Head::Untied(head) => head.apply(hidden, f),
            Head::Tied => f(hidden, &self.embed_tokens.to_kind(hidden.kind()), None),
            Head::None => panic!("this model was built as a backbone without an LM head"),
        }
    }

    /// Logits [B, T, V] for `input`, extending `cache` if one is given.
    pub fn forward(&self, input: &ForwardInput, cache: Option<&mut KvCache>) -> Tensor {
        self.logits(&self.hidden_states(input, cache))
    }

    /// Logits [B, T, V] for right-padded rows ([`Llama::hidden_states_right_padded`]).
    pub fn forward_right_padded(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        self.logits(&self.hidden_states_right_padded(input_ids, attention_mask))
    }

    /// Logits [B, T, V] for left- or right-padded or unpadded token ids with no cache: positions
    /// and key mask are derived from `attention_mask` ([B, T], 1 = real token, 0 = padding).
    pub fn forward_padded(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let key_mask = attention_mask.to_kind(Kind::Bool);
        let positions = positions_from_mask(attention_mask);
        self.forward(
            &ForwardInput {
                input_ids,
                positions: &positions,
                key_mask: &key_mask,
            },
            None,
        )
    }
}

/// The decode path's fused projection weights, in the compute precision: per layer q|k|v as one
/// matrix and gate|up as another, so a decode step launches one GEMM where the checkpoint layout
/// needs three (attention) or two (MLP). Built from the model's parameters by
/// [`Llama::decode_weights`]; after the parameters change in place (a weight sync),
/// [`Llama::refresh_decode_weights`] copies them again into the same buffers, so CUDA graphs
/// captured over these buffers stay valid.
pub struct DecodeWeights {
    layers: Vec<FusedLayer>,
    kind: Kind,
}

struct FusedLayer {
    qkv_w: Tensor,
    qkv_b: Option<Tensor>,
    gate_up_w: Tensor,
    gate_up_b: Option<Tensor>,
}

/// A per-slot key/value cache for continuous batching: every row (slot) holds one sequence at
/// cache columns equal to its rotary positions (no left padding), so a finished row can be
/// refilled with a new prompt while the others keep decoding.
pub struct SlotCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    /// [slots, capacity] bool: true where a column holds one of the row's tokens.
    key_mask: Tensor,
    slots: i64,
    capacity: i64,
}

impl SlotCache {
    /// Number of rows.
    pub fn slots(&self) -> i64 {
        self.slots
    }

    /// Columns per row.
    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    /// Marks every row empty (keys and values are overwritten as rows fill).
    pub fn clear(&self) {
        let _ = self.key_mask.shallow_clone().fill_(0);
    }
}

fn cfg_hidden(cfg: &Config) -> i64 {
    cfg.hidden_size
}

fn cat_opt(a: &Option<Tensor>, b: &Option<Tensor>, c: Option<&Option<Tensor>>, kind: Kind) -> Option<Tensor> {
    let mut parts: Vec<&Tensor> = vec![a.as_ref()?, b.as_ref()?];
    if let Some(c) = c {
        parts.push(c.as_ref()?);
    }
    Some(Tensor::cat(&parts, 0).to_kind(kind))
}

impl Llama {
    /// The precision of the slot cache and of decode attention: the compute precision, except
    /// bf16 on the CPU, which attends in fp32. libtorch's CPU batched matmul converts bf16
    /// operands to fp32 on every call, so the per-step products with the whole cache cost more
    /// in bf16 than in fp32 (`perf`: 15% of a bf16 decode step in bf16/fp32 copies); q, the new
    /// keys and values and the attention output are a few KB per step to convert instead.
    pub fn decode_attention_kind(&self) -> Kind {
        if self.device() == Device::Cpu && self.compute_kind == Kind::BFloat16 {
            Kind::Float
        } else {
            self.compute_kind
        }
    }

    /// Fused decode weights (see [`DecodeWeights`]) in the compute precision.
    pub fn decode_weights(&self) -> DecodeWeights {
        let kind = self.compute_kind;
        tch::no_grad(|| DecodeWeights {
            layers: self
                .layers
                .iter()
                .map(|l| {
                    let (a, m) = (&l.self_attn, &l.mlp);
                    FusedLayer {
                        qkv_w: Tensor::cat(&[&a.q_proj.weight, &a.k_proj.weight, &a.v_proj.weight], 0).to_kind(kind),
                        qkv_b: cat_opt(&a.q_proj.bias, &a.k_proj.bias, Some(&a.v_proj.bias), kind),
                        gate_up_w: Tensor::cat(&[&m.gate_proj.weight, &m.up_proj.weight], 0).to_kind(kind),
                        gate_up_b: cat_opt(&m.gate_proj.bias, &m.up_proj.bias, None, kind),
                    }
                })
                .collect(),
            kind,
        })
    }

    /// Copies the current parameters into `w` in place (same buffers).
    pub fn refresh_decode_weights(&self, w: &mut DecodeWeights) {
        let fresh = self.decode_weights();
        tch::no_grad(|| {
            for (d, s) in w.layers.iter_mut().zip(fresh.layers) {
                d.qkv_w.copy_(&s.qkv_w);
                d.gate_up_w.copy_(&s.gate_up_w);
                if let (Some(d), Some(s)) = (&mut d.qkv_b, &s.qkv_b) {
                    d.copy_(s);
                }
                if let (Some(d), Some(s)) = (&mut d.gate_up_b, &s.gate_up_b) {
                    d.copy_(s);
                }
            }
        });
    }

    /// A slot cache of `slots` rows of `capacity` columns, in the precision decode attention
    /// runs in ([`Llama::decode_attention_kind`]).
    pub fn new_slot_cache(&self, slots: i64, capacity: i64) -> SlotCache {
        let (keys, values) = self.kv_buffers(slots, capacity, self.decode_attention_kind());
        SlotCache {
            keys,
            values,
            key_mask: Tensor::zeros([slots, capacity], (Kind::Bool, self.device())),
            slots,
            capacity,
        }
    }

    /// Prefills `prompts` into the rows `rows` of `cache` (one prompt per row; equal prompts are
    /// computed once) and returns the logits of each row's last prompt token, [rows, V].
    /// Rows keep their columns beyond the prompt masked until decoding writes them.
    pub fn prefill_slots(&self, cache: &SlotCache, rows: &[i64], prompts: &[&[u32]], pad_id: i64) -> Tensor {
        assert_eq!(rows.len(), prompts.len(), "one prompt per row");
        let dev = self.device();
        // Unique prompts, and which of them each row takes.
        let mut unique: Vec<&[u32]> = Vec::new();
        let mut take = Vec::with_capacity(rows.len());
        for p in prompts {
            assert!(!p.is_empty(), "every prompt needs at least one token");
            let i = unique.iter().position(|u| u == p).unwrap_or_else(|| {
                unique.push(p);
                unique.len() - 1
            });
            take.push(i as i64);
        }
        let (n, l) = (unique.len() as i64, unique.iter().map(|p| p.len()).max().unwrap() as i64);
        assert!(l <= cache.capacity, "prompt of {l} tokens does not fit a cache of {} columns", cache.capacity);
        // Right padding: a real token never attends to padding (it comes later), so each row
        // computes what it would alone, and its columns equal its positions.
        let mut ids = vec![pad_id; (n * l) as usize];
        let mut mask = vec![false; (n * l) as usize];
        for (r, p) in unique.iter().enumerate() {
            for (j, &t) in p.iter().enumerate() {
                ids[r * l as usize + j] = t as i64;
                mask[r * l as usize + j] = true;
            }
        }
        let ids = Tensor::from_slice(&ids).view([n, l]).to_device(dev);
        let mask = Tensor::from_slice(&mask).view([n, l]).to_device(dev);
        let positions = positions_from_mask(&mask);
        let mut tmp = self.new_cache(n, l);
        let hidden = self.hidden_states(
            &ForwardInput {
                input_ids: &ids,
                positions: &positions,
                key_mask: &mask,
            },
            Some(&mut tmp),
        );
        let last: Vec<i64> = unique.iter().map(|p| p.len() as i64 - 1).collect();
        let last = Tensor::from_slice(&last).to_device(dev);
        let hs = cfg_hidden(&self.cfg);
        let h = hidden.gather(1, &last.view([n, 1, 1]).expand([n, 1, hs], false), false).view([n, hs]);
        let logits = self.logits(&h);
        let take = Tensor::from_slice(&take).to_device(dev);
        let rows_t = Tensor::from_slice(rows).to_device(dev);
        for i in 0..self.layers.len() {
            let ck = cache.keys[i].kind();
            let (k, v) = (tmp.keys[i].index_select(0, &take).to_kind(ck), tmp.values[i].index_select(0, &take).to_kind(ck));
            let _ = cache.keys[i].narrow(2, 0, l).index_copy_(0, &rows_t, &k);
            let _ = cache.values[i].narrow(2, 0, l).index_copy_(0, &rows_t, &v);
        }
        let full = Tensor::zeros([n, cache.capacity], (Kind::Bool, dev));
        full.narrow(1, 0, l).copy_(&mask);
        let _ = cache.key_mask.shallow_clone().index_copy_(0, &rows_t, &full.index_select(0, &take));
        logits.index_select(0, &take)
    }

    /// One decode step for every row of `cache`: feeds `input_ids` [B, 1] at the rows' positions
    /// `positions` [B] (int64; the cache column written), attending over the first `attend`
    /// columns, and returns the next-token logits [B, V] in the compute precision. Launches a
    /// fixed sequence of kernels with no host synchronisation, so it can be captured in a CUDA
    /// graph (with `attend` = the capacity).
    pub fn decode_step(&self, w: &DecodeWeights, cache: &SlotCache, input_ids: &Tensor, positions: &Tensor, attend: i64) -> Tensor {
        let cfg = &self.cfg;
        let (b, kind) = (cache.slots, w.kind);
        let akind = cache.keys[0].kind();
        let (h, kvh, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let g = h / kvh;
        let mut x = Tensor::embedding(&self.embed_tokens, &input_ids.view([b]), -1, false, false).to_kind(kind);
        // Rotary tables for each row's position: rotate_half(x) * sin == roll(x, D/2) * sin_signed.
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, -1]);
        let cos = Tensor::cat(&[&freqs, &freqs], -1).cos().to_kind(kind).unsqueeze(1); // [B, 1, D]
        let sin = freqs.sin();
        let sin = Tensor::cat(&[-&sin, sin], -1).to_kind(kind).unsqueeze(1);
        // Mark each row's new column, then turn the mask into an additive bias.
        let col = positions.view([b, 1]);
        let _ = cache.key_mask.shallow_clone().scatter_value_(1, &col, 1);
        let keys_seen = cache.key_mask.narrow(1, 0, attend).view([b, 1, 1, attend]);
        let bias = Tensor::zeros([1], (akind, self.device())).masked_fill(&keys_seen.logical_not(), f64::NEG_INFINITY);
        let idx = positions.view([b, 1, 1, 1]).expand([b, kvh, 1, d], false);
        let scale = 1.0 / (d as f64).sqrt();
        for (i, (layer, fw)) in self.layers.iter().zip(&w.layers).enumerate() {
            let hn = layer.input_layernorm.forward(&x);
            let qkv = decode_linear(&hn, &fw.qkv_w, fw.qkv_b.as_ref()).view([b, h + 2 * kvh, d]);
            let qk = qkv.narrow(1, 0, h + kvh);
            let qk = &qk * &cos + qk.roll([d / 2], [-1]) * &sin;
            let q = qk.narrow(1, 0, h).view([b, kvh, g, d]).to_kind(akind) * scale;
            let k = qk.narrow(1, h, kvh).unsqueeze(2).to_kind(akind);
            let v = qkv.narrow(1, h + kvh, kvh).unsqueeze(2).to_kind(akind);
            let _ = cache.keys[i].shallow_clone().scatter_(2, &idx, &k);
            let _ = cache.values[i].shallow_clone().scatter_(2, &idx, &v);
            let kc = cache.keys[i].narrow(2, 0, attend);
            let vc = cache.values[i].narrow(2, 0, attend);
            let scores = q.matmul(&kc.transpose(-1, -2)) + &bias; // [B, KVH, G, A]
            let probs = scores.softmax(-1, Kind::Float).to_kind(akind);
            let y = probs.matmul(&vc).reshape([b, h * d]).to_kind(kind);
            x = x + layer.self_attn.o_proj.decode(&y);
            let hn = layer.post_attention_layernorm.forward(&x);
            let gu = decode_linear(&hn, &fw.gate_up_w, fw.gate_up_b.as_ref());
            let i_size = cfg.intermediate_size;
            let act = gu.narrow(1, 0, i_size).silu() * gu.narrow(1, i_size, i_size);
            x = x + layer.mlp.down_proj.decode(&act);
        }
        self.head(&self.norm.forward(&x), decode_linear)
    }
}

/// Rotary positions from a [B, T] 0/1 attention mask: `cumsum(mask) - 1`, with padding set to 0
/// (as transformers' `generate` does for left-padded batches).
pub fn positions_from_mask(attention_mask: &Tensor) -> Tensor {
    let m = attention_mask.to_kind(Kind::Int64);
    (m.cumsum(1, Kind::Int64) - 1).clamp_min(0) * &m
}
