//! Sharded checkpoints: the on-disk contract between learners (which write their shards), the
//! coordinator (which writes the manifest, verifies checkpoints before a resume, and exports
//! them), and learners again (which load them, possibly on another number of ranks).
//!
//! ```text
//! <run>/checkpoints/step-NNNNNN/          NNNNNN = the last iteration trained (0 = warm start)
//!     rank-00000-of-00002.safetensors     rank r's slice [lo, hi) of each flat vector:
//!     rank-00001-of-00002.safetensors       policy.param policy.adam_m policy.adam_v
//!                                           reward.param reward.adam_m reward.adam_v  (F32, 1-D)
//!     manifest.json                       written last, through a temporary name and a rename
//! ```
//!
//! A folder without a valid `manifest.json` is not a checkpoint. The manifest names every file
//! with its size and SHA-256, the flat layouts (which is what lets another number of learners
//! re-slice the shards), the optimizer step counts, the data frontier and the config's
//! [`crate::config::RunConfig::resume_hash`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Version of the checkpoint format; a manifest with another one is refused.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The models a checkpoint holds, in file order.
pub const MODELS: [&str; 2] = ["policy", "reward"];
/// The vectors saved per model, in file order.
pub const VECTORS: [&str; 3] = ["param", "adam_m", "adam_v"];
/// Checkpoint keys of the reward head in an exported (Hugging Face) reward model folder.
pub const REWARD_HEAD_WEIGHT: &str = "score.weight";
pub const REWARD_HEAD_BIAS: &str = "score.bias";

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 and size of a file, read in 4 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// Sizes of `world` near-equal parts of `n` (the first ones one larger when it does not divide).
pub fn split_counts(n: usize, world: usize) -> Vec<usize> {
    (0..world).map(|r| n / world + usize::from(r < n % world)).collect()
}

/// Names, shapes and offsets of a model's trainable variables in flat order (sorted by name),
/// laid end to end in one fp32 vector. The optimizer, data parallelism (each rank's shard),
/// fingerprints, weight publishing and checkpoints all use this one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlatLayout {
    /// Variable names, sorted.
    pub names: Vec<String>,
    /// Each variable's shape.
    pub shapes: Vec<Vec<i64>>,
    /// Each variable's first index in the flat vector.
    pub offsets: Vec<i64>,
    /// Values in the flat vector.
    pub total: i64,
}

impl FlatLayout {
    /// Sizes of the `world` near-equal shards.
    pub fn shard_counts(&self, world: usize) -> Vec<usize> {
        split_counts(self.total as usize, world)
    }

    /// `[lo, hi)` of rank `rank`'s shard.
    pub fn shard(&self, rank: usize, world: usize) -> (i64, i64) {
        let counts = self.shard_counts(world);
        let lo = counts[..rank].iter().sum::<usize>() as i64;
        (lo, lo + counts[rank] as i64)
    }
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub rank: u32,
    pub bytes: u64,
    pub sha256: String,
}

/// Where a run restarts (or an evaluation starts) from: a checkpoint that passed its checks.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// What has been trained on, so that a resume neither repeats nor skips data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFrontier {
    /// RL prompts `0..prompts_trained` (train split) have been trained on; the next
    /// iteration starts at this id. Prompts generated for later iterations are not counted.
    pub prompts_trained: u64,
    /// Warm-start problems trained on, as `[first, end)` train-split id ranges.
    pub sft_prompts: [u64; 2],
    pub reward_warm_prompts: [u64; 2],
    /// The coordinator's next task id, so that a resumed run numbers its tasks (and so its
    /// trajectory rows) as the uninterrupted run did.
    pub next_task_id: u64,
}

