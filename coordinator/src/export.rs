//! `coordinator export <checkpoint> --out DIR`: plain Hugging Face folders from a sharded
//! checkpoint, with no learner and no tensor library involved (the shards are re-assembled byte
//! for byte):
//!
//! * `DIR/policy/`: the base model's `config.json` and tokenizer files, and `model.safetensors`
//!   with the trained policy under the base checkpoint's keys (F32);
//! * `DIR/reward/`: `config.json` (the base config with `num_hidden_layers` = the reward
//!   trunk's layers, plus an `airlift_reward_model` object), the tokenizer files, and
//!   `model.safetensors` with the trunk under `model.*` and the head as `score.weight`
//!   `[1, hidden]` / `score.bias` `[1]`.

use crate::CoordinatorError;
use airlift_proto::checkpoint::{self as ckpt, Shards};
use airlift_proto::config::RunConfig;
use std::path::{Path, PathBuf};

/// Files copied from the base model folder when present.
const BASE_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    "chat_template.jinja",
];

fn err(path: &Path, what: impl std::fmt::Display) -> CoordinatorError {
    CoordinatorError::Io {
        path: path.display().to_string(),
        what: what.to_string(),
    }
}

/// Exports the checkpoint `dir` into `out/policy` and `out/reward`; returns the two folders.
pub fn export(dir: &Path, out: &Path) -> Result<(PathBuf, PathBuf), CoordinatorError> {
    let m = ckpt::verify(dir, None).map_err(|e| CoordinatorError::Checkpoint(e.to_string()))?;
    let cfg =
        RunConfig::from_toml(&m.config_toml).map_err(|e| CoordinatorError::Checkpoint(format!("{}: its config: {e}", dir.join(ckpt::MANIFEST).display())))?;
    let shards = Shards::open(dir, &m).map_err(|e| CoordinatorError::Checkpoint(e.to_string()))?;
    let read_all = |model: &str| -> Result<Vec<f32>, CoordinatorError> {
        let total = m.layouts[model].total;
        shards.read(model, "param", 0, total).map_err(|e| CoordinatorError::Checkpoint(e.to_string()))
    };

    let policy_base = cfg.model.policy.clone();
    let policy_dir = out.join("policy");
    std::fs::create_dir_all(&policy_dir).map_err(|e| err(&policy_dir, e))?;
    let base_cfg = policy_base.join("config.json");
    if !base_cfg.exists() {
        return Err(err(
            &base_cfg,
            "the policy's base model config is needed for the export (model.policy in the checkpoint's config)",
        ));
    }
    std::fs::copy(&base_cfg, policy_dir.join("config.json")).map_err(|e| err(&policy_dir.join("config.json"), e))?;
    copy_base_files(&policy_base, &policy_dir)?;
    let flat = read_all("policy")?;
    let path = policy_dir.join("model.safetensors");
    ckpt::write_named(&path, &m.layouts["policy"], &flat).map_err(|e| err(&path, e))?;
    drop(flat);

    let reward_base = cfg.model.reward.clone().unwrap_or(policy_base);
    let reward_dir = out.join("reward");
    std::fs::create_dir_all(&reward_dir).map_err(|e| err(&reward_dir, e))?;
    let base_cfg = reward_base.join("config.json");
    let text = std::fs::read_to_string(&base_cfg).map_err(|e| err(&base_cfg, e))?;
    let base: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(&base_cfg, format!("not JSON: {e}")))?;
    let layers = match cfg.reward.backbone_layers {
        Some(k) => k as usize,
        None => base["num_hidden_layers"].as_u64().ok_or_else(|| err(&base_cfg, "no num_hidden_layers"))? as usize,
    };
    let rc = ckpt::reward_config_json(base, layers);
    let path = reward_dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rc).expect("json")).map_err(|e| err(&path, e))?;
    copy_base_files(&reward_base, &reward_dir)?;
    let flat = read_all("reward")?;
    let path = reward_dir.join("model.safetensors");
    ckpt::write_named(&path, &m.layouts["reward"], &flat).map_err(|e| err(&path, e))?;
    Ok((policy_dir, reward_dir))
}

fn copy_base_files(from: &Path, to: &Path) -> Result<(), CoordinatorError> {
    for f in BASE_FILES {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).map_err(|e| err(&to.join(f), e))?;
        }
    }
    Ok(())
}
