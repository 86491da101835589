//! A real Slurm on this machine for the tests (`cluster/local-slurm.sh`): one node on loopback, or
//! several nodes, each slurmd in its own network namespace with its own address. Jobs are
//! submitted the way the README says (`cluster/submit`), and the helpers read a job's state and
//! output, and do to a node what a cluster does to it (kill it, cut its link).

use crate::{bin, fingerprints, records, rows_without_timings};
use airlift_proto::trajectory::TrajectoryRow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The repository root (cluster scripts are run from there, as a user would).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// A running local Slurm, stopped on drop (also when a check fails): its daemons, and for
/// several nodes their namespaces and bridge.
pub struct Slurm {
    pub dir: PathBuf,
    /// Nodes (1: this host on loopback; more: node1 .. nodeN, 10.77.K.I each).
    pub nodes: u32,
}

impl Slurm {
    /// One node on loopback.
    pub fn start(dir: &Path) -> Slurm {
        Slurm::start_nodes(dir, 1, &[])
    }

    /// `nodes` nodes (more than 1: a network namespace each), with extra environment for
    /// `cluster/local-slurm.sh` (e.g. SLURMD_TIMEOUT).
    pub fn start_nodes(dir: &Path, nodes: u32, env: &[(&str, &str)]) -> Slurm {
        let out = Command::new(repo().join("cluster/local-slurm.sh"))
            .arg("start")
            .arg(dir)
            .env("NODES", nodes.to_string())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let s = Slurm { dir: dir.to_path_buf(), nodes };
        assert!(
            out.status.success(),
            "cluster/local-slurm.sh start failed (needs root or sudo for apt-get, the daemons and namespaces):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        s
    }

    /// A command with this Slurm's config and the built binaries. Workers advertise loopback on
    /// one node, and their own node's `eth0` address (`AIRLIFT_IFACE`) on several.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(repo())
            .env("SLURM_CONF", self.dir.join("slurm.conf"))
            .env("BIN", bin("coordinator").parent().unwrap())
            .env_remove("LEARNERS")
            .env_remove("ROLLOUTS")
            .env_remove("LEARNER_NODES");
        if self.nodes == 1 {
            c.env("AIRLIFT_ADDR", "127.0.0.1").env_remove("AIRLIFT_IFACE");
        } else {
            c.env("AIRLIFT_IFACE", "eth0").env_remove("AIRLIFT_ADDR");
        }
        c
    }

    pub fn run(&self, c: &mut Command) -> (bool, String) {
        let out = c.output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    /// Submits `config` with cluster/submit; returns the job id.
    pub fn submit(&self, config: &Path) -> u64 {
        self.submit_with(config, &[], &[])
    }

    /// [`Slurm::submit`] with extra environment for the job (sbatch exports it) and extra sbatch
    /// options.
    pub fn submit_with(&self, config: &Path, env: &[(&str, &str)], sbatch: &[&str]) -> u64 {
        let mut c = self.cmd("cluster/submit");
        c.arg(config).args(sbatch).envs(env.iter().copied());
        let (ok, text) = self.run(&mut c);
        assert!(ok, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix("Submitted batch job "))
            .unwrap_or_else(|| panic!("{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// `scontrol show job` fields: JobState, ExitCode, Restarts, Reason, NodeList, ...
    pub fn job(&self, id: u64) -> HashMap<String, String> {
        let (_, text) = self.run(self.cmd("scontrol").args(["show", "job", &id.to_string()]));
        text.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Waits until job `id` has ended (not pending or running), calling `on_output` with its
    /// output file's text as it grows. Returns the fields.
    pub fn wait(&self, id: u64, out: &Path, timeout: Duration, mut on_output: impl FnMut(&str)) -> HashMap<String, String> {
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

    /// `cluster/local-slurm.sh ACTION DIR NODE [ARG]`: a fault (or its end) on one node.
    pub fn node(&self, action: &str, node: &str, arg: Option<&str>) {
        let mut c = Command::new(repo().join("cluster/local-slurm.sh"));
        c.arg(action).arg(&self.dir).arg(node).args(arg);
        let (ok, text) = self.run(&mut c);
        assert!(ok, "local-slurm.sh {action} {node}: {text}");
    }

    /// The PIDs of processes on `node` (its network namespace) whose command line contains
    /// `pattern`.
    pub fn pids_on(&self, node: &str, pattern: &str) -> Vec<u32> {
        let network = std::fs::read_to_string(self.dir.join("network")).expect("a cluster of several nodes");
        let prefix = network.lines().find_map(|l| l.strip_prefix("PREFIX=")).unwrap().to_string();
        let (_, text) = self.run(Command::new("ip").args(["netns", "pids", &format!("{prefix}-{node}")]));
        text.split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(pattern))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("cluster/local-slurm.sh")).arg("stop").arg(&self.dir).status();
    }
}

/// Lines of a job's output that report errors (the summary's legend mentions "error" in prose).
pub fn error_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains(" ERROR ") || l.contains("error:") || l.contains("Error:") || l.contains("CANCELLED"))
        .collect()
}

pub fn job_out(run: &Path, id: u64) -> PathBuf {
    run.join(format!("slurm-{id}.out"))
}

/// A run that was interrupted and resumed (or ran elsewhere) ended as the uninterrupted one:
/// every iteration's fingerprints, and the same trajectory rows, none twice.
pub fn same_run(a: &Path, other: &Path, straight: &[serde_json::Value], rows_a: &[(String, Vec<TrajectoryRow>)]) {
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
        let key = |rows: &Vec<TrajectoryRow>| {
            rows.iter()
                .map(|r| (r.prompt_id, r.sample_index, r.source.clone(), r.response_tokens.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&fa.1), key(&fo.1), "{}", fa.0);
    }
}