/// Random state. Learners draw no random numbers while training (their only draw, the reward
/// head's initialisation, is replaced by the saved parameters); rollout and evaluation
/// sampling seed one generator per task from `run_seed`, the iteration and the prompt ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub run_seed: u64,
    pub learners: String,
    pub rollouts: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub airlift_version: String,
    pub run_name: String,
    /// The last iteration trained (0 = the warm starts).
    pub iteration: u64,
    /// The policy version the saved policy parameters are.
    pub policy_version: u64,
    /// Learner ranks that wrote shards.
    pub world_size: u32,
    pub created_unix_s: u64,
    /// Flat layouts by model (`policy`, `reward`).
    pub layouts: std::collections::BTreeMap<String, FlatLayout>,
    /// Optimizer steps taken, by model.
    pub optimizer_steps: std::collections::BTreeMap<String, u64>,
    pub files: Vec<FileEntry>,
    pub rng: RngState,
    pub data: DataFrontier,
    /// [`crate::config::RunConfig::resume_hash`] of the run's config.
    pub config_sha256: String,
    /// The keys left out of `config_sha256`.
    pub config_may_differ: Vec<String>,
    /// The run's whole config (TOML), for export and for people.
    pub config_toml: String,
}

/// Why a folder is not a usable checkpoint. Every message names the file and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{dir}: no {MANIFEST} (a half-written or foreign folder is not a checkpoint)")]
    NoManifest { dir: PathBuf },
    #[error("{path}: {what}")]
    BadManifest { path: PathBuf, what: String },
    #[error("{path}: written by a run with another config (config_sha256 {theirs}, this run's is {ours}); only {may_differ} may differ on resume")]
    OtherConfig {
        path: PathBuf,
        theirs: String,
        ours: String,
        may_differ: String,
    },
    #[error("{path}: {what}")]
    BadFile { path: PathBuf, what: String },
    #[error("{path}: {what}")]
    Io { path: PathBuf, what: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |e| CheckpointError::Io {
        path: path.to_path_buf(),
        what: e.to_string(),
    }
}

