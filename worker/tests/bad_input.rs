//! The bad-input suite: seeded, bounded mutations of everything that crosses a process boundary,
//! each asserted to end in a clear error (or a valid value), never a panic, and the receiver
//! unharmed afterwards. Prints the counts per kind of input.
//!
//! * run configs (TOML values replaced by wrong types, non-finite and out-of-range numbers,
//!   keys dropped, unknown keys): `RunConfig::from_toml` + `validate`;
//! * Arrow Flight batches sent to a live learner Flight server (bytes of the IPC header and body
//!   flipped, bodies cut short, messages dropped, rows with out-of-range fields): every refusal
//!   an `InvalidArgument` naming the problem; everything accepted passes the row checks; a good
//!   batch still goes through afterwards;
//! * garbage connections to the same Flight port (random bytes, then closed);
//! * model files: GGUF header bytes flipped (`Gguf::open`), safetensors header bytes flipped and
//!   `config.json` values replaced (`model::load` of a tiny model).
//!
//! `AIRLIFT_BAD_INPUT_SEED` and `AIRLIFT_BAD_INPUT_CASES` (per kind) change the draw.

mod common;

use airlift_proto::auth::{Guard, Stamp};
use airlift_proto::config::RunConfig;
use airlift_proto::trajectory::{self, TrajectoryRow};
use airlift_worker::runtime::flight::{LearnerFlight, LearnerStore, RowLimits};
use arrow_flight::{FlightData, FlightDescriptor};
use futures::StreamExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A small seeded generator (splitmix64): the same cases on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Panics anywhere in the process while the suite runs (a server task's panic is not a test
/// failure by itself, so it is counted here).
static PANICS: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Tally {
    tried: usize,
    accepted: usize,
    clean: usize,
    unclear: Vec<String>,
}

impl Tally {
    fn line(&self, kind: &str, panics: usize) -> String {
        format!(
            "{kind:<34} {:>6} {:>9} {:>13} {:>8} {:>7}",
            self.tried,
            self.accepted,
            self.clean,
            self.unclear.len(),
            panics
        )
    }
}

const BAD_VALUES: &[&str] = &[
    "-1",
    "0",
    "-0.0",
    "1.5",
    "-1.5",
    "1e19",
    "1e300",
    "-1e300",
    "1e-300",
    "nan",
    "inf",
    "-inf",
    "18446744073709551615",
    "9223372036854775807",
    "\"x\"",
    "\"\"",
    "true",
    "[]",
    "[1, 2]",
    "{}",
    "{ a = 1 }",
    "2026-12-01",
];

fn seed() -> u64 {
    std::env::var("AIRLIFT_BAD_INPUT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261201)
}

fn cases(default: usize) -> usize {
    std::env::var("AIRLIFT_BAD_INPUT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Runs `f`, counting a panic instead of propagating it.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

fn configs(rng: &mut Rng) -> Tally {
    let base = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/default.toml")).unwrap();
    assert!(
        RunConfig::from_toml(&base).and_then(|c| c.validate().map(|_| c)).is_ok(),
        "the base config is valid"
    );
    let lines: Vec<&str> = base.lines().collect();
    let assignments: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            let l = lines[i].trim_start();
            !l.starts_with('#') && !l.starts_with('[') && l.contains(" = ")
        })
        .collect();
    let mut t = Tally::default();
    for _ in 0..cases(300) {
        let i = *rng.pick(&assignments);
        let key = lines[i].split(" = ").next().unwrap().trim().to_string();
        let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        match rng.below(10) {
            0 => out[i] = String::new(),                               // key dropped
            1 => out[i] = format!("{key}_typo = 1"),                   // unknown key
            2 => out.insert(i + 1, out[i].clone()),                    // duplicate key
            _ => out[i] = format!("{key} = {}", rng.pick(BAD_VALUES)), // wrong value
        }
        let text = out.join("\n");
        t.tried += 1;
        let before = PANICS.load(Ordering::SeqCst);
        match guarded(|| RunConfig::from_toml(&text).and_then(|c| c.validate().map(|_| c))) {
            None => t.unclear.push(format!("panicked on `{}`", out.get(i).cloned().unwrap_or_default())),
            Some(Ok(_)) => t.accepted += 1,
            Some(Err(e)) => {
                let e = e.to_string();
                let stem = key.trim_end_matches("_typo");
                if e.contains(stem) || e.contains("line") || e.contains("duplicate") {
                    t.clean += 1;
                } else {
                    t.unclear.push(format!("`{}` -> {e}", out[i]));
                }
            }
        }
        assert_eq!(PANICS.load(Ordering::SeqCst), before, "config case `{}` panicked", out[i]);
    }
    t
}

fn row(iteration: u64, task_id: u64, sample_index: u32) -> TrajectoryRow {
    TrajectoryRow {
        iteration,
        policy_version: 0,
        task_id,
        prompt_id: 1,
        sample_index,
        prompt_tokens: vec![1, 2, 3],
        response_tokens: vec![4, 5],
        behaviour_logprobs: vec![-0.5, -0.25],
        finish_reason: "stop".into(),
        response_text: "ab".into(),
        predicted_answer: Some("3".into()),
        correct: Some(true),
        generation_ms: 1,
        source: "policy".into(),
        first_error_token: None,
    }
}

const LIMITS: RowLimits = RowLimits {
    vocab: 100,
    max_response_tokens: 4,
    max_prompt_tokens: 8,
    max_ahead: 1,
};

/// One row field set to a value the learner must refuse, or to a valid one it must take.
fn mutate_row(rng: &mut Rng, r: &mut TrajectoryRow) {
    let big = [100u32, 101, u32::MAX, 4_000_000_000];
    let floats = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5, 1e30, -0.0, -1e30];
    match rng.below(9) {
        0 => r.response_tokens[0] = *rng.pick(&big),
        1 => r.prompt_tokens[rng.below(3)] = *rng.pick(&big),
        2 => r.behaviour_logprobs[rng.below(2)] = *rng.pick(&floats),
        3 => r.behaviour_logprobs.truncate(rng.below(2)),
        4 => r.response_tokens = vec![7; rng.below(12)],
        5 => r.prompt_tokens = vec![7; rng.below(40)],
        6 => r.iteration = *rng.pick(&[0u64, 3, 1 << 40, u64::MAX]),
        7 => r.source = rng.pick(&["expert", "corrupted", "", "policy"]).to_string(),
        _ => r.finish_reason = rng.pick(&["length", "", "\u{0}\u{ffff}"]).to_string(),
    }
}

/// The Flight messages of one batch (schema, then record batch).
async fn encode(rows: &[TrajectoryRow]) -> Vec<FlightData> {
    let batch = trajectory::to_batch(rows);
    let stream = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["trajectories".into()])))
        .build(futures::stream::once(async move { Ok(batch) }));
    stream.map(|d| d.unwrap()).collect().await
}

