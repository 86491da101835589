//! What a run's worker processes will hold in memory, from the model's `config.json` and the run
//! config: parameter counts, and per learner / rollout worker the weights, gradients, AdamW
//! shards, activations at the configured micro-batch and the KV cache. `coordinator check`
//! prints it and refuses a plan larger than `workers.memory_gb`.
//!
//! What a learner holds (airlift's layout, `worker/src/train/optim.rs`): fp32 master weights of
//! the policy and the reward model (P, R), their fp32 gradients and the flat copy all-reduced
//! (2 × 4 bytes each), the AdamW moments of this rank's ZeRO-1 slice (8 bytes / W), the fp32
//! policy copy rank 0 publishes for rollout workers, a frozen reference policy when
//! `policy.kl_coef > 0`, and the activations of one micro-batch's forward and backward. A rollout
//! worker holds the policy in `model.rollout_dtype`, its KV cache for `sampling.max_batch` rows
//! of prompt + `sampling.max_new_tokens`, and one step's logits.
//!
//! Activations follow Korthikanti et al. (2022), no recomputation: per layer and token about
//! 34·h bytes at 16-bit plus 5·heads·T bytes for attention scores (doubled in fp32); the LM head
//! computes its logits in chunks of 1,024 positions (fp32). Allocator slack and libraries are
//! not counted: measured peaks are higher (docs/performance.md, "Memory estimate").

use airlift_proto::config::{Device, Dtype, RunConfig};
use std::path::Path;

/// The shape fields of a Llama / Qwen2 `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub vocab: u64,
    pub hidden: u64,
    pub intermediate: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub tied: bool,
    /// Qwen2: biases on q, k, v.
    pub qkv_bias: bool,
}

impl Shape {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Shape, String> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON ({e})", path.display()))?;
        let get = |k: &str| {
            v[k].as_u64()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{}: field `{k}` missing or not a positive integer", path.display()))
        };
        let (hidden, heads) = (get("hidden_size")?, get("num_attention_heads")?);
        Ok(Shape {
            vocab: get("vocab_size")?,
            hidden,
            intermediate: get("intermediate_size")?,
            layers: get("num_hidden_layers")?,
            heads,
            kv_heads: v["num_key_value_heads"].as_u64().unwrap_or(heads),
            head_dim: v["head_dim"].as_u64().unwrap_or(hidden / heads),
            tied: v["tie_word_embeddings"].as_bool().unwrap_or(false),
            qkv_bias: v["model_type"].as_str() == Some("qwen2") || v["attention_bias"].as_bool().unwrap_or(false),
        })
    }

    /// Parameters of one decoder layer.
    fn layer_params(&self) -> u64 {
        let (h, q, kv) = (self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let attn = h * q + 2 * h * kv + q * h + if self.qkv_bias { q + 2 * kv } else { 0 };
        attn + 3 * h * self.intermediate + 2 * h
    }

    /// Parameters of the causal LM (embedding, layers, final norm, untied head).
    pub fn params(&self) -> u64 {
        let embed = self.vocab * self.hidden;
        embed + self.layers * self.layer_params() + self.hidden + if self.tied { 0 } else { embed }
    }

    /// Parameters of a reward model on the first `layers` layers: embedding, those layers, the
    /// final norm and a scalar head.
    pub fn reward_params(&self, layers: u64) -> u64 {
        self.vocab * self.hidden + layers.min(self.layers) * self.layer_params() + self.hidden + self.hidden + 1
    }
}

/// One line of an estimate.
#[derive(Debug, Clone)]
pub struct Item {
    pub what: String,
    pub bytes: u64,
}

/// The estimate for a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub policy_params: u64,
    pub reward_params: u64,
    pub learner: Vec<Item>,
    pub rollout: Vec<Item>,
}

impl Plan {
    pub fn learner_bytes(&self) -> u64 {
        self.learner.iter().map(|i| i.bytes).sum()
    }
    pub fn rollout_bytes(&self) -> u64 {
        self.rollout.iter().map(|i| i.bytes).sum()
    }

    /// The table `coordinator check` prints.
    pub fn table(&self, cfg: &RunConfig) -> String {
        let gb = |b: u64| b as f64 / 1e9;
        let mut s = format!(
            "parameters: policy {:.1}M, reward model {:.1}M ({} layers)\n",
            self.policy_params as f64 / 1e6,
            self.reward_params as f64 / 1e6,
            cfg.reward.backbone_layers.map_or("all".to_string(), |k| k.to_string())
        );
        let dev = if cfg.workers.device == Device::Cuda { "GPU" } else { "RAM" };
        s += &format!("memory per learner ({} of them, {dev}), estimated:\n", cfg.workers.learner);
        for i in &self.learner {
            s += &format!("  {:<58} {:>8.2} GB\n", i.what, gb(i.bytes));
        }
        s += &format!("  {:<58} {:>8.2} GB\n", "total", gb(self.learner_bytes()));
        s += &format!("memory per rollout worker ({} of them, {dev}), estimated:\n", cfg.workers.rollout);
        for i in &self.rollout {
            s += &format!("  {:<58} {:>8.2} GB\n", i.what, gb(i.bytes));
        }
        s += &format!("  {:<58} {:>8.2} GB\n", "total", gb(self.rollout_bytes()));
        s
    }

    /// An error naming the worker kind whose estimate exceeds `workers.memory_gb`.
    pub fn fits(&self, cfg: &RunConfig) -> Result<(), String> {
        let Some(limit) = cfg.workers.memory_gb else { return Ok(()) };
        for (who, b) in [("learner", self.learner_bytes()), ("rollout worker", self.rollout_bytes())] {
            if b as f64 > limit * 1e9 {
                return Err(format!(
                    "workers.memory_gb = {limit}: a {who} needs about {:.1} GB (estimate above, before allocator slack); use more learners (AdamW shards), a smaller policy.micro_batch / sampling.max_batch, bf16, or fewer reward.backbone_layers",
                    b as f64 / 1e9
                ));
            }
        }
        Ok(())
    }
}

