//! Loading and saving model weights as safetensors, name-for-name with the var store.
//!
//! Reads a single `model.safetensors` or a sharded `model.safetensors.index.json`; every
//! variable must be found with the right shape, and every checkpoint tensor must be used, except
//! the few that Hugging Face writes as derived data (`*.rotary_emb.inv_freq`) or that a tied model
//! does not own (`lm_head.weight`). Anything else is an error that names the keys.

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Kind, Tensor};

/// Errors loading or saving weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },
    #[error("{dir}: no model.safetensors or model.safetensors.index.json")]
    NotFound { dir: PathBuf },
    #[error("{path}: tensor `{name}` has shape {found:?}, the model expects {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<i64>,
    },
    #[error("{dir}: checkpoint does not match the model: missing keys [{missing}]; unexpected keys [{unexpected}]")]
    Mismatch { dir: PathBuf, missing: String, unexpected: String },
    #[error("{path}: tensor `{name}` has shape {found:?}, but config.json says {says}")]
    Disagrees {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        says: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WeightsError + '_ {
    move |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The safetensors files of a checkpoint folder.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(io(&index))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| WeightsError::Format {
            path: index.clone(),
            what: format!("not valid JSON: {e}"),
        })?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| WeightsError::Format {
            path: index.clone(),
            what: "expected an object field `weight_map`".into(),
        })?;
        let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(WeightsError::NotFound { dir: dir.to_path_buf() })
}

/// The shape of every tensor in the checkpoint folder `dir`, read from the safetensors headers
/// alone (nothing of the data is read or allocated), with the file each lives in.
pub fn header_shapes(dir: &Path) -> Result<BTreeMap<String, (PathBuf, Vec<usize>)>, WeightsError> {
    let mut out = BTreeMap::new();
    for path in checkpoint_files(dir)? {
        let file = File::open(&path).map_err(io(&path))?;
        // SAFETY: read-only map of a file we do not modify.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
        let (_, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| WeightsError::Format {
            path: path.clone(),
            what: format!("not a safetensors file: {e}"),
        })?;
        for (name, info) in meta.tensors() {
            out.insert(name, (path.clone(), info.shape.clone()));
        }
    }
    Ok(out)
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

/// Loads every variable of `vs` from the checkpoint folder `dir` (converting precision to the
/// variable's kind). Checkpoint keys for which `ignore` is true, and `*.rotary_emb.inv_freq`
/// (derived data), are skipped; any other key without a variable is an error.
pub fn load_into(vs: &VarStore, dir: &Path, ignore: impl Fn(&str) -> bool) -> Result<(), WeightsError> {
    let vars = vs.variables();
    let mut loaded = BTreeSet::new();
    let mut unexpected = Vec::new();
    for path in checkpoint_files(dir)? {
        let file = File::open(&path).map_err(io(&path))?;
        // SAFETY: read-only map of a file we do not modify.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| WeightsError::Format {
            path: path.clone(),
            what: format!("not a safetensors file: {e}"),
        })?;
        for (name, view) in st.tensors() {
            let Some(var) = vars.get(&name) else {
                if !(name.ends_with("rotary_emb.inv_freq") || ignore(&name)) {
                    unexpected.push(name);
                }
                continue;
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if shape != var.size() {
                return Err(WeightsError::Shape {
                    path,
                    name,
                    found: view.shape().to_vec(),
                    expected: var.size(),
                });
            }
            let kind = kind_of(view.dtype()).ok_or_else(|| WeightsError::Format {
                path: path.clone(),
                what: format!("tensor `{name}` has dtype {:?}; expected F32, F16, BF16 or F64", view.dtype()),
            })?;
            let t = Tensor::from_data_size(view.data(), &shape, kind);
            tch::no_grad(|| {
                let mut var = var.shallow_clone();
                var.copy_(&t.to_kind(var.kind()).to_device(var.device()));
            });
            loaded.insert(name);
        }
    }
    let missing: Vec<&String> = vars.keys().filter(|k| !loaded.contains(*k)).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        let list = |v: Vec<String>| {
            let n = v.len();
            let mut s: Vec<String> = v.into_iter().take(8).collect();
            if n > 8 {
                s.push(format!("… {} more", n - 8));
            }
            s.join(", ")
        };
        let mut missing: Vec<String> = missing.into_iter().cloned().collect();
        missing.sort();
        unexpected.sort();
        return Err(WeightsError::Mismatch {
            dir: dir.to_path_buf(),
            missing: list(missing),
            unexpected: list(unexpected),
        });
    }
    Ok(())
}

/// One tensor to write: name, shape, little-endian bytes, dtype.
pub struct RawTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub data: Vec<u8>,
}

impl RawTensor {
    /// An f32 tensor.
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        RawTensor {
            name: name.into(),
            shape,
            dtype: Dtype::F32,
            data,
        }
    }

    /// A copy of a tch tensor (fp32, bf16 or fp16), moved to the CPU.
    pub fn from_tensor(name: impl Into<String>, t: &Tensor) -> Self {
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let (dtype, width) = match t.kind() {
            Kind::BFloat16 => (Dtype::BF16, 2),
            Kind::Half => (Dtype::F16, 2),
            _ => (Dtype::F32, 4),
        };
        let t = if dtype == Dtype::F32 { t.to_kind(Kind::Float) } else { t };
        let n = t.numel();
        let mut data = vec![0u8; n * width];
        t.copy_data_u8(&mut data, n);
        RawTensor {
            name: name.into(),
            shape: t.size().iter().map(|&d| d as usize).collect(),
            dtype,
            data,
        }
    }
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes `tensors` to one safetensors file (via a temporary name, renamed at the end).
pub fn save(tensors: &[RawTensor], path: &Path, metadata: Option<HashMap<String, String>>) -> Result<(), WeightsError> {
    let tmp = path.with_extension("safetensors.part");
    let views: BTreeMap<String, &RawTensor> = tensors.iter().map(|t| (t.name.clone(), t)).collect();
    safetensors::serialize_to_file(views, metadata, &tmp).map_err(|e| WeightsError::Format {
        path: tmp.clone(),
        what: format!("writing safetensors: {e}"),
    })?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Writes every variable of `vs` to `path` (for exporting a Hugging Face folder).
pub fn save_var_store(vs: &VarStore, path: &Path) -> Result<(), WeightsError> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let raw: Vec<RawTensor> = vars.iter().map(|(n, t)| RawTensor::from_tensor(n, t)).collect();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    save(&raw, path, Some(meta))
}