fn flip(rng: &mut Rng, bytes: &mut [u8]) {
    if bytes.is_empty() {
        return;
    }
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(bytes.len());
        bytes[i] ^= 1 << rng.below(8);
    }
}

async fn put(addr: &str, msgs: Vec<FlightData>) -> Result<usize, tonic::Status> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut c = arrow_flight::flight_service_client::FlightServiceClient::with_interceptor(ch, Stamp::new(Some("t".into())));
    let mut out = c.do_put(futures::stream::iter(msgs)).await?.into_inner();
    let mut n = 0;
    while let Some(ack) = out.next().await {
        n += String::from_utf8_lossy(&ack?.app_metadata).parse::<usize>().unwrap_or(0);
    }
    Ok(n)
}

fn flight(rng: &mut Rng, rt: &tokio::runtime::Runtime) -> (Tally, Tally) {
    let store = Arc::new(LearnerStore::default());
    store.set_limits(LIMITS);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let svc = LearnerFlight::server(store.clone(), Guard::new(Some("t".into())));
    rt.spawn(async move {
        airlift_proto::conn::server()
            .add_service(svc)
            .serve_with_incoming(airlift_proto::conn::incoming(listener, airlift_proto::conn::cap()))
            .await
    });
    let mut t = Tally::default();
    let mut accepted_tasks = Vec::new();
    for case in 0..cases(150) as u64 {
        let task = 1000 + case;
        let mut rows = vec![row(1, task, 0), row(1, task, 1)];
        let kind = rng.below(6);
        if kind == 5 {
            let i = rng.below(2);
            mutate_row(rng, &mut rows[i]);
        }
        let mut msgs = rt.block_on(encode(&rows));
        // Byte-level mutations of the IPC messages (the last one is the record batch).
        let last = msgs.len() - 1;
        match kind {
            0 => {
                let mut b = msgs[last].data_body.to_vec();
                flip(rng, &mut b);
                msgs[last].data_body = b.into();
            }
            1 => {
                let mut h = msgs[last].data_header.to_vec();
                flip(rng, &mut h);
                msgs[last].data_header = h.into();
            }
            2 => {
                let mut b = msgs[last].data_body.to_vec();
                b.truncate(rng.below(b.len()));
                msgs[last].data_body = b.into();
            }
            3 => {
                let mut h = msgs[0].data_header.to_vec();
                flip(rng, &mut h);
                msgs[0].data_header = h.into();
            }
            4 => {
                msgs.remove(rng.below(msgs.len()));
            }
            _ => {}
        }
        t.tried += 1;
        match rt.block_on(put(&addr, msgs)) {
            Ok(n) => {
                t.accepted += 1;
                if n > 0 {
                    accepted_tasks.push((task, n));
                }
            }
            Err(s) if s.code() == tonic::Code::InvalidArgument && !s.message().is_empty() => t.clean += 1,
            Err(s) => t.unclear.push(format!("case {case} (kind {kind}): {:?} {}", s.code(), s.message())),
        }
        // The server is unharmed: a good batch goes through.
        if case % 25 == 24 {
            let probe = rt.block_on(put(&addr, rt.block_on(encode(&[row(2, 1 << 20 | case, 0)]))));
            assert_eq!(probe.as_ref().ok(), Some(&1), "after case {case}: {probe:?}");
        }
    }
    // Whatever was accepted passes the learner's row checks.
    for (task, n) in accepted_tasks {
        let rows = store.take(1, &[task], n, Duration::from_secs(1)).unwrap_or_default();
        for r in &rows {
            assert_eq!(LIMITS.check(r, 1), Ok(()), "task {task}: accepted a row the checks refuse: {r:?}");
        }
    }

    // Garbage connections: random bytes, then closed.
    let mut g = Tally::default();
    for _ in 0..cases(40) {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let n = 1 + rng.below(4096);
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        let _ = s.write_all(&bytes);
        drop(s);
        g.tried += 1;
        g.clean += 1;
    }
    let probe = rt.block_on(put(&addr, rt.block_on(encode(&[row(2, 1 << 30, 0)]))));
    assert_eq!(probe.as_ref().ok(), Some(&1), "after the garbage connections: {probe:?}");
    (t, g)
}

