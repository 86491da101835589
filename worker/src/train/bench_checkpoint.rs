//! `worker bench-checkpoint`: checkpoint write and load times of a real model's learner state
//! (the policy and an 8-layer reward model, parameters and AdamW moments, as the learners hold
//! them) with 1, 2, … ranks, against a dd-style sequential write + fsync of the same number of
//! bytes on the same disk, measured in the same run. Prints numbers; asserts nothing.
//!
//! Ranks are simulated in one process: each has its own models and optimizer slice, and the
//! ranks write (and load) at the same time from one thread each, as learner processes would.
//! Loads run right after the writes, so they read mostly from the page cache.

use super::checkpoint::{load, save_shard, ModelState};
use super::optim::{AdamWConfig, FlatAdamW};
use crate::airl::reward::RewardModel;
use crate::model;
use airlift_proto::checkpoint as ckpt;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind};

struct Rank {
    policy: model::LoadedModel,
    reward: RewardModel,
    p_opt: FlatAdamW,
    r_opt: FlatAdamW,
}

fn rank_state(model_dir: &Path, reward_layers: usize, rank: usize, world: usize) -> anyhow::Result<Rank> {
    let policy = model::load(model_dir, Device::Cpu, Kind::Float)?;
    let reward = RewardModel::from_base(model_dir, Some(reward_layers), Device::Cpu, 0)?;
    let mut p_opt = FlatAdamW::sharded(&policy.vs, AdamWConfig::default(), rank, world);
    let mut r_opt = FlatAdamW::sharded(&reward.vs, AdamWConfig::default(), rank, world);
    // Non-zero moments, as after training (one step on a made-up gradient).
    for opt in [&mut p_opt, &mut r_opt] {
        let g = opt.flat().sin() * 1e-3;
        opt.step_with(&g);
    }
    Ok(Rank { policy, reward, p_opt, r_opt })
}

/// Sequential write of `bytes` bytes in 4 MiB blocks, then fsync: seconds.
fn dd_write(path: &Path, bytes: u64) -> anyhow::Result<f64> {
    let block: Vec<u8> = (0..4usize << 20).map(|i| (i * 131 % 251) as u8).collect();
    let t = Instant::now();
    let mut f = std::fs::File::create(path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    let s = t.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok(s)
}

/// Runs the benchmark for each rank count in `worlds`, writing under `dir`.
pub fn run(model_dir: &Path, reward_layers: usize, worlds: &[usize], dir: &Path) -> anyhow::Result<()> {
    println!(
        "checkpoint benchmark: {} (policy + {reward_layers}-layer reward, fp32 parameters + AdamW m, v), folder {}",
        model_dir.display(),
        dir.display()
    );
    println!(
        "{:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "ranks", "MB", "write s", "MB/s", "verify s", "MB/s", "load s", "MB/s", "dd s", "dd MB/s"
    );
    for &world in worlds {
        let mut ranks = (0..world)
            .map(|r| rank_state(model_dir, reward_layers, r, world))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let step = dir.join(format!("bench-{world}"));
        let _ = std::fs::remove_dir_all(&step);
        std::fs::create_dir_all(&step)?;
        let t = Instant::now();
        let written: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = ranks
                .iter_mut()
                .enumerate()
                .map(|(r, st)| {
                    let step = step.clone();
                    s.spawn(move || {
                        let models = [
                            ModelState {
                                name: "policy",
                                vs: &st.policy.vs,
                                opt: &mut st.p_opt,
                            },
                            ModelState {
                                name: "reward",
                                vs: &st.reward.vs,
                                opt: &mut st.r_opt,
                            },
                        ];
                        save_shard(&step, r, world, &models)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("writer thread")).collect()
        });
        let write_s = t.elapsed().as_secs_f64();
        let written = written.into_iter().collect::<Result<Vec<_>, _>>()?;
        let bytes: u64 = written.iter().map(|w| w.file.bytes).sum();
        let m = ckpt::Manifest {
            format_version: ckpt::FORMAT_VERSION,
            airlift_version: env!("CARGO_PKG_VERSION").into(),
            run_name: "bench".into(),
            iteration: 0,
            policy_version: 0,
            world_size: world as u32,
            created_unix_s: 0,
            layouts: written[0].layouts.clone(),
            optimizer_steps: written[0].optimizer_steps.clone(),
            files: written.iter().map(|w| w.file.clone()).collect(),
            rng: ckpt::RngState {
                run_seed: 0,
                learners: String::new(),
                rollouts: String::new(),
            },
            data: ckpt::DataFrontier {
                prompts_trained: 0,
                sft_prompts: [0, 0],
                reward_warm_prompts: [0, 0],
                next_task_id: 0,
            },
            config_sha256: String::new(),
            config_may_differ: Vec::new(),
            config_toml: String::new(),
        };
        ckpt::write_manifest(&step, &m)?;
        let t = Instant::now();
        let m = ckpt::verify(&step, None)?;
        let verify_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let loaded: Vec<Result<(), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = ranks
                .iter_mut()
                .map(|st| {
                    let (step, m) = (step.clone(), &m);
                    s.spawn(move || {
                        let mut models = [
                            ModelState {
                                name: "policy",
                                vs: &st.policy.vs,
                                opt: &mut st.p_opt,
                            },
                            ModelState {
                                name: "reward",
                                vs: &st.reward.vs,
                                opt: &mut st.r_opt,
                            },
                        ];
                        load(&step, m, &mut models)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("loader thread")).collect()
        });
        let load_s = t.elapsed().as_secs_f64();
        for r in loaded {
            r.map_err(anyhow::Error::msg)?;
        }
        let dd_s = dd_write(&step.join("dd.bin"), bytes)?;
        let mb = bytes as f64 / 1e6;
        println!(
            "{world:>6} {mb:>9.1} {write_s:>9.2} {:>9.0} {verify_s:>9.2} {:>9.0} {load_s:>9.2} {:>9.0} {dd_s:>9.2} {:>9.0}",
            mb / write_s,
            mb / verify_s,
            mb / load_s,
            mb / dd_s
        );
        std::fs::remove_dir_all(&step)?;
    }
    println!("write: every rank writes and fsyncs its shard at once (SHA-256 computed while writing); verify: the");
    println!("coordinator's size + SHA-256 check of every file before a resume; load: every rank reads all parameters");
    println!("and its slice of the moments (mostly from the page cache here); dd: one sequential write + fsync of the same bytes.");
    Ok(())
}
