//! The token-level reward model `f_φ(s_t, a_t)`: a causal LM trunk (optionally only its first K
//! layers) whose LM head is replaced by `Linear(hidden, 1)`, one scalar per position.
//!
//! Saved as a Hugging Face-style folder: `config.json` is the base model's config with
//! `num_hidden_layers = K` plus an `airlift_reward_model` object, `model.safetensors` holds the
//! trunk under its usual keys (`model.*`) and the head under **`score.weight` [1, hidden]** and
//! **`score.bias` [1]** (the key transformers' `*ForSequenceClassification` uses for its head),
//! and the tokenizer files are copied from the base.

use crate::model::llama::{Config, ConfigError, Llama, RawConfig};
use crate::model::packed::Packed;
use crate::rng::SplitMix64;
use crate::weights::{self, WeightsError};
use std::path::{Path, PathBuf};
use tch::nn::{Init, VarStore};
use tch::{Device, Kind, Tensor};

/// Checkpoint keys of the head's weight and bias (shared with `coordinator export`).
pub use airlift_proto::checkpoint::{REWARD_HEAD_BIAS as HEAD_BIAS, REWARD_HEAD_WEIGHT as HEAD_WEIGHT};

/// Errors building, loading or saving a reward model.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("reward.backbone_layers = {asked}: the base model has {available} layers (expected 1..={available})")]
    Layers { asked: usize, available: usize },
}

/// A reward model with its parameters.
pub struct RewardModel {
    pub vs: VarStore,
    pub trunk: Llama,
    head_w: Tensor,
    head_b: Tensor,
    raw: RawConfig,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RewardError + '_ {
    move |source| RewardError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl RewardModel {
    fn build(raw: RawConfig, device: Device) -> Result<(Self, Config), RewardError> {
        let cfg = raw.clone().into_config()?;
        let vs = VarStore::new(device);
        let trunk = Llama::new_backbone(&vs.root(), &cfg);
        let score = vs.root() / "score";
        let head_w = score.var("weight", &[1, cfg.hidden_size], Init::Const(0.0));
        let head_b = score.var("bias", &[1], Init::Const(0.0));
        Ok((
            RewardModel {
                vs,
                trunk,
                head_w,
                head_b,
                raw,
            },
            cfg,
        ))
    }

    /// A reward model initialised from the causal LM folder `base`: its first `layers` layers
    /// (all if `None`), and a fresh head with weights `N(0, (0.1 / √hidden)²)` drawn from `seed`
    /// and zero bias, so initial rewards are small.
    pub fn from_base(base: &Path, layers: Option<usize>, device: Device, seed: u64) -> Result<Self, RewardError> {
        let mut raw = RawConfig::from_file(&base.join("config.json"))?;
        let available = raw.num_hidden_layers;
        let k = layers.unwrap_or(available);
        if k == 0 || k > available {
            return Err(RewardError::Layers { asked: k, available });
        }
        raw.num_hidden_layers = k;
        let (rm, cfg) = Self::build(raw, device)?;
        let dropped = |name: &str| {
            name.starts_with("lm_head.")
                || name
                    .strip_prefix("model.layers.")
                    .and_then(|r| r.split('.').next())
                    .and_then(|l| l.parse::<usize>().ok())
                    .is_some_and(|l| l >= k)
        };
        // Load the trunk; the head is not in the base checkpoint, so load into a store without it.
        let trunk_vs = VarStore::new(device);
        let trunk_copy = Llama::new_backbone(&trunk_vs.root(), &cfg);
        drop(trunk_copy);
        weights::load_into(&trunk_vs, base, dropped)?;
        let ours = rm.vs.variables();
        tch::no_grad(|| {
            for (name, t) in trunk_vs.variables() {
                ours[&name].shallow_clone().copy_(&t);
            }
            let mut rng = SplitMix64::new(seed);
            let std = 0.1 / (cfg.hidden_size as f64).sqrt();
            let w: Vec<f32> = (0..cfg.hidden_size).map(|_| (normal(&mut rng) * std) as f32).collect();
            rm.head_w
                .shallow_clone()
                .copy_(&Tensor::from_slice(&w).view([1, cfg.hidden_size]).to_device(device));
        });
        Ok(rm)
    }

    /// Loads a folder written by [`RewardModel::save`].
    pub fn load(dir: &Path, device: Device) -> Result<Self, RewardError> {
        let raw = RawConfig::from_file(&dir.join("config.json"))?;
        let (rm, _) = Self::build(raw, device)?;
        weights::load_into(&rm.vs, dir, |_| false)?;
        Ok(rm)
    }

    /// Writes the folder: config, weights, and the tokenizer files found in `tokenizer_from`.
    pub fn save(&self, dir: &Path, tokenizer_from: Option<&Path>) -> Result<(), RewardError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let v = airlift_proto::checkpoint::reward_config_json(serde_json::to_value(&self.raw).expect("config serialises"), self.raw.num_hidden_layers);
        let cfg_path = dir.join("config.json");
        std::fs::write(&cfg_path, serde_json::to_string_pretty(&v).expect("json")).map_err(io(&cfg_path))?;
        weights::save_var_store(&self.vs, &dir.join("model.safetensors"))?;
        if let Some(src) = tokenizer_from {
            for f in ["tokenizer.json", "tokenizer_config.json"] {
                if src.join(f).exists() {
                    std::fs::copy(src.join(f), dir.join(f)).map_err(io(&dir.join(f)))?;
                }
            }
        }
        Ok(())
    }

    /// The trunk's config.
    pub fn config(&self) -> &Config {
        self.trunk.config()
    }

    /// Sets the activation precision (parameters stay as stored).
    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.trunk.set_compute_kind(kind);
    }

    /// Values `f` [B, T] (fp32) at every position of right-padded `input_ids` [B, T] with
    /// `attention_mask` [B, T] (1 = token, 0 = padding).
    pub fn values(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        self.head(&self.trunk.hidden_states_right_padded(input_ids, attention_mask))
    }

    /// Values `f` [rows, width] (fp32) of the rows of `packed` (prefix trees, see
    /// [`crate::model::packed`]), in the rows' own layout.
    pub fn values_packed(&self, packed: &Packed) -> Tensor {
        self.head(&self.trunk.hidden_states_packed(packed))
    }

    fn head(&self, hidden: &Tensor) -> Tensor {
        hidden.to_kind(Kind::Float).linear(&self.head_w, Some(&self.head_b)).squeeze_dim(-1)
    }
}

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