/// `<run>/checkpoints`.
pub fn root(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// The folder of the checkpoint after `iteration`.
pub fn step_dir(run_dir: &Path, iteration: u64) -> PathBuf {
    root(run_dir).join(format!("step-{iteration:06}"))
}

/// Rank `rank`'s shard file name.
pub fn shard_name(rank: u32, world: u32) -> String {
    format!("rank-{rank:05}-of-{world:05}.safetensors")
}

/// The `step-NNNNNN` folders under `<run>/checkpoints`, newest (highest step) first, valid or not.
pub fn step_dirs(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(root(run_dir))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
                    e.file_type().ok()?.is_dir().then(|| (step, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|b| std::cmp::Reverse(b.0));
    v
}

/// Reads and parses `dir/manifest.json` without checking the files.
pub fn read_manifest(dir: &Path) -> Result<Manifest, CheckpointError> {
    let path = dir.join(MANIFEST);
    if !path.exists() {
        return Err(CheckpointError::NoManifest { dir: dir.to_path_buf() });
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| CheckpointError::BadManifest {
        path: path.clone(),
        what: format!("not a valid manifest: {e}"),
    })?;
    if m.format_version != FORMAT_VERSION {
        return Err(CheckpointError::BadManifest {
            path,
            what: format!("format_version {} (this airlift reads {FORMAT_VERSION})", m.format_version),
        });
    }
    let bad = |what: String| Err(CheckpointError::BadManifest { path: path.clone(), what });
    if m.world_size == 0 {
        return bad("world_size is 0".into());
    }
    for model in MODELS {
        let Some(l) = m.layouts.get(model) else {
            return bad(format!("no layout for `{model}`"));
        };
        if l.names.len() != l.shapes.len() || l.names.len() != l.offsets.len() {
            return bad(format!(
                "layout `{model}`: {} names, {} shapes, {} offsets",
                l.names.len(),
                l.shapes.len(),
                l.offsets.len()
            ));
        }
        let mut next = 0i64;
        for ((n, s), &o) in l.names.iter().zip(&l.shapes).zip(&l.offsets) {
            if o != next {
                return bad(format!("layout `{model}`: `{n}` starts at {o}, expected {next}"));
            }
            next += s.iter().product::<i64>();
        }
        if next != l.total {
            return bad(format!("layout `{model}`: variables add up to {next} values, total says {}", l.total));
        }
    }
    for r in 0..m.world_size {
        let want = shard_name(r, m.world_size);
        match m.files.iter().filter(|f| f.rank == r).collect::<Vec<_>>()[..] {
            [f] if f.name == want => {}
            [] => return bad(format!("lists no file for rank {r} (expected {want})")),
            _ => return bad(format!("rank {r}: expected exactly one file named {want}")),
        }
    }
    if m.files.len() != m.world_size as usize {
        return bad(format!("lists {} files for {} ranks", m.files.len(), m.world_size));
    }
    Ok(m)
}

/// Checks a checkpoint folder completely: its manifest, that it belongs to a run with config
/// hash `config_sha256` (when given), and every file's size and SHA-256. Nothing should be
/// loaded from a folder that fails this.
pub fn verify(dir: &Path, config_sha256: Option<&str>) -> Result<Manifest, CheckpointError> {
    let m = read_manifest(dir)?;
    if let Some(ours) = config_sha256 {
        if m.config_sha256 != ours {
            return Err(CheckpointError::OtherConfig {
                path: dir.join(MANIFEST),
                theirs: m.config_sha256.clone(),
                ours: ours.to_string(),
                may_differ: m.config_may_differ.join(", "),
            });
        }
    }
    for f in &m.files {
        let path = dir.join(&f.name);
        let meta = std::fs::metadata(&path).map_err(|e| CheckpointError::BadFile {
            path: path.clone(),
            what: format!("missing or unreadable ({e}); the manifest lists it with {} bytes", f.bytes),
        })?;
        if meta.len() != f.bytes {
            return Err(CheckpointError::BadFile {
                path,
                what: format!("{} bytes, the manifest says {} (truncated or overwritten)", meta.len(), f.bytes),
            });
        }
        let (sha, _) = sha256_file(&path).map_err(io_err(&path))?;
        if sha != f.sha256 {
            return Err(CheckpointError::BadFile {
                path,
                what: format!("SHA-256 {sha}, the manifest says {} (the file's bytes changed)", f.sha256),
            });
        }
    }
    Ok(m)
}

/// What [`newest_valid`] found: the checkpoint to use (if any) and why each newer folder was
/// skipped.
pub struct Choice {
    pub chosen: Option<(PathBuf, Manifest)>,
    pub skipped: Vec<(PathBuf, CheckpointError)>,
}

/// The newest checkpoint under `run_dir` that passes [`verify`].
pub fn newest_valid(run_dir: &Path, config_sha256: Option<&str>) -> Choice {
    let mut skipped = Vec::new();
    for (_, dir) in step_dirs(run_dir) {
        match verify(&dir, config_sha256) {
            Ok(m) => {
                return Choice {
                    chosen: Some((dir, m)),
                    skipped,
                }
            }
            Err(e) => skipped.push((dir, e)),
        }
    }
    Choice { chosen: None, skipped }
}

/// Writes `dir/manifest.json` atomically: a temporary file, fsync, rename, fsync of the folder.
pub fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), CheckpointError> {
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(m).expect("manifest serialises");
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    Ok(())
}

/// Deletes checkpoints older than the newest `keep` valid ones (manifest present and parsable;
/// the files are not re-hashed). Folders newer than the newest valid one are left alone, and
/// with `keep_warm_start` so is `step-000000` (it does not count towards `keep`).
/// Returns the folders deleted.
pub fn prune(run_dir: &Path, keep: usize, keep_warm_start: bool) -> Vec<PathBuf> {
    let mut kept = 0;
    let mut deleted = Vec::new();
    for (step, dir) in step_dirs(run_dir) {
        if keep_warm_start && step == 0 {
            continue;
        }
        if kept >= keep {
            if std::fs::remove_dir_all(&dir).is_ok() {
                deleted.push(dir);
            }
        } else if read_manifest(&dir).is_ok() {
            kept += 1;
        }
    }
    deleted
}

/// The little-endian bytes of `values` (the safetensors encoding), without copying.
pub fn f32_bytes(values: &[f32]) -> &[u8] {
    const _: () = assert!(cfg!(target_endian = "little"), "checkpoint files are little-endian");
    // SAFETY: f32 has no padding and any byte is a valid u8; the length covers exactly the values.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

/// A safetensors writer of F32 vectors that streams to disk, hashing as it goes.
pub struct ShardWriter {
    file: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
    path: PathBuf,
    bytes: u64,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

impl ShardWriter {
    /// Creates `path` holding vectors named `names` with `lens` values each, and string
    /// metadata; then [`ShardWriter::write`] each vector's values in the same order.
    pub fn create(path: &Path, names: &[String], lens: &[usize], metadata: &[(String, String)]) -> Result<Self, CheckpointError> {
        let shapes: Vec<Vec<i64>> = lens.iter().map(|&l| vec![l as i64]).collect();
        let header = f32_header(names.iter().map(String::as_str).zip(shapes.iter().map(Vec::as_slice)), metadata);
        let file = std::fs::File::create(path).map_err(io_err(path))?;
        let mut w = ShardWriter {
            file: std::io::BufWriter::with_capacity(4 << 20, file),
            hasher: Sha256::new(),
            path: path.to_path_buf(),
            bytes: 0,
        };
        w.put(&(header.len() as u64).to_le_bytes())?;
        w.put(header.as_bytes())?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<(), CheckpointError> {
        self.hasher.update(b);
        self.bytes += b.len() as u64;
        self.file.write_all(b).map_err(io_err(&self.path))
    }

    /// Appends values of the current vector (call repeatedly to stream one vector in chunks).
    pub fn write(&mut self, values: &[f32]) -> Result<(), CheckpointError> {
        self.put(f32_bytes(values))
    }

    /// Flushes and fsyncs; returns (size, SHA-256).
    pub fn finish(self) -> Result<(u64, String), CheckpointError> {
        let path = self.path.clone();
        let f = self.file.into_inner().map_err(|e| CheckpointError::Io {
            path: path.clone(),
            what: e.to_string(),
        })?;
        f.sync_all().map_err(io_err(&path))?;
        Ok((self.bytes, hex(&self.hasher.finalize())))
    }
}

/// The shard files of a verified checkpoint, opened for reading slices of the flat vectors
/// written by any number of ranks.
pub struct Shards {
    dir: PathBuf,
    world: usize,
    layouts: std::collections::BTreeMap<String, FlatLayout>,
    maps: Vec<memmap2::Mmap>,
}

impl Shards {
    /// Opens the files listed by `m` in `dir` (verify the checkpoint first).
    pub fn open(dir: &Path, m: &Manifest) -> Result<Self, CheckpointError> {
        let mut maps = Vec::new();
        for r in 0..m.world_size {
            let path = dir.join(shard_name(r, m.world_size));
            let f = std::fs::File::open(&path).map_err(io_err(&path))?;
            // SAFETY: checkpoint files are never modified in place (new checkpoints go to new
            // folders); a file changed underneath would at worst give wrong values, which the
            // checksums checked before loading rule out for the files as verified.
            let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io_err(&path))?;
            safetensors::SafeTensors::deserialize(&map).map_err(|e| CheckpointError::BadFile {
                path: path.clone(),
                what: format!("not a valid safetensors file: {e}"),
            })?;
            maps.push(map);
        }
        Ok(Shards {
            dir: dir.to_path_buf(),
            world: m.world_size as usize,
            layouts: m.layouts.clone(),
            maps,
        })
    }

    /// Values `[lo, hi)` of `model`'s flat vector `vector` (`param`, `adam_m`, `adam_v`),
    /// gathered from whichever shards hold them.
    pub fn read(&self, model: &str, vector: &str, lo: i64, hi: i64) -> Result<Vec<f32>, CheckpointError> {
        let mut out = vec![0f32; (hi - lo).max(0) as usize];
        self.read_into(model, vector, lo, &mut out)?;
        Ok(out)
    }

    /// Fills `out` with values `[lo, lo + out.len())` of `model`'s flat vector `vector`.
    pub fn read_into(&self, model: &str, vector: &str, lo: i64, out: &mut [f32]) -> Result<(), CheckpointError> {
        let layout = self.layouts.get(model).ok_or_else(|| CheckpointError::BadManifest {
            path: self.dir.join(MANIFEST),
            what: format!("no layout for `{model}`"),
        })?;
        let hi = lo + out.len() as i64;
        let name = format!("{model}.{vector}");
        let mut filled = 0usize;
        for (r, map) in self.maps.iter().enumerate() {
            let (a, b) = layout.shard(r, self.world);
            let (from, to) = (lo.max(a), hi.min(b));
            if from >= to {
                continue;
            }
            let path = self.dir.join(shard_name(r as u32, self.world as u32));
            let st = safetensors::SafeTensors::deserialize(map).map_err(|e| CheckpointError::BadFile {
                path: path.clone(),
                what: e.to_string(),
            })?;
            let t = st.tensor(&name).map_err(|_| CheckpointError::BadFile {
                path: path.clone(),
                what: format!("has no tensor `{name}`"),
            })?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape() != [(b - a) as usize] {
                return Err(CheckpointError::BadFile {
                    path,
                    what: format!("`{name}` is {:?} {:?}, expected F32 [{}]", t.dtype(), t.shape(), b - a),
                });
            }
            let bytes = &t.data()[4 * (from - a) as usize..4 * (to - a) as usize];
            let dst = &mut out[(from - lo) as usize..(to - lo) as usize];
            // SAFETY: as in `f32_bytes`; every bit pattern is a valid f32.
            let dst_bytes = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(dst)) };
            dst_bytes.copy_from_slice(bytes);
            filled += dst.len();
        }
        if filled != out.len() {
            return Err(CheckpointError::BadManifest {
                path: self.dir.join(MANIFEST),
                what: format!("shards hold {filled} values of `{name}` [{lo}, {hi})"),
            });
        }
        Ok(())
    }
}

/// The JSON header of a safetensors file of F32 tensors laid end to end in the given order,
/// padded to 8 bytes.
fn f32_header<'a>(tensors: impl Iterator<Item = (&'a str, &'a [i64])>, metadata: &[(String, String)]) -> String {
    let meta: Vec<String> = metadata.iter().map(|(k, v)| format!("{}:{}", json_str(k), json_str(v))).collect();
    let mut header = format!("{{\"__metadata__\":{{{}}}", meta.join(","));
    let mut off = 0i64;
    for (name, shape) in tensors {
        let end = off + 4 * shape.iter().product::<i64>();
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        header.push_str(&format!(
            ",{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{off},{end}]}}",
            json_str(name),
            dims.join(",")
        ));
        off = end;
    }
    header.push('}');
    while (8 + header.len()) % 8 != 0 {
        header.push(' ');
    }
    header
}

