//! Runs across hosts on a real Slurm of four nodes on this machine (`NODES=4
//! cluster/local-slurm.sh`: each slurmd in its own network namespace with its own address on a
//! private bridge, slurmctld and munged on this host), tiny model, 2 learners + 2 rollout workers,
//! every process advertising its own node's `eth0` address (`AIRLIFT_IFACE=eth0`):
//! 1. launch: `LEARNER_NODES=2 cluster/submit --nodes=3`: learners on node1 and node2, rollout
//!    workers on node3; each registers with its node's address, the ring and Flight connect across
//!    namespaces, `coordinator status` names the nodes; fingerprints and trajectory rows equal a
//!    one-host run of the same config (`--local`, loopback);
//! 2. a rollout node lost (`--nodes=4`, rollout workers on node3 and node4, mutual TLS on every
//!    connection; every process of node4 killed while iteration 2's rollouts run): its task is
//!    re-queued on node3's worker, the run ends as the one-host run (nothing lost, nothing twice);
//! 3. a 30 s partition (node4's link down, then up) in a run of 64 iterations that outlasts it:
//!    the worker is declared lost after `workers.lost_after_ms`, its task re-queued; the stale
//!    worker gives up its coordinator and exits by itself while the run goes on; every
//!    iteration has each sample exactly once;
//! 4. a learner node lost (node2 killed during iteration 3): the coordinator stops at once with
//!    75, the job requeues itself and resumes from the newest checkpoint; same fingerprints;
//! 5. the coordinator's node lost (node1, the batch host: its link cut during iteration 2, then
//!    its processes killed): the workers on the other nodes exit by themselves within a bounded
//!    time (no worker is left on any node); Slurm requeues the job and it resumes on the other
//!    nodes; same fingerprints.
//!
//! The cluster's SlurmdTimeout is 60 s, longer than the partition, so Slurm itself does not
//! react to it. A killed rollout or learner node is started again ("revived", as a rebooted node)
//! once the run has noticed it, before Slurm would time it out; the coordinator's node is marked
//! DOWN with `scontrol` once the workers have exited, which is what slurmctld does by itself
//! after SlurmdTimeout (the test does not wait the 60 s).

use airlift_tests::cluster::*;
use airlift_tests::*;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(400);

/// Lines of the coordinator's log in a job's output that say a worker registered.
fn registrations(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains("worker registered")).collect()
}

/// The address the cluster's node `i` has (10.77.K.i).
fn node_addr(slurm: &Slurm, i: u32) -> String {
    let network = std::fs::read_to_string(slurm.dir.join("network")).unwrap();
    let k = network.lines().find_map(|l| l.strip_prefix("K=")).unwrap().to_string();
    format!("10.77.{k}.{i}")
}

/// Waits for job `id`, killing every process of `node` once `when` holds for the job's output
/// and starting its slurmd again (a rebooted node) once the run has noticed ("worker lost");
/// returns the job's fields and output.
fn kill_then_revive(slurm: &Slurm, id: u64, out: &Path, node: &str, when: impl Fn(&str) -> bool) -> (HashMap<String, String>, String) {
    let (mut killed, mut revived) = (false, false);
    let j = slurm.wait(id, out, LONG, |text| {
        if !killed && when(text) {
            slurm.node("kill", node, None);
            killed = true;
        }
        if killed && !revived && text.contains("worker lost") {
            slurm.node("revive", node, None);
            revived = true;
        }
    });
    let text = std::fs::read_to_string(out).unwrap();
    assert!(killed && revived, "{node}: killed {killed}, revived {revived}:\n{text}");
    (j, text)
}