/// Tokens of a prompt the estimate assumes (a GSM8K question in a chat template is ~150-250).
pub const PROMPT_TOKENS: u64 = 256;

/// The estimate for `cfg` with the policy's shape `policy` and the reward base's `reward`.
pub fn plan(cfg: &RunConfig, policy: &Shape, reward: &Shape) -> Plan {
    let w = cfg.workers.learner.max(1) as u64;
    let p = policy.params();
    let k = cfg.reward.backbone_layers.map_or(reward.layers, |k| k as u64);
    let r = reward.reward_params(k);
    let bytes = |dtype: &Dtype| if *dtype == Dtype::Bf16 { 2 } else { 4 };
    let t = PROMPT_TOKENS + cfg.sampling.max_new_tokens as u64;
    let micro = cfg.policy.micro_batch.max(1) as u64;
    let act_bytes = bytes(&cfg.model.train_dtype) as u64;
    // Per layer and token: 34·h bytes at 16-bit (17·h values), + 5·heads·T (scores) at 16-bit.
    let act = |s: &Shape, layers: u64| micro * t * layers * (17 * s.hidden + 5 * s.heads * t / 2) * act_bytes;
    let head_chunk = 1024u64.min(micro * t) * policy.vocab * 4 * 2;
    let mut learner = vec![Item {
        what: "policy: fp32 master weights".into(),
        bytes: 4 * p,
    }];
    // `policy.steps = 0`: a frozen policy has no gradients or moments.
    if cfg.policy.steps > 0 {
        learner.push(Item {
            what: "policy: fp32 gradients + flat all-reduce copy".into(),
            bytes: 8 * p,
        });
        learner.push(Item {
            what: format!("policy: AdamW moments, 1/{w} ZeRO-1 share"),
            bytes: 8 * p / w,
        });
    }
    learner.push(Item {
        what: "policy: fp32 copy published for rollout workers (rank 0)".into(),
        bytes: 4 * p,
    });
    learner.push(Item {
        what: "reward: weights, gradients, flat copy (fp32)".into(),
        bytes: 12 * r,
    });
    learner.push(Item {
        what: format!("reward: AdamW moments, 1/{w} share"),
        bytes: 8 * r / w,
    });
    if cfg.policy.kl_coef > 0.0 {
        learner.push(Item {
            what: "frozen reference policy (KL term)".into(),
            bytes: bytes(&cfg.model.train_dtype) as u64 * p,
        });
    }
    learner.push(Item {
        what: format!("activations: {micro} rows x {t} tokens, larger of policy / reward pass"),
        bytes: act(policy, policy.layers).max(act(reward, k)),
    });
    learner.push(Item {
        what: "LM head: one chunk of 1,024 positions' logits + grads (fp32)".into(),
        bytes: head_chunk,
    });
    let rows = cfg.sampling.max_batch.max(1) as u64;
    let rollout = vec![
        Item {
            what: format!("policy weights ({})", cfg.model.rollout_dtype),
            bytes: bytes(&cfg.model.rollout_dtype) as u64 * p,
        },
        Item {
            what: format!("KV cache: {rows} rows x {t} positions"),
            bytes: rows * t * policy.layers * 2 * policy.kv_heads * policy.head_dim * bytes(&cfg.model.rollout_dtype) as u64,
        },
        Item {
            what: format!("logits of one decode step ({rows} rows, fp32)"),
            bytes: rows * policy.vocab * 4 * 2,
        },
    ];
    Plan {
        policy_params: p,
        reward_params: r,
        learner,
        rollout,
    }
}

/// The estimate for `cfg`, reading the models' `config.json`: from `shapes` when given (a
/// folder with the policy's `config.json`, for a plan made before the weights are at hand),
/// else from `model.policy` and `model.reward`.
pub fn plan_for(cfg: &RunConfig, shapes: Option<&Path>) -> Result<Plan, String> {
    let policy_dir = shapes.unwrap_or(&cfg.model.policy);
    let policy = Shape::from_dir(policy_dir)
        .map_err(|e| format!("{e} (model.policy; `check --model-config DIR` estimates from a folder holding only the config.json)"))?;
    let reward = match (&cfg.model.reward, shapes) {
        (Some(dir), None) => Shape::from_dir(dir)?,
        _ => policy.clone(),
    };
    Ok(plan(cfg, &policy, &reward))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> Shape {
        Shape {
            vocab: 49152,
            hidden: 576,
            intermediate: 1536,
            layers: 30,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            tied: true,
            qkv_bias: false,
        }
    }

    #[test]
    fn parameter_counts_match_the_published_ones() {
        // SmolLM2-135M: 134,515,008 parameters (the safetensors file's count).
        assert_eq!(smollm2().params(), 134_515_008);
        // Qwen2.5-1.5B: 1,543,714,304 (tied, q/k/v biases).
        let q = Shape {
            vocab: 151936,
            hidden: 1536,
            intermediate: 8960,
            layers: 28,
            heads: 12,
            kv_heads: 2,
            head_dim: 128,
            tied: true,
            qkv_bias: true,
        };
        assert_eq!(q.params(), 1_543_714_304);
        // Llama-3.2-1B: 1,235,814,400 (tied).
        let l = Shape {
            vocab: 128256,
            hidden: 2048,
            intermediate: 8192,
            layers: 16,
            heads: 32,
            kv_heads: 8,
            head_dim: 64,
            tied: true,
            qkv_bias: false,
        };
        assert_eq!(l.params(), 1_235_814_400);
    }
}
