//! The Slurm launch against a real one-node Slurm (slurmctld + slurmd + munged on this machine,
//! started by `cluster/local-slurm.sh`, which installs Debian's slurm-wlm and munge when
//! missing), tiny model, 2 learners + 2 rollout workers, workers on 127.0.0.1:
//! 1. `cluster/submit` as the README says: completes, exit 0, no error lines, exact row counts;
//! 2. SIGTERM to the batch step during iteration 2: checkpoint, requeue, resume; the run ends
//!    with the uninterrupted run's fingerprints and Parquet rows;
//! 3. `scontrol requeue` mid-run (no warning): restarts from the newest checkpoint, same checks;
//! 4. a wrong model path fails the job within seconds, the path in the job's output;
//! 5. too few tasks, and LEARNERS disagreeing with the config: clear errors, no hang;
//! 6. `cluster/submit-eval` evaluates the first run's last checkpoint with 2 learners and 2
//!    rollout workers as Slurm job steps; a bad problem file is refused before anything is queued.
//!
//! Slurm holds a requeued job until its old job credentials expire (`cred_expire`, 120 s by
//! default); `cluster/local-slurm.sh` sets 10 s. (Moving the start time forward instead makes
//! Slurm kill the new start: "Job credential revoked".)

use airlift_tests::cluster::*;
use airlift_tests::*;
use std::time::{Duration, Instant};

