//! `worker bench-flight`: the Flight transfer rate of trajectory batches (rollout → learner)
//! and the policy weight-sync time on loopback, beside the raw loopback TCP rate of the same
//! machine. Prints numbers; asserts nothing.

use super::flight::{self, LearnerFlight, LearnerStore};
use super::{flat_params, load_flat_params, WorkerError};
use airlift_proto::auth::{Guard, Stamp};
use airlift_proto::trajectory::{self, TrajectoryRow};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn rows(n: usize, prompt: usize, response: usize, offset: u64) -> Vec<TrajectoryRow> {
    (0..n)
        .map(|i| TrajectoryRow {
            iteration: 1,
            policy_version: 1,
            task_id: offset + i as u64 / 16,
            prompt_id: i as u64 / 4,
            sample_index: (i % 16) as u32,
            prompt_tokens: (0..prompt as u32).collect(),
            response_tokens: (0..response as u32).map(|t| t * 7 % 49152).collect(),
            behaviour_logprobs: (0..response).map(|t| -(t as f32) / 100.0).collect(),
            finish_reason: "stop".into(),
            response_text: "so 12 + 7 = 19 apples. ".repeat(response / 8),
            predicted_answer: Some("19".into()),
            correct: Some(i % 3 == 0),
            generation_ms: 100,
            source: "policy".into(),
            first_error_token: None,
        })
        .collect()
}

/// Runs the benchmark; `model` (optional) is a policy folder for the weight-sync row.
pub fn run(model: Option<&Path>, total_rows: usize, batch_rows: usize, response: usize) -> Result<(), WorkerError> {
    let other = |e: &dyn std::fmt::Display| WorkerError::Other(e.to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| other(&e))?;
    let store = Arc::new(LearnerStore::default());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).map_err(|e| other(&e))?;
    let addr = listener.local_addr().map_err(|e| other(&e))?.to_string();
    let svc = LearnerFlight::server(store.clone(), Guard::new(Some("bench".into())));
    rt.spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming).await;
    });
    let mut clients = flight::Clients::new(Stamp::new(Some("bench".into())));
    println!("airlift bench-flight: loopback, {total_rows} rows of 128 prompt + {response} response tokens, {batch_rows} rows per DoPut");

    // Trajectories: rollout → learner.
    let warm = rows(batch_rows, 128, response, 1 << 40);
    rt.block_on(clients.put_rows(&addr, &warm)).map_err(|e| other(&e))?;
    let batches: Vec<Vec<TrajectoryRow>> = (0..total_rows.div_ceil(batch_rows))
        .map(|b| rows(batch_rows, 128, response, (b * batch_rows) as u64))
        .collect();
    let bytes: usize = batches.iter().map(|b| trajectory::to_batch(b).get_array_memory_size()).sum();
    let t = Instant::now();
    let mut accepted = 0;
    for b in &batches {
        accepted += rt.block_on(clients.put_rows(&addr, b)).map_err(|e| other(&e))?;
    }
    let secs = t.elapsed().as_secs_f64();
    let n = batches.iter().map(Vec::len).sum::<usize>();
    println!(
        "flight DoPut trajectories   {:>9.0} rows/s  {:>8.1} MB/s  ({n} rows, {accepted} accepted, {:.1} MB Arrow, {:.3} s)",
        n as f64 / secs,
        bytes as f64 / 1e6 / secs,
        bytes as f64 / 1e6,
        secs
    );

    // Weights: learner → rollout.
    if let Some(dir) = model {
        let m = crate::model::load(dir, tch::Device::Cpu, tch::Kind::Float).map_err(|e| other(&e))?;
        let flat = flat_params(&m.vs);
        let mb = flat.len() as f64 * 4.0 / 1e6;
        store.publish(7, flat);
        let _ = rt.block_on(clients.get_weights(&addr, 7)).map_err(|e| other(&e))?;
        let reps = 3;
        let t = Instant::now();
        let mut got = Vec::new();
        for _ in 0..reps {
            got = rt.block_on(clients.get_weights(&addr, 7)).map_err(|e| other(&e))?;
        }
        let fetch = t.elapsed().as_secs_f64() / reps as f64;
        let t = Instant::now();
        load_flat_params(&m.vs, &got)?;
        let load = t.elapsed().as_secs_f64();
        println!(
            "flight DoGet policy weights {:>9.3} s fetch + {:.3} s load into the model ({:.0} MB fp32, {:.1} MB/s)",
            fetch,
            load,
            mb,
            mb / fetch
        );
    }

    // The same machine's raw loopback TCP rate.
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| other(&e))?;
    let a = l.local_addr().map_err(|e| other(&e))?;
    let total: usize = 1 << 30;
    let reader = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 4 << 20];
        let mut n = 0;
        loop {
            let k = s.read(&mut buf)?;
            if k == 0 {
                return Ok(n);
            }
            n += k;
        }
    });
    let mut s = std::net::TcpStream::connect(a).map_err(|e| other(&e))?;
    let chunk = vec![7u8; 4 << 20];
    let t = Instant::now();
    for _ in 0..total / chunk.len() {
        s.write_all(&chunk).map_err(|e| other(&e))?;
    }
    drop(s);
    let got = reader.join().map_err(|_| other(&"reader thread"))?.map_err(|e| other(&e))?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "raw loopback TCP            {:>9.1} MB/s  ({:.0} MB in {:.3} s)",
        got as f64 / 1e6 / secs,
        got as f64 / 1e6,
        secs
    );
    Ok(())
}
