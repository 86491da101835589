//! TensorBoard event files in `<run>/tensorboard/`: every number of every `metrics.jsonl`
//! record as a scalar, so `tensorboard --logdir runs/` shows a run's curves.
//!
//! Why not a crate: the Rust TensorBoard writers on crates.io (`tensorboard-rs`, its
//! `tensorboard-proto`, `syntaxdot-summary`) have not been maintained since 2022 and pin old
//! protobuf stacks; the format is small (TFRecord framing with masked CRC-32C around an `Event`
//! protobuf), and `prost`, which the gRPC contract already uses, encodes it.
//!
//! The folder is derived from `metrics.jsonl`: when a coordinator starts a run, resumes it or
//! restarts its learners, it replaces the folder's event file with one that replays the kept
//! records, then appends each new record. So a resume never leaves a step twice (the records
//! after the checkpoint are removed from `metrics.jsonl` and run again).
//!
//! Tags (step = the record's `iteration`): `rollout/<key>` (the rollout totals), `learner/<key>`
//! (learner rank 0's metrics), `eval/<key>` (its held-out evaluation), `run/<key>` (versions,
//! wall times); the warm start (step 0) as `warm_start/<key>`, with its per-step loss curves
//! `warm_start/sft_loss` and `warm_start/reward_loss` (step = warm-start step). Strings, nulls and
//! fingerprints are left out.

use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `tensorflow.Event` (the fields airlift writes; `file_version` and `summary` are a oneof there,
/// which is wire-compatible with two optional fields).
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a `simple_value` (what TensorBoard's scalar plugin reads).
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit through a 256-entry table.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}

/// TFRecord's masked CRC.
fn masked(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC (little-endian).
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked(crc32c(&len)).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked(crc32c(data)).to_le_bytes());
    out
}

/// The scalars of one `metrics.jsonl` record: (step, tag, value).
pub fn scalars(rec: &serde_json::Value) -> Vec<(i64, String, f64)> {
    let mut out = Vec::new();
    let Some(step) = rec["iteration"].as_u64().map(|i| i as i64) else {
        // A restart record: how many so far, at the iteration it went back to.
        if let (Some(n), Some(at)) = (rec["restart"].as_f64(), rec["checkpoint_iteration"].as_u64()) {
            out.push((at as i64, "run/restarts".to_string(), n));
        }
        return out;
    };
    let numbers = |prefix: &str, obj: &serde_json::Value, out: &mut Vec<(i64, String, f64)>| {
        for (k, v) in obj.as_object().into_iter().flatten() {
            if let Some(x) = v.as_f64().filter(|_| !k.contains("fingerprint") && !v.is_boolean()) {
                out.push((step, format!("{prefix}/{k}"), x));
            }
        }
    };
    let learner0 = &rec["learners"][0];
    if rec["phase"] == "sft" || step == 0 {
        numbers("warm_start", learner0, &mut out);
        for (key, tag) in [("sft_losses", "warm_start/sft_loss"), ("reward_warm_losses", "warm_start/reward_loss")] {
            for (k, v) in learner0[key].as_array().into_iter().flatten().enumerate() {
                if let Some(x) = v.as_f64() {
                    out.push((k as i64 + 1, tag.to_string(), x));
                }
            }
        }
        return out;
    }
    numbers("run", rec, &mut out);
    out.retain(|(_, t, _)| t != "run/iteration");
    numbers("rollout", &rec["rollout"], &mut out);
    numbers("learner", learner0, &mut out);
    numbers("eval", &learner0["eval"], &mut out);
    out
}

/// The run's event file, open for appending.
pub struct EventWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl EventWriter {
    /// Replaces `<run_dir>/tensorboard/` event files with one new file holding `records`.
    pub fn rewrite(run_dir: &Path, records: &[serde_json::Value]) -> std::io::Result<EventWriter> {
        let dir = run_dir.join("tensorboard");
        std::fs::create_dir_all(&dir)?;
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("events.out.tfevents.") {
                std::fs::remove_file(e.path())?;
            }
        }
        let now = wall_time();
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            .unwrap_or_else(|| "airlift".into());
        let path = dir.join(format!("events.out.tfevents.{}.{host}.{}", now as u64, std::process::id()));
        let file = std::fs::OpenOptions::new().create_new(true).write(true).open(&path)?;
        let mut w = EventWriter { path, file };
        let head = Event {
            wall_time: now,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        };
        w.file.write_all(&record(&head.encode_to_vec()))?;
        for r in records {
            w.append(r)?;
        }
        Ok(w)
    }

    /// Appends the scalars of `rec` (one event per step) and flushes them to the file.
    pub fn append(&mut self, rec: &serde_json::Value) -> std::io::Result<()> {
        let mut by_step: std::collections::BTreeMap<i64, Vec<SummaryValue>> = Default::default();
        for (step, tag, v) in scalars(rec) {
            by_step.entry(step).or_default().push(SummaryValue {
                tag,
                simple_value: Some(v as f32),
            });
        }
        let wall = wall_time();
        let mut bytes = Vec::new();
        for (step, value) in by_step {
            let e = Event {
                wall_time: wall,
                step,
                file_version: None,
                summary: Some(Summary { value }),
            };
            bytes.extend(record(&e.encode_to_vec()));
        }
        self.file.write_all(&bytes)?;
        self.file.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The CRC-32C check value (RFC 3720 B.4 / the catalogue's "123456789").
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn records_flatten_by_section() {
        let rec = serde_json::json!({
            "iteration": 3, "policy_version": 4, "elapsed_s": 12.5,
            "rollout": {"accuracy": 0.25, "tasks": 1},
            "learners": [{"disc_loss": 0.5, "policy_fingerprint": 123, "eval": {"error_step_hit1": 0.75}, "entropy": null}, {"disc_loss": 9.0}],
        });
        let s = scalars(&rec);
        let tags: Vec<&str> = s.iter().map(|x| x.1.as_str()).collect();
        assert_eq!(
            tags,
            [
                "run/elapsed_s",
                "run/policy_version",
                "rollout/accuracy",
                "rollout/tasks",
                "learner/disc_loss",
                "eval/error_step_hit1"
            ]
        );
        assert!(s.iter().all(|x| x.0 == 3));
        let warm = serde_json::json!({"iteration": 0, "phase": "sft", "learners": [{"sft_loss_last": 0.4, "sft_losses": [1.0, 0.5]}]});
        assert_eq!(
            scalars(&warm),
            [
                (0, "warm_start/sft_loss_last".to_string(), 0.4),
                (1, "warm_start/sft_loss".into(), 1.0),
                (2, "warm_start/sft_loss".into(), 0.5)
            ]
        );
    }
}