#[test]
fn slurm_runs_survive_preemption_and_requeue_and_fail_fast_on_bad_input() {
    let _one_at_a_time = serial();
    let dir = temp_dir("slurm");
    tiny_model(&dir.join("model"));
    let slurm = Slurm::start(&dir.join("slurm"));
    let long = Duration::from_secs(300);

    // 1. As the README says.
    let cfg = checkpointed_config(&dir, "a", 2);
    let a = dir.join("a");
    let id = slurm.submit(&cfg);
    let j = slurm.wait(id, &job_out(&a, id), long, |_| {});
    let text = std::fs::read_to_string(job_out(&a, id)).unwrap();
    assert_eq!((j["JobState"].as_str(), j["ExitCode"].as_str()), ("COMPLETED", "0:0"), "{text}");
    assert!(error_lines(&text).is_empty(), "{:?}\n{text}", error_lines(&text));
    assert!(text.contains("status --run") && text.contains("run complete"), "{text}");
    let straight = records(&a);
    assert_eq!(straight.len(), 5);
    let rows_a = rows_without_timings(&a);
    for it in 1..=4 {
        let policy = rows_a
            .iter()
            .filter(|(n, _)| n.starts_with(&format!("iter-{it:06}")))
            .flat_map(|(_, r)| r)
            .filter(|r| r.source == "policy")
            .count();
        assert_eq!(policy, 6 * 2, "iteration {it}");
    }

    // 2. SIGTERM to the batch step while iteration 2 is learned; this job with TLS=1 (mutual TLS
    // on every connection, the job's files made in <run.dir>/tls and kept for the requeue).
    let cfg = checkpointed_config(&dir, "b", 2);
    let b = dir.join("b");
    let id = slurm.submit_with(&cfg, &[("TLS", "1")], &[]);
    let mut signalled = false;
    let j = slurm.wait(id, &job_out(&b, id), long, |text| {
        if !signalled && text.contains("learning iteration=2") {
            slurm.run(slurm.cmd("scancel").args(["--signal=TERM", "--batch", &id.to_string()]));
            signalled = true;
        }
    });
    let text = std::fs::read_to_string(job_out(&b, id)).unwrap();
    assert!(signalled, "{text}");
    assert_eq!(
        (j["JobState"].as_str(), j["ExitCode"].as_str(), j["Restarts"].as_str()),
        ("COMPLETED", "0:0", "1"),
        "{text}"
    );
    assert!(
        text.contains("stopping: checkpoint before exit") || text.contains("checkpoint written"),
        "{text}"
    );
    assert!(
        text.contains("requeueing job") && text.contains("resuming from the newest checkpoint"),
        "{text}"
    );
    same_run(&a, &b, &straight, &rows_a);
    assert!(b.join("tls/node.key").exists(), "TLS=1 made the job's files");
    let url = std::fs::read_to_string(b.join("coordinator.url")).unwrap();
    assert!(url.starts_with("https://"), "{url}");

    // 3. `scontrol requeue` in the middle of iteration 3, no warning.
    let cfg = checkpointed_config(&dir, "c", 2);
    let c = dir.join("c");
    let id = slurm.submit(&cfg);
    let mut requeued = false;
    let j = slurm.wait(id, &job_out(&c, id), long, |text| {
        if !requeued && text.contains("learning iteration=3") {
            let (ok, t) = slurm.run(slurm.cmd("scontrol").args(["requeue", &id.to_string()]));
            assert!(ok, "{t}");
            requeued = true;
        }
    });
    let text = std::fs::read_to_string(job_out(&c, id)).unwrap();
    assert!(requeued, "{text}");
    assert_eq!(
        (j["JobState"].as_str(), j["ExitCode"].as_str(), j["Restarts"].as_str()),
        ("COMPLETED", "0:0", "1"),
        "{text}"
    );
    assert!(text.contains("resuming from the newest checkpoint"), "{text}");
    same_run(&a, &c, &straight, &rows_a);

    // 4. A wrong model path: refused before anything is queued, naming the path.
    let cfg = dir.join("bad-model.toml");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(checkpointed_config(&dir, "d", 2))
            .unwrap()
            .replace(dir.join("model").to_str().unwrap(), "/nonexistent/airlift-model"),
    )
    .unwrap();
    // `cluster/submit` checks the config (and reads the policy's config.json for the memory
    // estimate) before anything is queued: the submission itself fails, naming the path.
    let d = dir.join("d");
    let t = Instant::now();
    let (ok, text) = slurm.run(slurm.cmd("cluster/submit").arg(&cfg));
    assert!(!ok && text.contains("/nonexistent/airlift-model/config.json"), "{text}");
    assert!(!text.contains("Submitted batch job"), "{text}");
    assert!(!d.join("logs").exists(), "nothing started");
    println!("wrong model path: refused at submission after {:.1} s", t.elapsed().as_secs_f64());

    // 5. Too few tasks for the config; LEARNERS disagreeing with it.
    let cfg = checkpointed_config(&dir, "e", 2);
    let e = dir.join("e");
    std::fs::create_dir_all(&e).unwrap();
    let (ok, text) = slurm.run(
        slurm
            .cmd("sbatch")
            .args(["--ntasks=2", &format!("--output={}/slurm-%j.out", e.display())])
            .arg("cluster/airlift.sbatch")
            .env("CONFIG", &cfg),
    );
    assert!(ok, "{text}");
    let id: u64 = text.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let j = slurm.wait(id, &job_out(&e, id), Duration::from_secs(60), |_| {});
    let text = std::fs::read_to_string(job_out(&e, id)).unwrap();
    assert_eq!(j["JobState"], "FAILED", "{text}");
    assert!(text.contains("this job has 2 tasks") && text.contains("= 4"), "{text}");
    let (ok, text) = slurm.run(slurm.cmd("cluster/submit").arg(&cfg).env("LEARNERS", "3"));
    assert!(!ok && text.contains("LEARNERS=3 but") && text.contains("workers.learner = 2"), "{text}");

    // 6. An evaluation job of run a's last checkpoint.
    let out = dir.join("evals").join("last");
    let ckpt = a.join("checkpoints").join("step-000004");
    let flags = [
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--problems",
        "synthetic:4",
        "--samples",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--learners",
        "2",
        "--rollouts",
        "2",
    ];
    let (ok, text) = slurm.run(slurm.cmd("cluster/submit-eval").args(flags));
    assert!(ok, "{text}");
    let id: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Submitted batch job "))
        .unwrap_or_else(|| panic!("{text}"))
        .trim()
        .parse()
        .unwrap();
    let job_file = dir.join("evals").join(format!("slurm-last-{id}.out"));
    let j = slurm.wait(id, &job_file, long, |_| {});
    let text = std::fs::read_to_string(&job_file).unwrap();
    assert_eq!((j["JobState"].as_str(), j["ExitCode"].as_str()), ("COMPLETED", "0:0"), "{text}");
    assert!(text.contains("evaluation complete") && text.contains("report.html"), "{text}");
    let samples = airlift_worker::eval::records::read_samples(&out.join("samples.parquet")).unwrap();
    assert_eq!(samples.len(), 8, "4 problems x 2 samples");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"question\": \"q\"}\n").unwrap();
    let (ok, text) = slurm.run(slurm.cmd("cluster/submit-eval").args([
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--problems",
        bad.to_str().unwrap(),
        "--out",
        dir.join("evals/bad").to_str().unwrap(),
    ]));
    assert!(
        !ok && text.contains("bad.jsonl") && text.contains("row 1") && !text.contains("Submitted"),
        "{text}"
    );
    drop(slurm);
    std::fs::remove_dir_all(&dir).unwrap();
}
