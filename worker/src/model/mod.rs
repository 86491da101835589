//! Model architectures and a loader that builds one from a Hugging Face folder.

pub mod llama;

use crate::weights::{self, WeightsError};
use llama::{Config, ConfigError, Llama};
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