fn gguf(rng: &mut Rng, dir: &std::path::Path) -> Tally {
    let src = common::cache().join("gguf").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(src.exists(), "{} is missing: run `make assets`", src.display());
    let path = dir.join("m.gguf");
    std::fs::copy(&src, &path).unwrap();
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    // The header: magic, counts, and the first part of the metadata (keys, types, lengths).
    let mut t = Tally::default();
    for _ in 0..cases(150) {
        let at = if rng.below(3) == 0 { rng.below(64) } else { rng.below(64 << 10) } as u64;
        let mut old = [0u8; 1];
        f.read_exact_at(&mut old, at).unwrap();
        let new = [old[0] ^ (1 << rng.below(8))];
        f.write_all_at(&new, at).unwrap();
        t.tried += 1;
        match guarded(|| airlift_worker::gguf::Gguf::open(&path).map(|g| airlift_worker::convert::describe(&g))) {
            None => t.unclear.push(format!("panicked with byte {at} flipped")),
            Some(Ok(_)) => t.accepted += 1,
            Some(Err(e)) => {
                let e = e.to_string();
                if e.contains("m.gguf") {
                    t.clean += 1;
                } else {
                    t.unclear.push(format!("byte {at}: {e}"));
                }
            }
        }
        f.write_all_at(&old, at).unwrap();
    }
    t
}