/// Writes a plain safetensors file of named F32 tensors (`names`/`shapes` in `layout` order)
/// from one flat vector, e.g. an exported model.
pub fn write_named(path: &Path, layout: &FlatLayout, flat: &[f32]) -> Result<(), CheckpointError> {
    let header = f32_header(
        layout.names.iter().map(String::as_str).zip(layout.shapes.iter().map(Vec::as_slice)),
        &[("format".to_string(), "pt".to_string())],
    );
    let f = std::fs::File::create(path).map_err(io_err(path))?;
    let mut w = std::io::BufWriter::with_capacity(4 << 20, f);
    let mut put = |b: &[u8]| w.write_all(b).map_err(io_err(path));
    put(&(header.len() as u64).to_le_bytes())?;
    put(header.as_bytes())?;
    put(f32_bytes(flat))?;
    w.flush().map_err(io_err(path))
}

/// The `config.json` of a reward model built from a base causal LM's `config.json`: its first
/// `layers` layers and a scalar head under [`REWARD_HEAD_WEIGHT`] / [`REWARD_HEAD_BIAS`].
pub fn reward_config_json(mut base: serde_json::Value, layers: usize) -> serde_json::Value {
    base["num_hidden_layers"] = serde_json::json!(layers);
    // transformers' token-classification class of the base architecture with one label: its
    // head is `score` (Linear with bias) on the trunk's final-norm hidden states, which is this
    // reward model, so `AutoModelForTokenClassification` gives f at every position.
    let arch = match base["model_type"].as_str() {
        Some("qwen2") => "Qwen2ForTokenClassification",
        _ => "LlamaForTokenClassification",
    };
    base["architectures"] = serde_json::json!([arch]);
    base["id2label"] = serde_json::json!({"0": "reward"});
    base["label2id"] = serde_json::json!({"reward": 0});
    base["airlift_reward_model"] = serde_json::json!({
        "head_weight": REWARD_HEAD_WEIGHT, "head_bias": REWARD_HEAD_BIAS,
        "output": "one scalar per position: f(s_t, a_t) read at the position of a_t",
    });
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_written_on_two_ranks_read_back_on_three() {
        let dir = std::env::temp_dir().join(format!("airlift-ckpt-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let layout = FlatLayout {
            names: vec!["a".into(), "b".into()],
            shapes: vec![vec![2, 3], vec![5]],
            offsets: vec![0, 6],
            total: 11,
        };
        let full: Vec<f32> = (0..11).map(|i| i as f32 * 0.5).collect();
        let mut files = Vec::new();
        for r in 0..2u32 {
            let (lo, hi) = layout.shard(r as usize, 2);
            let names: Vec<String> = MODELS.iter().flat_map(|m| VECTORS.iter().map(move |v| format!("{m}.{v}"))).collect();
            let lens = vec![(hi - lo) as usize; names.len()];
            let name = shard_name(r, 2);
            let mut w = ShardWriter::create(&dir.join(&name), &names, &lens, &[("rank".into(), r.to_string())]).unwrap();
            for k in 0..names.len() {
                let v: Vec<f32> = full[lo as usize..hi as usize].iter().map(|x| x + k as f32 * 100.0).collect();
                w.write(&v).unwrap();
            }
            let (bytes, sha256) = w.finish().unwrap();
            assert_eq!((bytes, sha256.clone()), {
                let (s, b) = sha256_file(&dir.join(&name)).unwrap();
                (b, s)
            });
            files.push(FileEntry { name, rank: r, bytes, sha256 });
        }
        let m = Manifest {
            format_version: FORMAT_VERSION,
            airlift_version: "test".into(),
            run_name: "t".into(),
            iteration: 1,
            policy_version: 2,
            world_size: 2,
            created_unix_s: 0,
            layouts: MODELS.iter().map(|m| (m.to_string(), layout.clone())).collect(),
            optimizer_steps: Default::default(),
            files,
            rng: RngState {
                run_seed: 0,
                learners: String::new(),
                rollouts: String::new(),
            },
            data: DataFrontier {
                prompts_trained: 0,
                sft_prompts: [0, 0],
                reward_warm_prompts: [0, 0],
                next_task_id: 1,
            },
            config_sha256: "x".into(),
            config_may_differ: vec![],
            config_toml: String::new(),
        };
        write_manifest(&dir, &m).unwrap();
        let m = verify(&dir, Some("x")).unwrap();
        let s = Shards::open(&dir, &m).unwrap();
        assert_eq!(s.read("policy", "param", 0, 11).unwrap(), full);
        for r in 0..3 {
            let (lo, hi) = layout.shard(r, 3);
            let want: Vec<f32> = full[lo as usize..hi as usize].iter().map(|x| x + 500.0).collect();
            assert_eq!(s.read("reward", "adam_v", lo, hi).unwrap(), want, "rank {r} of 3");
        }
        assert!(verify(&dir, Some("y")).unwrap_err().to_string().contains("another config"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A rank's checkpoint shard as it travels in `TaskReport.shard`, and back.
pub mod wire {
    use super::{FileEntry, FlatLayout};
    use crate::pb;
    use std::collections::BTreeMap;

    impl From<&FileEntry> for pb::CheckpointFile {
        fn from(f: &FileEntry) -> Self {
            pb::CheckpointFile {
                name: f.name.clone(),
                rank: f.rank,
                bytes: f.bytes,
                sha256: f.sha256.clone(),
            }
        }
    }

    impl From<pb::CheckpointFile> for FileEntry {
        fn from(f: pb::CheckpointFile) -> Self {
            FileEntry {
                name: f.name,
                rank: f.rank,
                bytes: f.bytes,
                sha256: f.sha256,
            }
        }
    }

    impl From<&FlatLayout> for pb::FlatLayout {
        fn from(l: &FlatLayout) -> Self {
            pb::FlatLayout {
                names: l.names.clone(),
                shapes: l.shapes.iter().map(|d| pb::Shape { dims: d.clone() }).collect(),
                offsets: l.offsets.clone(),
                total: l.total,
            }
        }
    }

    impl From<pb::FlatLayout> for FlatLayout {
        fn from(l: pb::FlatLayout) -> Self {
            FlatLayout {
                names: l.names,
                shapes: l.shapes.into_iter().map(|s| s.dims).collect(),
                offsets: l.offsets,
                total: l.total,
            }
        }
    }

    /// The report of a written shard.
    pub fn shard_written(file: &FileEntry, layouts: &BTreeMap<String, FlatLayout>, optimizer_steps: &BTreeMap<String, u64>) -> pb::ShardWritten {
        pb::ShardWritten {
            file: Some(file.into()),
            layouts: layouts.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
            optimizer_steps: optimizer_steps.iter().map(|(k, &v)| (k.clone(), v)).collect(),
        }
    }

    /// A shard report as the manifest's pieces: file, layouts by model, optimizer steps by model.
    pub type Shard = (FileEntry, BTreeMap<String, FlatLayout>, BTreeMap<String, u64>);

    /// The pieces of a shard report; an error names what is missing.
    pub fn from_shard_written(s: pb::ShardWritten) -> Result<Shard, String> {
        let file = s.file.ok_or("the shard report names no file")?.into();
        let layouts = s.layouts.into_iter().map(|(k, v)| (k, v.into())).collect();
        Ok((file, layouts, s.optimizer_steps.into_iter().collect()))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_shard_report_survives_the_wire() {
            let file = FileEntry {
                name: "rank-00001-of-00002.safetensors".into(),
                rank: 1,
                bytes: 1 << 33,
                sha256: "ab".repeat(32),
            };
            let layout = FlatLayout {
                names: vec!["a".into(), "b".into()],
                shapes: vec![vec![2, 3], vec![]],
                offsets: vec![0, 6],
                total: 7,
            };
            let layouts = BTreeMap::from([("policy".to_string(), layout)]);
            let steps = BTreeMap::from([("policy".to_string(), 12u64), ("reward".to_string(), 40)]);
            let bytes = prost::Message::encode_to_vec(&shard_written(&file, &layouts, &steps));
            let back: pb::ShardWritten = prost::Message::decode(bytes.as_slice()).unwrap();
            let (f, l, s) = from_shard_written(back).unwrap();
            assert_eq!((f.name, f.rank, f.bytes, f.sha256), (file.name, file.rank, file.bytes, file.sha256));
            assert_eq!((l, s), (layouts, steps));
            let none = from_shard_written(pb::ShardWritten::default()).unwrap_err();
            assert!(none.contains("names no file"), "{none}");
        }
    }
}