#[test]
fn runs_across_hosts_survive_lost_nodes_and_partitions() {
    let _one_at_a_time = serial();
    let dir = temp_dir("multinode");
    tiny_model(&dir.join("model"));
    let slurm = Slurm::start_nodes(&dir.join("slurm"), 4, &[("SLURMD_TIMEOUT", "60")]);

    // The one-host run every other one must equal.
    let cfg = checkpointed_config(&dir, "one-host", 2);
    let one = dir.join("one-host");
    let (ok, out, err) = coordinator(&["--config", cfg.to_str().unwrap(), "--local"]);
    assert!(ok, "{out}\n{err}");
    let straight = records(&one);
    let rows_one = rows_without_timings(&one);
    assert_eq!(straight.len(), 5);

    // 1. Launch across hosts.
    let cfg = checkpointed_config(&dir, "a", 2);
    let a = dir.join("a");
    let id = slurm.submit_with(&cfg, &[("LEARNER_NODES", "2")], &["--nodes=3"]);
    let mut status = String::new();
    let j = slurm.wait(id, &job_out(&a, id), LONG, |text| {
        if status.is_empty() && text.contains("learning iteration=2") {
            let (ok, t) = slurm.run(slurm.cmd(bin("coordinator")).args(["status", "--run", a.to_str().unwrap()]));
            assert!(ok, "{t}");
            status = t;
        }
    });
    let text = std::fs::read_to_string(job_out(&a, id)).unwrap();
    assert_eq!((j["JobState"].as_str(), j["ExitCode"].as_str()), ("COMPLETED", "0:0"), "{text}");
    assert!(error_lines(&text).is_empty(), "{:?}\n{text}", error_lines(&text));
    let regs = registrations(&text);
    assert_eq!(regs.len(), 4, "{text}");
    for (role, node) in [("Learner", 1), ("Learner", 2), ("Rollout", 3), ("Rollout", 3)] {
        let host = format!("host={}", node_addr(&slurm, node));
        let n = regs
            .iter()
            .filter(|l| l.contains(role) && l.contains(&host) && l.contains(&format!("node=node{node}")))
            .count();
        assert!(n >= 1, "no {role} registered from node{node} ({host}): {regs:?}");
    }
    let url = std::fs::read_to_string(a.join("coordinator.url")).unwrap();
    assert!(url.contains(&node_addr(&slurm, 1)), "the coordinator advertises node1's address: {url}");
    for node in ["node1", "node2", "node3"] {
        assert!(status.contains(&format!("node {node}")), "coordinator status names {node}:\n{status}");
    }
    same_run(&one, &a, &straight, &rows_one);
    println!("1. across hosts: run time {}, same fingerprints and rows as the one-host run", j["RunTime"]);

    // 2. A rollout node lost while iteration 2's rollouts run.
    let cfg = checkpointed_config(&dir, "b", 2);
    let b = dir.join("b");
    // This job with TLS=1: mutual TLS on every connection across the hosts (gRPC, Flight, the ring).
    let id = slurm.submit_with(&cfg, &[("LEARNER_NODES", "2"), ("TLS", "1")], &["--nodes=4"]);
    let (j, text) = kill_then_revive(&slurm, id, &job_out(&b, id), "node4", |text| {
        text.contains("iteration=2") && !slurm.pids_on("node4", "release/worker run").is_empty()
    });
    assert_eq!(
        (j["JobState"].as_str(), j["ExitCode"].as_str(), j["Restarts"].as_str()),
        ("COMPLETED", "0:0", "0"),
        "{text}"
    );
    assert!(text.contains("worker lost") && text.contains("run complete"), "{text}");
    same_run(&one, &b, &straight, &rows_one);
    assert!(std::fs::read_to_string(b.join("coordinator.url")).unwrap().starts_with("https://"));
    println!("2. rollout node lost (TLS on): run time {}, same fingerprints and rows", j["RunTime"]);

    // 3. A 30 s partition of a rollout node; its worker is declared lost after 5 s of silence.
    // The run is longer (64 iterations, about 1 s each here) so that it outlasts the partition.
    let iterations = 64;
    let cfg = checkpointed_config(&dir, "c", 2);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("lost_after_ms = 10000", "lost_after_ms = 5000")
        .replace("iterations = 4", &format!("iterations = {iterations}"));
    std::fs::write(&cfg, text).unwrap();
    let c = dir.join("c");
    let id = slurm.submit_with(&cfg, &[("LEARNER_NODES", "2")], &["--nodes=4"]);
    let mut cut: Option<Instant> = None;
    let mut healed_before_the_end = false;
    let mut gave_up_after: Option<Duration> = None;
    let j = slurm.wait(id, &job_out(&c, id), LONG, |text| {
        if cut.is_none() && text.contains("iteration=2") && !slurm.pids_on("node4", "release/worker run").is_empty() {
            slurm.node("link", "node4", Some("down"));
            cut = Some(Instant::now());
        }
        if let (Some(t), None) = (cut, gave_up_after) {
            if slurm.pids_on("node4", "release/worker run").is_empty() {
                gave_up_after = Some(t.elapsed());
            }
        }
        if let Some(t) = cut {
            if !healed_before_the_end && t.elapsed() >= Duration::from_secs(30) {
                slurm.node("link", "node4", Some("up"));
                healed_before_the_end = !text.contains("run complete");
            }
        }
    });
    let text = std::fs::read_to_string(job_out(&c, id)).unwrap();
    assert!(cut.is_some(), "{text}");
    slurm.node("link", "node4", Some("up"));
    assert!(healed_before_the_end, "the run outlasts the partition:\n{text}");
    assert_eq!(
        (j["JobState"].as_str(), j["ExitCode"].as_str(), j["Restarts"].as_str()),
        ("COMPLETED", "0:0", "0"),
        "{text}"
    );
    assert!(text.contains("missed its heartbeats"), "the partitioned worker was declared lost:\n{text}");
    assert_eq!(records(&c).len(), iterations + 1);
    let rows = rows_without_timings(&c);
    for it in 1..=iterations {
        let mut policy: Vec<(u64, u32)> = rows
            .iter()
            .filter(|(n, _)| n.starts_with(&format!("iter-{it:06}")))
            .flat_map(|(_, r)| r)
            .filter(|r| r.source == "policy")
            .map(|r| (r.prompt_id, r.sample_index))
            .collect();
        let n = policy.len();
        policy.sort();
        policy.dedup();
        assert_eq!((n, policy.len()), (6 * 2, 6 * 2), "iteration {it}: every sample once");
    }
    // The stale worker gave up its coordinator and exited by itself, while the run went on
    // (pings unanswered for 15 s end its stream; a report waits 30 s at most; a worker stuck
    // otherwise exits 60 s after its stream ended).
    let gave_up_after = gave_up_after.unwrap_or_else(|| panic!("the partitioned worker did not exit before the run ended:\n{text}"));
    assert!(gave_up_after < Duration::from_secs(80), "{gave_up_after:?}");
    println!(
        "3. 30 s partition: run time {}, every iteration's rows exactly once; the cut-off worker exited {:.1} s after the cut",
        j["RunTime"],
        gave_up_after.as_secs_f64()
    );

    // 4. A learner node lost during iteration 3: requeued by the coordinator, resumed.
    let cfg = checkpointed_config(&dir, "d", 2);
    let d = dir.join("d");
    let id = slurm.submit_with(&cfg, &[("LEARNER_NODES", "2")], &["--nodes=3"]);
    let (j, text) = kill_then_revive(&slurm, id, &job_out(&d, id), "node2", |text| text.contains("learning iteration=3"));
    assert_eq!(
        (j["JobState"].as_str(), j["ExitCode"].as_str(), j["Restarts"].as_str()),
        ("COMPLETED", "0:0", "1"),
        "{text}"
    );
    assert!(
        text.contains("the job requeues and resumes") && text.contains("resuming from the newest checkpoint"),
        "{text}"
    );
    same_run(&one, &d, &straight, &rows_one);
    let requeues = metrics(&d).into_iter().filter(|r| r["requeue"] == serde_json::json!(true)).count();
    assert_eq!(requeues, 1, "one requeue record");
    println!(
        "4. learner node lost: run time {} after the requeue, requeued once, same fingerprints and rows",
        j["RunTime"]
    );

    // 5. The coordinator's node lost during iteration 2, as a power cut does it: its link goes
    // first (no connection is closed: the other nodes' workers must notice by themselves),
    // then its processes.
    let cfg = checkpointed_config(&dir, "e", 2);
    let e = dir.join("e");
    let id = slurm.submit_with(&cfg, &[("LEARNER_NODES", "2")], &["--nodes=3"]);
    let mut cut: Option<Instant> = None;
    let mut exited_after: Option<Duration> = None;
    let mut marked_down = false;
    let others = |slurm: &Slurm| -> Vec<u32> { (2..=4).flat_map(|i| slurm.pids_on(&format!("node{i}"), "release/worker run")).collect() };
    let j = slurm.wait(id, &job_out(&e, id), LONG, |text| {
        if cut.is_none() && text.contains("learning iteration=2") {
            slurm.node("link", "node1", Some("down"));
            cut = Some(Instant::now());
        }
        if let (Some(t), None) = (cut, exited_after) {
            if others(&slurm).is_empty() {
                exited_after = Some(t.elapsed());
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "workers still running 120 s after their coordinator's node was cut off: {:?}",
                others(&slurm)
            );
        }
        if exited_after.is_some() && !marked_down {
            slurm.node("kill", "node1", None);
            slurm.node("link", "node1", Some("up"));
            // What slurmctld does by itself once node1 has missed SlurmdTimeout (60 s here) of
            // pings: the node is DOWN, and Slurm requeues the job on the others.
            let (ok, t) = slurm.run(
                slurm
                    .cmd("scontrol")
                    .args(["update", "nodename=node1", "state=down", "reason=lost in the test"]),
            );
            assert!(ok, "{t}");
            marked_down = true;
        }
    });
    slurm.node("revive", "node1", None);
    let text = std::fs::read_to_string(job_out(&e, id)).unwrap();
    let exited_after = exited_after.unwrap_or_else(|| panic!("{text}"));
    assert_eq!((j["JobState"].as_str(), j["ExitCode"].as_str()), ("COMPLETED", "0:0"), "{text}");
    assert!(j["Restarts"] != "0" && text.contains("resuming from the newest checkpoint"), "{j:?}\n{text}");
    assert!(!j["NodeList"].contains("node1") || j["NodeList"].contains("node[2-4]"), "{j:?}");
    same_run(&one, &e, &straight, &rows_one);
    println!(
        "5. coordinator's node cut off: the other nodes' workers exited {:.1} s after; requeued {} time(s); same fingerprints and rows",
        exited_after.as_secs_f64(),
        j["Restarts"]
    );

    drop(slurm);
    std::fs::remove_dir_all(&dir).unwrap();
}
