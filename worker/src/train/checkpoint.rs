//! A learner rank's part of a sharded checkpoint ([`airlift_proto::checkpoint`] has the format):
//! writing the slice of each flat vector the rank owns, and loading a checkpoint written by any
//! number of ranks into this rank's optimizers (whole parameters, its own slice of the moments).

use super::flat::{layout_of, FlatLayout};
use super::optim::FlatAdamW;
use airlift_proto::checkpoint::{self as ckpt, CheckpointError, FileEntry, Manifest, ShardWriter, Shards};
use std::path::Path;
use tch::nn::VarStore;

/// Values moved between tensors and files per step (16 MiB of f32), so no whole vector is
/// ever copied into a second buffer.
const CHUNK: usize = 4 << 20;

/// Calls `f` on consecutive chunks of the 1-D fp32 tensor `t` (on any device), through `buf`.
fn stream(t: &tch::Tensor, buf: &mut [f32], mut f: impl FnMut(&[f32]) -> Result<(), CheckpointError>) -> Result<(), CheckpointError> {
    let n = t.numel();
    let mut off = 0;
    while off < n {
        let k = (n - off).min(buf.len());
        t.narrow(0, off as i64, k as i64).to_device(tch::Device::Cpu).copy_data(&mut buf[..k], k);
        f(&buf[..k])?;
        off += k;
    }
    Ok(())
}

/// One model's training state: its var store (for the layout) and its optimizer (which owns
/// the flat parameter buffer and this rank's moments).
pub struct ModelState<'a> {
    pub name: &'static str,
    pub vs: &'a VarStore,
    pub opt: &'a mut FlatAdamW,
}

/// What a rank wrote.
pub struct Written {
    pub file: FileEntry,
    pub layouts: std::collections::BTreeMap<String, FlatLayout>,
    pub optimizer_steps: std::collections::BTreeMap<String, u64>,
}

/// Writes rank `rank`'s shard file into `dir` (fsynced; the manifest is the coordinator's).
pub fn save_shard(dir: &Path, rank: usize, world: usize, models: &[ModelState]) -> Result<Written, CheckpointError> {
    let name = ckpt::shard_name(rank as u32, world as u32);
    let path = dir.join(&name);
    let mut names = Vec::new();
    let mut lens = Vec::new();
    let mut meta = vec![("rank".to_string(), rank.to_string()), ("world_size".to_string(), world.to_string())];
    for m in models {
        let (lo, hi) = m.opt.shard();
        meta.push((format!("{}.range", m.name), format!("{lo},{hi}")));
        for v in ckpt::VECTORS {
            names.push(format!("{}.{v}", m.name));
            lens.push((hi - lo) as usize);
        }
    }
    let mut w = ShardWriter::create(&path, &names, &lens, &meta)?;
    let mut layouts = std::collections::BTreeMap::new();
    let mut steps = std::collections::BTreeMap::new();
    let mut buf = vec![0f32; CHUNK];
    for m in models {
        let (lo, hi) = m.opt.shard();
        // Non-finite parameters never reach a checkpoint (a resume would keep the damage).
        let mut at = lo as usize;
        stream(&m.opt.flat().narrow(0, lo, hi - lo), &mut buf, |chunk| {
            if let Some(i) = chunk.iter().position(|v| !v.is_finite()) {
                return Err(CheckpointError::BadFile {
                    path: path.clone(),
                    what: format!(
                        "{} parameter {} is {}: a checkpoint with non-finite parameters is not written",
                        m.name,
                        at + i,
                        chunk[i]
                    ),
                });
            }
            at += chunk.len();
            w.write(chunk)
        })?;
        match m.opt.moment_tensors() {
            Some((mm, vv)) => {
                for t in [mm, vv] {
                    stream(t, &mut buf, |chunk| w.write(chunk))?;
                }
            }
            // A frozen model's moments are zeros, written without holding them.
            None => {
                let zeros = vec![0f32; CHUNK];
                for _ in 0..2 {
                    let mut left = (hi - lo) as usize;
                    while left > 0 {
                        let k = left.min(CHUNK);
                        w.write(&zeros[..k])?;
                        left -= k;
                    }
                }
            }
        }
        layouts.insert(m.name.to_string(), layout_of(m.vs));
        steps.insert(m.name.to_string(), m.opt.steps_taken());
    }
    let (bytes, sha256) = w.finish()?;
    Ok(Written {
        file: FileEntry {
            name,
            rank: rank as u32,
            bytes,
            sha256,
        },
        layouts,
        optimizer_steps: steps,
    })
}

/// Loads the checkpoint in `dir` (already verified) into `models`: every model's whole
/// parameter vector, this rank's slice of its moments (re-sliced when the checkpoint was
/// written by another number of ranks) and its step count. Checks first that the saved layouts
/// are the models' layouts, so nothing is loaded into a model of another shape.
pub fn load(dir: &Path, m: &Manifest, models: &mut [ModelState]) -> Result<(), String> {
    let manifest = dir.join(ckpt::MANIFEST);
    for s in models.iter() {
        let ours = layout_of(s.vs);
        let theirs = m
            .layouts
            .get(s.name)
            .ok_or_else(|| format!("{}: no layout for `{}`", manifest.display(), s.name))?;
        if *theirs != ours {
            let diff = theirs
                .names
                .iter()
                .zip(&theirs.shapes)
                .zip(ours.names.iter().zip(&ours.shapes))
                .find(|(a, b)| a != b)
                .map(|((n, s), (n2, s2))| format!("`{n}` {s:?} where the model has `{n2}` {s2:?}"))
                .unwrap_or_else(|| format!("{} variables where the model has {}", theirs.names.len(), ours.names.len()));
            return Err(format!("{}: the `{}` layout is not this model's: {diff}", manifest.display(), s.name));
        }
    }
    let shards = Shards::open(dir, m).map_err(|e| e.to_string())?;
    let mut buf = vec![0f32; CHUNK];
    for s in models.iter_mut() {
        let (lo, _) = s.opt.shard();
        let step = m.optimizer_steps.get(s.name).copied().unwrap_or(0);
        let name = s.name;
        s.opt
            .load_state_with(step, |which, t| {
                // Parameters: the whole vector; moments: this rank's slice.
                let (vector, first) = match which {
                    0 => ("param", 0),
                    1 => ("adam_m", lo),
                    _ => ("adam_v", lo),
                };
                let n = t.numel();
                let mut off = 0;
                while off < n {
                    let k = (n - off).min(buf.len());
                    shards.read_into(name, vector, first + off as i64, &mut buf[..k]).map_err(|e| e.to_string())?;
                    let src = tch::Tensor::from_slice(&buf[..k]).to_device(t.device());
                    tch::no_grad(|| t.narrow(0, off as i64, k as i64).copy_(&src));
                    off += k;
                }
                Ok(())
            })
            .map_err(|e| format!("{}: `{name}`: {e}", dir.display()))?;
    }
    Ok(())
}
