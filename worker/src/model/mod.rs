//! Model architectures and a loader that builds one from a Hugging Face folder.

pub mod head;
pub mod llama;
pub mod packed;

use crate::weights::{self, WeightsError};
use llama::{Config, ConfigError, Llama};
use std::collections::BTreeSet;
use std::path::Path;
use tch::{nn::VarStore, Device, Kind};

/// Errors loading a model folder.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// A model with the var store that owns its parameters.
pub struct LoadedModel {
    pub vs: VarStore,
    pub model: Llama,
}

/// Builds the model described by `<dir>/config.json` on `device`, stores its parameters in
/// `kind` and loads `<dir>/model.safetensors` (or the sharded index) name-for-name.
pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<LoadedModel, LoadError> {
    let cfg = Config::from_dir(dir)?;
    check_shapes(dir, &cfg)?;
    let mut vs = VarStore::new(device);
    let model = Llama::new(&vs.root(), &cfg);
    // A tied model does not own `lm_head.weight`, though some checkpoints still carry it.
    weights::load_into(&vs, dir, |k| cfg.tie_word_embeddings && k == "lm_head.weight")?;
    if kind != Kind::Float {
        vs.set_kind(kind);
    }
    let mut model = model;
    model.set_compute_kind(kind);
    Ok(LoadedModel { vs, model })
}

/// Checks `config.json` against the safetensors headers before the model is built, so that a
/// config that disagrees with its weights (a flipped `hidden_size`, a layer count the file does
/// not hold) is an error naming the field and the tensor, not an allocation of the wrong model.
pub fn check_shapes(dir: &Path, cfg: &Config) -> Result<(), WeightsError> {
    let shapes = weights::header_shapes(dir)?;
    let d = cfg.head_dim;
    let expect = |name: &str, want: [i64; 2], says: String| -> Result<(), WeightsError> {
        let Some((path, found)) = shapes.get(name) else {
            return Ok(()); // a missing tensor is named by the loader's key check
        };
        if found.iter().map(|&x| x as i64).ne(want) {
            return Err(WeightsError::Disagrees {
                path: path.clone(),
                name: name.into(),
                found: found.clone(),
                says,
            });
        }
        Ok(())
    };
    let (v, h, i) = (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size);
    expect("model.embed_tokens.weight", [v, h], format!("vocab_size = {v}, hidden_size = {h}"))?;
    let (nh, kv) = (cfg.num_heads, cfg.num_kv_heads);
    expect(
        "model.layers.0.self_attn.q_proj.weight",
        [nh * d, h],
        format!("num_attention_heads x head_dim = {nh} x {d}, hidden_size = {h}"),
    )?;
    expect(
        "model.layers.0.self_attn.k_proj.weight",
        [kv * d, h],
        format!("num_key_value_heads x head_dim = {kv} x {d}, hidden_size = {h}"),
    )?;
    expect(
        "model.layers.0.mlp.gate_proj.weight",
        [i, h],
        format!("intermediate_size = {i}, hidden_size = {h}"),
    )?;
    // Layers: the file must hold model.layers.0 ..= num_hidden_layers - 1 (keys of further
    // layers are named by the loader's key check).
    let layers: BTreeSet<i64> = shapes
        .keys()
        .filter_map(|k| k.strip_prefix("model.layers.")?.split('.').next()?.parse().ok())
        .collect();
    if let Some(missing) = (0..cfg.num_layers).find(|l| !layers.contains(l)) {
        let path = shapes.values().next().map(|(p, _)| p.clone()).unwrap_or_else(|| dir.to_path_buf());
        return Err(WeightsError::Format {
            path,
            what: format!(
                "holds {} layers (no model.layers.{missing}), but config.json says num_hidden_layers = {}",
                layers.iter().filter(|&&l| l < cfg.num_layers).count(),
                cfg.num_layers
            ),
        });
    }
    Ok(())
}

/// Writes a tiny randomly initialised Llama (SmolLM2's 49,152-token vocabulary, hidden 32, 2
/// layers, GQA 4/2, tied embeddings) as a Hugging Face folder, with the tokenizer files copied
/// from `tokenizer_from`. For tests and examples that need a real but cheap model.
pub fn write_tiny_llama(dir: &Path, tokenizer_from: &Path, seed: i64) -> std::io::Result<()> {
    write_random_llama(dir, None, tokenizer_from, seed)
}

/// [`write_tiny_llama`], or with the shape of `config_from/config.json` when given.
pub fn write_random_llama(dir: &Path, config_from: Option<&Path>, tokenizer_from: &Path, seed: i64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if let Some(from) = config_from {
        let path = from.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let raw: llama::RawConfig = serde_json::from_str(&text).map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
        return write_weights(dir, raw, tokenizer_from, seed);
    }
    let raw: llama::RawConfig = serde_json::from_value(serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 1024, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": true, "eos_token_id": 2, "pad_token_id": 2, "bos_token_id": 1
    }))
    .expect("valid config");
    write_weights(dir, raw, tokenizer_from, seed)
}

fn write_weights(dir: &Path, raw: llama::RawConfig, tokenizer_from: &Path, seed: i64) -> std::io::Result<()> {
    // Leave unset optional fields out rather than writing `null`: transformers reads
    // `"head_dim": null` as a head size of None and fails.
    let mut json = serde_json::to_value(&raw).expect("json");
    if let Some(map) = json.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&json).expect("json"))?;
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let config = raw.into_config().map_err(|e| std::io::Error::other(e.to_string()))?;
    let _model = Llama::new(&vs.root(), &config);
    weights::save_var_store(&vs, &dir.join("model.safetensors")).map_err(std::io::Error::other)?;
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tokenizer_from.join(f), dir.join(f)).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", tokenizer_from.join(f).display())))?;
    }
    Ok(())
}
