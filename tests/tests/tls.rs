//! TLS on every connection (`AIRLIFT_TLS`, proto/src/tls.rs): `coordinator tls-init` makes a
//! job's files; a whole run with mutual TLS (gRPC, Flight and the learners' ring) completes like a
//! plaintext one; a plaintext client, a client without a certificate and a client of another CA
//! are refused; the run token does not appear in the bytes on the wire.

use airlift_tests::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn tls_init(dir: &std::path::Path) {
    let (ok, stdout, stderr) = coordinator(&["tls-init", dir.to_str().unwrap()]);
    assert!(ok, "{stdout}\n{stderr}");
}

#[test]
fn tls_init_writes_the_jobs_files_and_never_overwrites_them() {
    let dir = temp_dir("tls-init");
    let tls = dir.join("tls");
    tls_init(&tls);
    use std::os::unix::fs::PermissionsExt;
    for (f, begins) in [
        ("ca.pem", "-----BEGIN CERTIFICATE"),
        ("node.pem", "-----BEGIN CERTIFICATE"),
        ("node.key", "-----BEGIN PRIVATE KEY"),
    ] {
        let text = std::fs::read_to_string(tls.join(f)).unwrap();
        assert!(text.starts_with(begins), "{f}: {text}");
    }
    let mode = std::fs::metadata(tls.join("node.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "node.key is mode {mode:o}");
    let key = std::fs::read(tls.join("node.key")).unwrap();
    let (ok, _, stderr) = coordinator(&["tls-init", tls.to_str().unwrap()]);
    assert!(!ok && stderr.contains("exists"), "{stderr}");
    assert_eq!(std::fs::read(tls.join("node.key")).unwrap(), key, "the job's key is untouched");
    // A TLS folder that cannot be read stops a process at start, naming the file: never a
    // silent fall back to plaintext.
    std::fs::write(dir.join("broken.pem"), "not a certificate").unwrap();
    std::fs::create_dir_all(dir.join("bad")).unwrap();
    for f in ["node.pem", "node.key"] {
        std::fs::copy(tls.join(f), dir.join("bad").join(f)).unwrap();
    }
    std::fs::write(dir.join("bad/ca.pem"), "not a certificate").unwrap();
    let out = Command::new(bin("coordinator"))
        .args(["status", "--coordinator", "http://127.0.0.1:1"])
        .env("AIRLIFT_TLS", dir.join("bad"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ca.pem") && err.contains("holds no certificate"), "{err}");
    let out = Command::new(bin("worker"))
        .args(["run", "--role", "rollout", "--coordinator", "http://127.0.0.1:1"])
        .env("AIRLIFT_TLS", dir.join("missing"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("missing/ca.pem"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_with_mutual_tls_completes_like_a_plaintext_one() {
    let _one_at_a_time = serial();
    let dir = temp_dir("tls-run");
    tls_init(&dir.join("tls"));
    tiny_model(&dir.join("model"));
    let run = dir.join("run");
    std::fs::write(dir.join("c.toml"), tiny_config(&dir.join("model"), &run, "")).unwrap();
    let tls = format!("AIRLIFT_TLS={}", dir.join("tls").display());
    let (ok, stdout, stderr) = command_watched(
        &[
            "env",
            &tls,
            bin("coordinator").to_str().unwrap(),
            "--config",
            dir.join("c.toml").to_str().unwrap(),
            "--local",
        ],
        Duration::from_secs(600),
        |_, _| {},
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("TLS on"), "{stderr}");
    let url = std::fs::read_to_string(run.join("coordinator.url")).unwrap();
    assert!(url.starts_with("https://"), "{url}");
    // 2 learners (Flight and ring over TLS) and 2 rollout workers: every iteration's rows and
    // both replicas identical, as in the plaintext run test.
    let m = metrics(&run);
    assert_eq!(m.len(), 4, "sft + 3 iterations");
    for rec in &m {
        let l = rec["learners"].as_array().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0]["policy_fingerprint"], l[1]["policy_fingerprint"], "{rec}");
    }
    for it in 1..=3u64 {
        let policy = trajectories(&run)
            .into_iter()
            .filter(|(n, _)| n.starts_with(&format!("iter-{it:06}")))
            .flat_map(|(_, r)| r)
            .filter(|r| r.source == "policy")
            .count();
        assert_eq!(policy, 8, "iteration {it}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Relays one TCP port to another and keeps every byte sent each way (client to server, server
/// to client).
type Seen = Arc<Mutex<(Vec<u8>, Vec<u8>)>>;
fn recording_relay(to: u16) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let keep = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else { return };
            for (mut from, mut to, up) in [(client.try_clone().unwrap(), server.try_clone().unwrap(), true), (server, client, false)] {
                let keep = keep.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let mut k = keep.lock().unwrap();
                        if up {
                            k.0.extend_from_slice(&buf[..n])
                        } else {
                            k.1.extend_from_slice(&buf[..n])
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (port, seen)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn status(url: &str, token_file: &std::path::Path, tls: Option<&std::path::Path>) -> (bool, String) {
    let mut cmd = Command::new(bin("coordinator"));
    cmd.args(["status", "--coordinator", url, "--token-file", token_file.to_str().unwrap()]);
    match tls {
        Some(t) => cmd.env("AIRLIFT_TLS", t),
        None => cmd.env_remove("AIRLIFT_TLS"),
    };
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn plaintext_and_certificateless_clients_are_refused_and_the_token_is_not_on_the_wire() {
    let _one_at_a_time = serial();
    let dir = temp_dir("tls-refuse");
    tls_init(&dir.join("tls"));
    tls_init(&dir.join("other"));
    tiny_model(&dir.join("model"));
    let token = "the-run-token-0123456789";
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let cfg =
        tiny_config(&dir.join("model"), &dir.join("run"), "").replace("[workers]", &format!("token_file = \"{}\"\n[workers]", dir.join("token").display()));
    std::fs::write(dir.join("c.toml"), cfg).unwrap();
    let plain_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = |port: u16, tls: Option<&std::path::Path>, run: &str| {
        let mut c = Command::new(bin("coordinator"));
        c.args(["--config", dir.join("c.toml").to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
            .env("AIRLIFT__RUN__DIR", dir.join(run))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(t) = tls {
            c.env("AIRLIFT_TLS", t);
        }
        c.spawn().unwrap()
    };
    let mut plain = start(plain_port, None, "run-plain");
    let mut secure = start(tls_port, Some(&dir.join("tls")), "run-tls");
    let t = Instant::now();
    while !(dir.join("run-plain/coordinator.url").exists() && dir.join("run-tls/coordinator.url").exists()) {
        assert!(t.elapsed() < Duration::from_secs(30), "coordinators did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tf = dir.join("token");
    // With the job's certificate, through a relay that records what the client sends.
    let (relay, seen) = recording_relay(tls_port);
    let (ok, out) = status(&format!("https://127.0.0.1:{relay}"), &tf, Some(&dir.join("tls")));
    assert!(ok && out.contains("state waiting-for-workers"), "{out}");
    let (up, down) = seen.lock().unwrap().clone();
    assert!(!up.is_empty() && !down.is_empty());
    assert!(!contains(&up, token), "the token crossed the wire in clear");
    assert!(!contains(&down, "waiting-for-workers"), "the status crossed the wire in clear");
    // The same through a relay to the plaintext coordinator: there the answer is readable on the
    // wire (so the checks above can fail). The token is in an HTTP/2 header, which HPACK may
    // Huffman-code, so it is not looked for as plain bytes there.
    let (relay, seen) = recording_relay(plain_port);
    let (ok, out) = status(&format!("http://127.0.0.1:{relay}"), &tf, None);
    assert!(ok, "{out}");
    assert!(contains(&seen.lock().unwrap().1, "waiting-for-workers"), "plaintext capture");
    // Refused: a plaintext client; a client of another job's CA (it does not trust the server,
    // and the server does not trust it).
    let url = format!("http://127.0.0.1:{tls_port}");
    let (ok, out) = status(&url, &tf, None);
    assert!(!ok, "a plaintext client got an answer: {out}");
    let (ok, out) = status(&url, &tf, Some(&dir.join("other")));
    assert!(!ok, "a client of another CA got an answer: {out}");
    // A client that trusts the server but has no certificate: refused by mutual TLS.
    let ca = std::fs::read_to_string(dir.join("tls/ca.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = rt.block_on(async {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .domain_name(airlift_proto::tls::NAME);
        let ch = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{tls_port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap();
        match ch.connect().await {
            Err(e) => format!("connect: {e}"),
            Ok(ch) => {
                let stamp = airlift_proto::auth::Stamp::new(Some(token.into()));
                let mut c = airlift_proto::pb::coordinator_client::CoordinatorClient::with_interceptor(ch, stamp);
                match c.run_status(airlift_proto::pb::StatusRequest {}).await {
                    Ok(_) => String::new(),
                    Err(e) => format!("call: {e}"),
                }
            }
        }
    });
    assert!(!refused.is_empty(), "a client without a certificate got the status");
    for c in [&mut plain, &mut secure] {
        c.kill().unwrap();
        let _ = c.wait();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
