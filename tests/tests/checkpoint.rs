//! Sharded checkpoints as a user meets them, with whole runs as processes on loopback (tiny
//! model, 2 learners + 2 rollout workers, a checkpoint after every iteration):
//! 1. a run SIGKILLed (whole process group) after iteration 2 and resumed with `--resume`
//!    equals the uninterrupted run: fingerprints, Parquet rows, metrics apart from timings;
//! 2. the same checkpoint resumed on 1 and on 3 learners: the loaded state is the saved state,
//!    and the runs finish with replicas equal to each other;
//! 3. a learner SIGKILLed in the middle of iteration 3 of a `--local` run: the learners restart
//!    from the iteration-2 checkpoint and the run ends where the uninterrupted one does; and
//!    SIGTERM to the coordinator: a checkpoint, exit status 75, `--resume` ends the same;
//! 4. every kind of bad checkpoint is named, skipped by `--resume`, refused by `--resume PATH`;
//! 5. export: the Hugging Face folders load back to the checkpoint's logits and rewards.

use airlift_proto::checkpoint::{self as ckpt, Shards};
use airlift_tests::*;
use airlift_worker::airl::reward::RewardModel;
use airlift_worker::train::checkpoint::{self as wckpt, ModelState};
use airlift_worker::train::flat;
use airlift_worker::train::optim::{AdamWConfig, FlatAdamW};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

const LONG: Duration = Duration::from_secs(300);

fn config(dir: &Path, run: &str, learners: u32) -> PathBuf {
    checkpointed_config(dir, run, learners)
}

/// Every record's learners agree with each other.
fn replicas_equal(run: &Path) {
    for rec in records(run) {
        let f = fingerprints(&rec);
        assert!(f.windows(2).all(|w| w[0] == w[1]), "iteration {}: replicas differ: {f:?}", rec["iteration"]);
    }
}

