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

use airlift_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The repository root (cluster scripts are run from there, as a user would).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// A running local Slurm, stopped on drop (also when a check fails).
struct Slurm {
    dir: PathBuf,
}

impl Slurm {
    fn start(dir: &Path) -> Slurm {
        let out = Command::new(repo().join("cluster/local-slurm.sh")).arg("start").arg(dir).output().unwrap();
        let s = Slurm { dir: dir.to_path_buf() };
        assert!(
            out.status.success(),
            "cluster/local-slurm.sh start failed (needs root or sudo for apt-get and the daemons):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        s
    }

    /// A command with this Slurm's config, loopback addresses and the built binaries.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(repo())
            .env("SLURM_CONF", self.dir.join("slurm.conf"))
            .env("AIRLIFT_ADDR", "127.0.0.1")
            .env("BIN", bin("coordinator").parent().unwrap())
            .env_remove("LEARNERS")
            .env_remove("ROLLOUTS");
        c
    }

    fn run(&self, c: &mut Command) -> (bool, String) {
        let out = c.output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    /// Submits `config` with cluster/submit; returns the job id.
    fn submit(&self, config: &Path) -> u64 {
        self.submit_with(config, &[])
    }

    /// [`Slurm::submit`] with extra environment for the job (sbatch exports it).
    fn submit_with(&self, config: &Path, env: &[(&str, &str)]) -> u64 {
        let mut c = self.cmd("cluster/submit");
        c.arg(config).envs(env.iter().copied());
        let (ok, text) = self.run(&mut c);
        assert!(ok, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix("Submitted batch job "))
            .unwrap_or_else(|| panic!("{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// `scontrol show job` fields: JobState, ExitCode, Restarts, Reason.
    fn job(&self, id: u64) -> std::collections::HashMap<String, String> {
        let (_, text) = self.run(self.cmd("scontrol").args(["show", "job", &id.to_string()]));
        text.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Waits until job `id` has ended (not pending or running), calling `on_output` with its
    /// output file's text as it grows. Returns the fields.
    fn wait(&self, id: u64, out: &Path, timeout: Duration, mut on_output: impl FnMut(&str)) -> std::collections::HashMap<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let j = self.job(id);
            let state = j.get("JobState").cloned().unwrap_or_default();
            on_output(&std::fs::read_to_string(out).unwrap_or_default());
            match state.as_str() {
                "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "REQUEUED" => {}
                _ => return j,
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {state} after {timeout:?}:\n{}",
                std::fs::read_to_string(out).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("cluster/local-slurm.sh")).arg("stop").arg(&self.dir).status();
    }
}

/// Lines of a job's output that report errors (the summary's legend mentions "error" in prose).
fn error_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains(" ERROR ") || l.contains("error:") || l.contains("Error:") || l.contains("CANCELLED"))
        .collect()
}

fn job_out(run: &Path, id: u64) -> PathBuf {
    run.join(format!("slurm-{id}.out"))
}

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
    let id = slurm.submit_with(&cfg, &[("TLS", "1")]);
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

/// A run that was interrupted and resumed ended as the uninterrupted one: every iteration's
/// fingerprints, and the same trajectory rows, none twice.
fn same_run(a: &Path, other: &Path, straight: &[serde_json::Value], rows_a: &[(String, Vec<airlift_proto::trajectory::TrajectoryRow>)]) {
    let recs = records(other);
    assert_eq!(recs.len(), straight.len(), "{}: one record per iteration", other.display());
    for (x, y) in straight.iter().zip(&recs) {
        assert_eq!(fingerprints(x), fingerprints(y), "{} iteration {}", other.display(), x["iteration"]);
    }
    let rows = rows_without_timings(other);
    assert_eq!(
        rows.iter().map(|f| &f.0).collect::<Vec<_>>(),
        rows_a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        "{} vs {}",
        other.display(),
        a.display()
    );
    for (fa, fo) in rows_a.iter().zip(&rows) {
        let key = |rows: &Vec<airlift_proto::trajectory::TrajectoryRow>| {
            rows.iter()
                .map(|r| (r.prompt_id, r.sample_index, r.source.clone(), r.response_tokens.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&fa.1), key(&fo.1), "{}", fa.0);
    }
}