fn model_files(rng: &mut Rng, dir: &std::path::Path) -> (Tally, Tally) {
    use tch::{Device, Kind};
    let tiny = dir.join("tiny");
    airlift_worker::model::write_tiny_llama(&tiny, &common::smollm2_dir(), 0).unwrap();
    let st = tiny.join("model.safetensors");
    let good = std::fs::read(&st).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize + 8;
    let mut s = Tally::default();
    for _ in 0..cases(100) {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(header_len);
            b[i] ^= 1 << rng.below(8);
        }
        std::fs::write(&st, &b).unwrap();
        s.tried += 1;
        match guarded(|| airlift_worker::model::load(&tiny, Device::Cpu, Kind::Float).map(|_| ())) {
            None => s.unclear.push("panicked".into()),
            Some(Ok(())) => s.accepted += 1,
            Some(Err(e)) => {
                let e = e.to_string();
                if e.contains("tiny") {
                    s.clean += 1
                } else {
                    s.unclear.push(e)
                }
            }
        }
    }
    std::fs::write(&st, &good).unwrap();
    let cfg_path = tiny.join("config.json");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let keys: Vec<String> = cfg.as_object().unwrap().keys().cloned().collect();
    let values = [
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(1u64 << 40),
        serde_json::json!(1e300),
        serde_json::json!(0.5),
        serde_json::json!("x"),
        serde_json::json!(null),
        serde_json::json!(true),
        serde_json::json!([]),
        serde_json::json!({}),
        serde_json::json!(3),
        serde_json::json!(64),
    ];
    let mut c = Tally::default();
    for _ in 0..cases(100) {
        let key = rng.pick(&keys).clone();
        let mut m = cfg.clone();
        let value = rng.pick(&values).clone();
        m[&key] = value.clone();
        std::fs::write(&cfg_path, m.to_string()).unwrap();
        c.tried += 1;
        match guarded(|| airlift_worker::model::load(&tiny, Device::Cpu, Kind::Float).map(|_| ())) {
            None => c.unclear.push(format!("panicked with {key} = {value}")),
            Some(Ok(())) => c.accepted += 1,
            Some(Err(e)) => {
                let e = e.to_string();
                // Named: the key, or the folder with what disagrees in it (e.g. the bias tensors
                // that `attention_bias = true` asks for and the file lacks).
                if e.contains(key.as_str()) || e.contains("config.json") || e.contains(tiny.to_str().unwrap()) {
                    c.clean += 1
                } else {
                    c.unclear.push(format!("{key} = {value}: {e}"))
                }
            }
        }
    }
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    airlift_worker::model::load(&tiny, Device::Cpu, Kind::Float).expect("the restored folder loads");
    (s, c)
}

#[test]
fn bad_input_suite() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let seed = seed();
    let mut rng = Rng(seed);
    let dir = std::env::temp_dir().join(format!("airlift-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows = Vec::new();
    let mut run = |kind: &str, f: &mut dyn FnMut(&mut Rng) -> Vec<(String, Tally)>| {
        let before = PANICS.load(Ordering::SeqCst);
        let out = f(&mut rng);
        // A section's panics are counted on its first line.
        let mut panics = PANICS.load(Ordering::SeqCst) - before;
        for (name, t) in out {
            rows.push((format!("{kind}: {name}"), t, panics));
            panics = 0;
        }
    };
    run("config", &mut |r| vec![("TOML values".into(), configs(r))]);
    run("flight", &mut |r| {
        let (t, g) = flight(r, &rt);
        vec![("mutated batches".into(), t), ("garbage connections".into(), g)]
    });
    run("model", &mut |r| vec![("GGUF header bytes".into(), gguf(r, &dir))]);
    run("model", &mut |r| {
        let (s, c) = model_files(r, &dir);
        vec![("safetensors header bytes".into(), s), ("config.json values".into(), c)]
    });
    println!("bad-input suite, seed {seed}:");
    println!(
        "{:<34} {:>6} {:>9} {:>13} {:>8} {:>7}",
        "input", "cases", "accepted", "clean errors", "unclear", "panics"
    );
    for (k, t, p) in &rows {
        println!("{}", t.line(k, *p));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let total_panics: usize = rows.iter().map(|r| r.2).sum();
    let unclear: Vec<String> = rows.iter().flat_map(|(k, t, _)| t.unclear.iter().map(move |u| format!("{k}: {u}"))).collect();
    for u in &unclear {
        println!("  unclear: {u}");
    }
    assert_eq!(total_panics, 0, "panics in the suite (see above)");
    assert!(unclear.is_empty(), "{} cases without a clear error:\n{}", unclear.len(), unclear.join("\n"));
    for (k, t, _) in &rows {
        assert_eq!(t.tried, t.accepted + t.clean + t.unclear.len(), "{k}");
    }
}