#[test]
fn resume_and_learner_restart_equal_the_uninterrupted_run() {
    let _one_at_a_time = serial();
    let dir = temp_dir("ckpt-exact");
    tiny_model(&dir.join("model"));

    // The uninterrupted run.
    let a = dir.join("a");
    let (ok, out, err) = coordinator(&["--config", config(&dir, "a", 2).to_str().unwrap(), "--local"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("last checkpoint: ") && out.contains("step-000004"), "{out}");
    let straight = records(&a);
    assert_eq!(straight.len(), 5);

    // 1. Killed (the whole process group) once the iteration-2 checkpoint is written, resumed.
    let b = dir.join("b");
    let cfg_b = config(&dir, "b", 2);
    let (_, _, log) = coordinator_watched(&["--config", cfg_b.to_str().unwrap(), "--local"], LONG, |line, pgid| {
        if line.contains("checkpoint written") && line.contains("iteration=2 ") {
            kill_group(pgid);
        }
    });
    assert!(
        log.contains("checkpoint written") && !log.contains("run complete"),
        "the kill did not land before the end:\n{log}"
    );
    let (ok, out, err) = coordinator(&["--config", cfg_b.to_str().unwrap(), "--local", "--resume"]);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("resuming from") && err.contains("step-000002"), "{err}");
    let resumed = records(&b);
    assert_eq!(resumed.len(), straight.len());
    for (x, y) in straight.iter().zip(&resumed) {
        assert_eq!(fingerprints(x), fingerprints(y), "iteration {}", x["iteration"]);
        assert_eq!(without_timings(x), without_timings(y), "iteration {}", x["iteration"]);
    }
    let (ra, rb) = (rows_without_timings(&a), rows_without_timings(&b));
    assert_eq!(ra.iter().map(|f| &f.0).collect::<Vec<_>>(), rb.iter().map(|f| &f.0).collect::<Vec<_>>());
    for (fa, fb) in ra.iter().zip(&rb) {
        assert_eq!(fa.1, fb.1, "{}", fa.0);
    }
    // TensorBoard's reader sees metrics.jsonl's numbers, each step once, also after the resume.
    check_tensorboard(&a);
    check_tensorboard(&b);

    // 3. Learner 1 killed while iteration 3 is being learned: restarted from the iteration-2
    // checkpoint, the run ends with the uninterrupted run's parameters.
    let c = dir.join("c");
    let mut killed = false;
    let (ok, out, log) = coordinator_watched(&["--config", config(&dir, "c", 2).to_str().unwrap(), "--local"], LONG, |line, _| {
        if !killed && line.contains("learning") && line.contains("iteration=3") {
            kill_worker(&c, "learner-1");
            killed = true;
        }
    });
    assert!(killed, "{log}");
    assert!(ok, "the run did not survive the learner's death:\n{out}\n{log}");
    assert!(
        out.contains("learners restarted 1 time(s)") && out.contains("from the iteration-2 checkpoint, redid iterations [3]"),
        "{out}"
    );
    let after = records(&c);
    assert_eq!(after.len(), straight.len(), "one record per iteration, none twice");
    assert_eq!(fingerprints(after.last().unwrap()), fingerprints(straight.last().unwrap()));
    check_tensorboard(&c);
    for (x, y) in straight.iter().zip(&after) {
        assert_eq!(fingerprints(x), fingerprints(y), "iteration {}", x["iteration"]);
    }
    // Rows of the redone iteration were written once (their task ids are new ones).
    let rc = rows_without_timings(&c);
    assert_eq!(rc.len(), ra.len());
    for (fa, fc) in ra.iter().zip(&rc) {
        let strip = |rows: &Vec<airlift_proto::trajectory::TrajectoryRow>| {
            rows.iter()
                .map(|r| (r.prompt_id, r.sample_index, r.source.clone(), r.response_tokens.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&fa.1), strip(&fc.1), "{}", fa.0);
    }

    // SIGTERM to the coordinator alone (what Slurm's preemption warning does) while iteration 2
    // is learned, in a run that checkpoints only at its end: `status --run` works while it
    // runs; iteration 2 finishes, a checkpoint is written, the workers exit, the coordinator
    // exits with 75; `--resume` then ends where the uninterrupted run does.
    let d = dir.join("d");
    let cfg_d = dir.join("d.toml");
    std::fs::write(&cfg_d, std::fs::read_to_string(config(&dir, "d", 2)).unwrap().replace("every = 1", "every = 0")).unwrap();
    let mut status = String::new();
    let mut signalled = false;
    let (ok, out, log) = coordinator_watched(&["--config", cfg_d.to_str().unwrap(), "--local"], LONG, |line, pgid| {
        if status.is_empty() && line.contains("learning") && line.contains("iteration=1") {
            let (_, o, e) = coordinator(&["status", "--run", d.to_str().unwrap()]);
            status = format!("{o}{e}");
        }
        if !signalled && line.contains("learning") && line.contains("iteration=2") {
            assert!(std::process::Command::new("kill")
                .args(["-TERM", &pgid.to_string()])
                .status()
                .unwrap()
                .success());
            signalled = true;
        }
    });
    assert!(status.contains("state running") && status.contains("ROLE_LEARNER"), "{status}");
    assert!(signalled && !ok, "{log}");
    assert!(
        log.contains("stopping: checkpoint before exit") && out.contains("run stopped (SIGTERM)"),
        "{out}\n{log}"
    );
    assert!(ckpt::verify(&ckpt::step_dir(&d, 2), None).is_ok(), "{log}");
    let (ok, out, err) = coordinator(&["--config", cfg_d.to_str().unwrap(), "--local", "--resume"]);
    assert!(ok, "{out}\n{err}");
    let after = records(&d);
    assert_eq!(after.len(), straight.len());
    for (x, y) in straight.iter().zip(&after) {
        assert_eq!(fingerprints(x), fingerprints(y), "iteration {}", x["iteration"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The state a rank of `world` loads from `dir`, for both models: (full params, moments slice).
fn loaded_state(model: &Path, dir: &Path, rank: usize, world: usize) -> Vec<(Vec<f32>, Vec<f32>, Vec<f32>, u64)> {
    let m = ckpt::verify(dir, None).unwrap();
    let policy = airlift_worker::model::load(model, Device::Cpu, Kind::Float).unwrap();
    let reward = RewardModel::from_base(model, None, Device::Cpu, 0).unwrap();
    let mut p_opt = FlatAdamW::sharded(&policy.vs, AdamWConfig::default(), rank, world);
    let mut r_opt = FlatAdamW::sharded(&reward.vs, AdamWConfig::default(), rank, world);
    let mut models = [
        ModelState {
            name: "policy",
            vs: &policy.vs,
            opt: &mut p_opt,
        },
        ModelState {
            name: "reward",
            vs: &reward.vs,
            opt: &mut r_opt,
        },
    ];
    wckpt::load(dir, &m, &mut models).unwrap();
    models
        .iter()
        .map(|s| {
            let (mm, vv) = s.opt.moments();
            (flat::values(s.vs), mm, vv, s.opt.steps_taken())
        })
        .collect()
}

/// A saved vector as written, read straight from the shard files (not through `Shards`).
fn saved(dir: &Path, name: &str) -> Vec<f32> {
    let m = ckpt::read_manifest(dir).unwrap();
    let mut out = Vec::new();
    for r in 0..m.world_size {
        let bytes = std::fs::read(dir.join(ckpt::shard_name(r, m.world_size))).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        out.extend(
            st.tensor(name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    out
}

#[test]
fn a_checkpoint_of_two_learners_resumes_on_one_and_on_three() {
    let _one_at_a_time = serial();
    let dir = temp_dir("ckpt-reshard");
    tiny_model(&dir.join("model"));
    let (ok, out, err) = coordinator(&["--config", config(&dir, "a", 2).to_str().unwrap(), "--local"]);
    assert!(ok, "{out}\n{err}");
    let step2 = ckpt::step_dir(&dir.join("a"), 2);
    let m = ckpt::read_manifest(&step2).unwrap();
    assert_eq!(m.world_size, 2);

    // Loaded state equals the saved state exactly, on 1 and on 3 ranks.
    for world in [1usize, 3] {
        let mut moments = vec![(Vec::new(), Vec::new()); 2];
        for rank in 0..world {
            let got = loaded_state(&dir.join("model"), &step2, rank, world);
            for (k, model) in ["policy", "reward"].iter().enumerate() {
                assert_eq!(
                    got[k].0,
                    saved(&step2, &format!("{model}.param")),
                    "{model} parameters on rank {rank} of {world}"
                );
                assert_eq!(got[k].3, m.optimizer_steps[*model]);
                moments[k].0.extend_from_slice(&got[k].1);
                moments[k].1.extend_from_slice(&got[k].2);
            }
        }
        for (k, model) in ["policy", "reward"].iter().enumerate() {
            assert_eq!(
                moments[k].0,
                saved(&step2, &format!("{model}.adam_m")),
                "{model} first moments over {world} ranks"
            );
            assert_eq!(
                moments[k].1,
                saved(&step2, &format!("{model}.adam_v")),
                "{model} second moments over {world} ranks"
            );
        }
    }

    // And whole runs continue from it on 1 and on 3 learners, replicas equal.
    for learners in [1u32, 3] {
        let run = format!("r{learners}");
        let cfg = config(&dir, &run, learners);
        std::fs::create_dir_all(dir.join(&run)).unwrap();
        let (ok, out, err) = coordinator(&["--config", cfg.to_str().unwrap(), "--local", "--resume", step2.to_str().unwrap()]);
        assert!(ok, "{learners} learners:\n{out}\n{err}");
        let recs = records(&dir.join(&run));
        assert_eq!(
            recs.iter().map(|r| r["iteration"].as_u64().unwrap()).collect::<Vec<_>>(),
            [3, 4],
            "{learners} learners"
        );
        assert!(recs.iter().all(|r| r["learners"].as_array().unwrap().len() == learners as usize));
        replicas_equal(&dir.join(&run));
        let log = std::fs::read_to_string(dir.join(&run).join("logs").join("learner-0.log")).unwrap();
        assert!(log.contains("resumed from checkpoint") && log.contains("saved_by=2"), "{log}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_checkpoints_are_named_skipped_and_refused() {
    let _one_at_a_time = serial();
    let dir = temp_dir("ckpt-bad");
    tiny_model(&dir.join("model"));
    let cfg = config(&dir, "a", 2);
    let (ok, out, err) = coordinator(&["--config", cfg.to_str().unwrap(), "--local"]);
    assert!(ok, "{out}\n{err}");
    let run = dir.join("a");
    let hash = airlift_proto::config::RunConfig::load(&cfg).unwrap().resume_hash();
    let newest = ckpt::step_dir(&run, 4);
    let pristine = dir.join("pristine");
    copy_dir(&newest, &pristine);
    let shard1 = ckpt::shard_name(1, 2);
    type Damage = fn(&Path, &str);
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "flipped byte",
            |d, s| {
                let p = d.join(s);
                let mut b = std::fs::read(&p).unwrap();
                let i = b.len() / 2;
                b[i] ^= 0x40;
                std::fs::write(&p, b).unwrap();
            },
            "SHA-256",
        ),
        (
            "truncated file",
            |d, s| {
                let p = d.join(s);
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() - 100]).unwrap();
            },
            "the manifest says",
        ),
        ("missing shard", |d, s| std::fs::remove_file(d.join(s)).unwrap(), "missing or unreadable"),
        (
            "missing manifest (a half-written folder)",
            |d, _| std::fs::remove_file(d.join(ckpt::MANIFEST)).unwrap(),
            "no manifest.json",
        ),
        (
            "malformed manifest",
            |d, _| {
                let p = d.join(ckpt::MANIFEST);
                let t = std::fs::read_to_string(&p).unwrap();
                std::fs::write(&p, &t[..t.len() / 2]).unwrap();
            },
            "not a valid manifest",
        ),
        (
            "another run's config",
            |d, _| {
                let p = d.join(ckpt::MANIFEST);
                let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                m["config_sha256"] = "0".repeat(64).into();
                std::fs::write(&p, m.to_string()).unwrap();
            },
            "another config",
        ),
    ];
    for (what, damage, expect) in cases {
        let _ = std::fs::remove_dir_all(&newest);
        copy_dir(&pristine, &newest);
        damage(&newest, &shard1);
        // Named: the checks say which file and what was expected.
        let e = ckpt::verify(&newest, Some(&hash)).unwrap_err().to_string();
        assert!(e.contains(expect) && e.contains(newest.to_str().unwrap()), "{what}: {e}");
        // `--resume` skips it for the previous valid checkpoint and says so.
        let choice = ckpt::newest_valid(&run, Some(&hash));
        assert_eq!(choice.chosen.as_ref().map(|c| c.1.iteration), Some(3), "{what}");
        assert!(choice.skipped.len() == 1 && choice.skipped[0].1.to_string().contains(expect), "{what}");
        // `--resume PATH` on it is an error, before any worker starts.
        let (ok, out, err) = coordinator(&["--config", cfg.to_str().unwrap(), "--local", "--resume", newest.to_str().unwrap()]);
        assert!(!ok && err.contains(expect) && err.contains("--resume"), "{what}: {out}\n{err}");
        assert!(!err.contains("worker started"), "{what}: workers started for a bad checkpoint:\n{err}");
    }
    // A whole `--resume` run past a bad newest checkpoint: it takes iteration 3's and says why.
    let (ok, out, err) = coordinator(&["--config", cfg.to_str().unwrap(), "--local", "--resume"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains("skipped") && err.contains("another config") && err.contains("step-000003"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn export_loads_back_to_the_checkpoints_logits_and_rewards() {
    let _one_at_a_time = serial();
    let dir = temp_dir("ckpt-export");
    tiny_model(&dir.join("model"));
    let cfg = config(&dir, "a", 2).to_str().unwrap().to_string();
    let (ok, out, err) = coordinator(&["--config", &cfg, "--local"]);
    assert!(ok, "{out}\n{err}");
    let step = ckpt::step_dir(&dir.join("a"), 4);
    let out_dir = dir.join("export");
    let (ok, out, err) = coordinator(&["export", step.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert!(ok, "{out}\n{err}");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out_dir.join("policy").join(f).exists() && out_dir.join("reward").join(f).exists(), "{f}");
    }

    // The checkpoint's policy and reward: the base models with the saved parameters.
    let m = ckpt::verify(&step, None).unwrap();
    let shards = Shards::open(&step, &m).unwrap();
    let base = airlift_worker::model::load(&dir.join("model"), Device::Cpu, Kind::Float).unwrap();
    flat::load_values(&base.vs, &shards.read("policy", "param", 0, m.layouts["policy"].total).unwrap()).unwrap();
    let base_reward = RewardModel::from_base(&dir.join("model"), None, Device::Cpu, 0).unwrap();
    flat::load_values(&base_reward.vs, &shards.read("reward", "param", 0, m.layouts["reward"].total).unwrap()).unwrap();

    let exported = airlift_worker::model::load(&out_dir.join("policy"), Device::Cpu, Kind::Float).unwrap();
    let exported_reward = RewardModel::load(&out_dir.join("reward"), Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[1i64, 520, 3458, 314, 1782, 30, 216, 17, 15, 19]).view([1, 10]);
    let mask = Tensor::ones([1, 10], (Kind::Int64, Device::Cpu));
    tch::no_grad(|| {
        let want = base.model.forward_right_padded(&ids, &mask);
        let got = exported.model.forward_right_padded(&ids, &mask);
        assert!(want.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        assert!(got.equal(&want), "exported policy logits differ from the checkpoint's");
        let want = base_reward.values(&ids, &mask);
        let got = exported_reward.values(&ids, &mask);
        assert!(got.equal(&want), "exported reward values differ from the checkpoint's");
        // transformers reads the exported reward as its token-classification class and gives
        // the same per-token rewards.
        let want: Vec<f32> = Vec::try_from(want.reshape([-1])).unwrap();
        let hf = hf_token_rewards(&out_dir.join("reward"), &[1, 520, 3458, 314, 1782, 30, 216, 17, 15, 19]);
        assert_eq!(hf["class"], "LlamaForTokenClassification", "{hf}");
        assert!(
            hf["missing_keys"].as_array().unwrap().is_empty() && hf["unexpected_keys"].as_array().unwrap().is_empty(),
            "{hf}"
        );
        let got: Vec<f64> = hf["rewards"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - *w as f64).abs() <= 1e-4 * (1.0 + w.abs() as f64), "transformers {got:?}\nairlift {want:?}");
        }
    });
    let rc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("reward").join("config.json")).unwrap()).unwrap();
    assert_eq!(rc["airlift_reward_model"]["head_weight"], "score.weight");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A full disk is not retried: a `--local` run whose run folder is a 3 MB tmpfs (the tiny model's
/// first checkpoint does not fit) ends at the first checkpoint with the disk named, without
/// spending its restarts on the same full disk. Needs root for the mount (as `make test`'s Slurm
/// tests do); elsewhere it says so and checks nothing.
#[test]
fn a_full_disk_ends_the_run_without_restarts() {
    let _one_at_a_time = serial();
    let dir = temp_dir("ckpt-enospc");
    tiny_model(&dir.join("model"));
    let mnt = dir.join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt.to_str().unwrap()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        let uid = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        assert_ne!(uid, "0", "root could not mount a tmpfs");
        println!("not root: cannot mount a small tmpfs, nothing checked");
        return;
    }
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, tiny_config(&dir.join("model"), &mnt.join("run"), "[checkpoint]\nevery = 1\n")).unwrap();
    let (ok, out, err) = coordinator(&["--config", cfg.to_str().unwrap(), "--local"]);
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert!(!ok, "the run cannot succeed on a full disk:\n{out}\n{err}");
    assert!(err.contains("not retried") && err.contains("ENOSPC"), "{err}");
    assert!(!err.contains("restarting the learners"), "a full disk was retried:\n{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The README's tour: a finished run continued with more iterations
/// (`AIRLIFT__RUN__ITERATIONS=N coordinator --config C --local --resume`) trains only the new
/// ones, appends their records, and its TensorBoard files hold each step once.
#[test]
fn a_finished_run_continues_with_more_iterations() {
    let _one_at_a_time = serial();
    let dir = temp_dir("ckpt-more");
    tiny_model(&dir.join("model"));
    let cfg = config(&dir, "a", 2);
    let (ok, out, err) = coordinator(&["--config", cfg.to_str().unwrap(), "--local"]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(records(&dir.join("a")).len(), 5);
    let more = std::process::Command::new(bin("coordinator"))
        .args(["--config", cfg.to_str().unwrap(), "--local", "--resume"])
        .env("AIRLIFT__RUN__ITERATIONS", "6")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&more.stderr);
    assert!(more.status.success(), "{err}");
    assert!(err.contains("AIRL iterations: 6/6 iterations"), "{err}");
    let recs = records(&dir.join("a"));
    let its: Vec<u64> = recs.iter().map(|r| r["iteration"].as_u64().unwrap()).collect();
    assert_eq!(its, [0, 1, 2, 3, 4, 5, 6]);
    check_tensorboard(&dir.join("a"));
    assert!(ckpt::verify(&ckpt::step_dir(&dir.join("a"), 6), None).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `run.max_restarts` runs out: with 0 restarts allowed, a learner killed mid-run ends the run
/// with the reason, instead of restarting it.
#[test]
fn a_learner_lost_with_no_restarts_left_ends_the_run() {
    let _one_at_a_time = serial();
    let dir = temp_dir("ckpt-norestart");
    tiny_model(&dir.join("model"));
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(config(&dir, "a", 2))
            .unwrap()
            .replace("[run]\n", "[run]\nmax_restarts = 0\n"),
    )
    .unwrap();
    let run = dir.join("a");
    let mut killed = false;
    let (ok, out, log) = coordinator_watched(&["--config", cfg.to_str().unwrap(), "--local"], LONG, |line, _| {
        if !killed && line.contains("learning") && line.contains("iteration=2") {
            kill_worker(&run, "learner-1");
            killed = true;
        }
    });
    assert!(killed, "{log}");
    assert!(!ok, "the run cannot go on without a learner:\n{out}\n{log}");
    assert!(log.contains("already restarted 0 times (run.max_restarts)"), "{log}");
    assert!(!log.contains("restarting the learners from a checkpoint"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `checkpoint.every = 2`, `keep = 2` over 5 iterations: written after the warm start (step 0),
/// iterations 2 and 4 and at the end (5); the newest two stay, and step 0 as well with
/// `keep_warm_start`.
#[test]
fn every_and_keep_choose_the_checkpoints_on_disk() {
    let _one_at_a_time = serial();
    let dir = temp_dir("ckpt-keep");
    tiny_model(&dir.join("model"));
    for (name, warm, want) in [("a", false, vec![4u64, 5]), ("b", true, vec![0, 4, 5])] {
        let extra = format!("[checkpoint]\nevery = 2\nkeep = 2\nkeep_warm_start = {warm}\n");
        let text = tiny_config(&dir.join("model"), &dir.join(name), &extra).replace("iterations = 3", "iterations = 5");
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let (ok, out, err) = coordinator(&["--config", cfg.to_str().unwrap(), "--local"]);
        assert!(ok, "{out}\n{err}");
        let mut on_disk: Vec<u64> = ckpt::step_dirs(&dir.join(name)).into_iter().map(|(s, _)| s).collect();
        on_disk.sort();
        assert_eq!(on_disk, want, "keep_warm_start = {warm}");
        for s in &on_disk {
            assert!(ckpt::verify(&ckpt::step_dir(&dir.join(name), *s), None).is_ok());
        }
        let written = err.matches("checkpoint written").count();
        assert_eq!(written, 4, "steps 0, 2, 4, 5:\n{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `policy.kl_coef > 0`: the KL reference is the policy after the SFT warm start, so the first
/// PPO step of iteration 1 sees (almost) no KL to it; a run stopped after iteration 2 and
/// continued with `--resume` reads the reference back from the warm start's checkpoint, so its
/// iteration 3 sees the KL to the SFT policy, not 0 to a reference re-anchored at the checkpoint.
#[test]
fn the_kl_reference_is_the_sft_policy_and_a_resume_reads_it_back() {
    let _one_at_a_time = serial();
    let dir = temp_dir("ckpt-kl");
    tiny_model(&dir.join("model"));
    let cfg = config(&dir, "a", 1);
    // A large SFT step, so that the SFT policy is far from the base model.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[sft]\n", "[sft]\nlr = 1e-2\n")
        .replace("[checkpoint]\n", "[checkpoint]\nkeep_warm_start = true\n")
        + "[policy]\nkl_coef = 0.5\nlr = 1e-3\n";
    std::fs::write(&cfg, text).unwrap();
    let first = std::process::Command::new(bin("coordinator"))
        .args(["--config", cfg.to_str().unwrap(), "--local"])
        .env("AIRLIFT__RUN__ITERATIONS", "2")
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let more = std::process::Command::new(bin("coordinator"))
        .args(["--config", cfg.to_str().unwrap(), "--local", "--resume"])
        .env("AIRLIFT__RUN__ITERATIONS", "3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&more.stderr);
    assert!(more.status.success(), "{err}");
    let kl: Vec<f64> = records(&dir.join("a"))
        .iter()
        .filter(|r| r["iteration"].as_u64().unwrap() > 0)
        .map(|r| r["learners"][0]["kl_ref"].as_f64().expect("kl_ref"))
        .collect();
    eprintln!("kl_ref by iteration: {kl:?}");
    assert_eq!(kl.len(), 3);
    assert!(
        kl[0].abs() < 1e-4,
        "iteration 1: the reference is not the policy the iterations start from: {kl:?}"
    );
    assert!(
        kl[2] > 1e-4 && kl[2].is_finite(),
        "iteration 3 (resumed): the reference was not read back: {kl:?}"
    );
    // Without the warm start's checkpoint a resume cannot have its reference, and says so.
    std::fs::remove_dir_all(ckpt::step_dir(&dir.join("a"), 0)).unwrap();
    let (ok, _, err) = coordinator(&["--config", cfg.to_str().unwrap(), "--local", "--resume"]);
    assert!(!ok && err.contains("keep_warm_start"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--resume PATH --fork`: a new branch of a run from one of its checkpoints, into another
/// run.dir, whose iterations may use other settings. Forked with nothing else changed it trains
/// what the original trained (same fingerprints); with `policy.advantage = "sequence"` it
/// trains something else; a change to the reward's shape is refused, naming the key.
#[test]
fn a_fork_branches_off_a_checkpoint_with_other_iteration_settings() {
    let _one_at_a_time = serial();
    let dir = temp_dir("ckpt-fork");
    tiny_model(&dir.join("model"));
    let cfg = config(&dir, "a", 1);
    let (ok, out, err) = coordinator(&["--config", cfg.to_str().unwrap(), "--local"]);
    assert!(ok, "{out}\n{err}");
    let step2 = ckpt::step_dir(&dir.join("a"), 2);
    let fork = |name: &str, env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(bin("coordinator"));
        c.args(["--config", cfg.to_str().unwrap(), "--local", "--resume", step2.to_str().unwrap(), "--fork"])
            .env("AIRLIFT__RUN__DIR", dir.join(name));
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let prints = |run: &str| -> Vec<(u64, Vec<(String, String)>)> {
        records(&dir.join(run))
            .iter()
            .filter(|r| r["iteration"].as_u64().unwrap() > 2)
            .map(|r| (r["iteration"].as_u64().unwrap(), fingerprints(r)))
            .collect()
    };
    let (ok, err) = fork("same", &[]);
    assert!(ok, "{err}");
    assert!(err.contains("forking from") && err.contains("changed: run.dir"), "{err}");
    assert_eq!(prints("same"), prints("a"));
    assert_eq!(prints("same").len(), 2);

    let (ok, err) = fork("seq", &[("AIRLIFT__POLICY__ADVANTAGE", "sequence")]);
    assert!(ok, "{err}");
    assert!(err.contains("changed: policy.advantage, run.dir"), "{err}");
    let (a, s) = (prints("a"), prints("seq"));
    assert_eq!(s.len(), 2);
    assert_ne!(a[0].1[0].0, s[0].1[0].0, "the sequence advantages change the policy step");
    assert_eq!(a[0].1[0].1, s[0].1[0].1, "the reward steps before the policy's are the same");

    let (ok, err) = fork("deeper", &[("AIRLIFT__REWARD__BACKBONE_LAYERS", "1")]);
    assert!(!ok && err.contains("reward.backbone_layers") && err.contains("a fork may change only"), "{err}");
    let plain = std::process::Command::new(bin("coordinator"))
        .args(["--config", cfg.to_str().unwrap(), "--local", "--resume", "--fork"])
        .output()
        .unwrap();
    assert!(!plain.status.success() && String::from_utf8_lossy(&plain.stderr).contains("--resume PATH --fork"));
    std::fs::remove_dir_all(&dir).unwrap();
}
