//! Experiment, not part of the product: how well can the reward model alone learn to rank expert
//! traces above their corruptions? Trains only the discriminator on synthetic experts vs their
//! corruptions (no policy samples) and prints held-out separation every few steps.
//!
//!   cargo run --release --example reward_probe -- configs/default.toml STEPS BATCH EVAL_EVERY
//!
//! Settings come from the config (and AIRLIFT__SECTION__KEY overrides): reward.lr,
//! reward.backbone_layers, reward.corruptions_per_expert, reward.ignore_corrupted_prefix, ...

use airlift_proto::config::RunConfig;
use airlift_worker::airl::iteration::{IterationBatch, Learner, NoReduce};
use airlift_worker::airl::reward::RewardModel;
use airlift_worker::airl::synth::Split;
use airlift_worker::runtime::{airl_config, data::RunData};
use airlift_worker::train::optim::{AdamWConfig, FlatAdamW};
use airlift_worker::{model, tokenizer::Tokenizer};
use std::time::Instant;
use tch::{Device, Kind};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let cfg = RunConfig::load(std::path::Path::new(args.get(1).map_or("configs/default.toml", |s| s.as_str())))?;
    let steps: usize = args.get(2).map_or(Ok(60), |s| s.parse())?;
    let batch_n: u64 = args.get(3).map_or(Ok(8), |s| s.parse())?;
    let every: usize = args.get(4).map_or(Ok(10), |s| s.parse())?;
    tch::set_num_threads(2);
    let compute = if cfg.model.train_dtype == airlift_proto::config::Dtype::Bf16 {
        Kind::BFloat16
    } else {
        Kind::Float
    };
    let mut policy = model::load(&cfg.model.policy, Device::Cpu, Kind::Float)?;
    policy.model.set_compute_kind(compute);
    let tok = Tokenizer::from_dir(&cfg.model.policy)?;
    let mut reward = RewardModel::from_base(
        &cfg.model.policy,
        cfg.reward.backbone_layers.map(|k| k as usize),
        Device::Cpu,
        cfg.run.seed ^ 0x5EED,
    )?;
    reward.set_compute_kind(compute);
    let eos = policy.model.config().eos_token_ids[0];
    let airl = airl_config(&cfg, eos);
    let policy_opt = FlatAdamW::new(&policy.vs, AdamWConfig { lr: 0.0, ..Default::default() });
    let reward_opt = FlatAdamW::new(
        &reward.vs,
        AdamWConfig {
            lr: cfg.reward.lr,
            total_steps: steps as u64,
            ..Default::default()
        },
    );
    let mut l = Learner {
        policy: policy.model,
        policy_opt,
        reference: None,
        reward,
        reward_opt,
    };
    let mut data = RunData::new(&cfg, eos as u32);
    let mut eval = IterationBatch::default();
    for id in 0..48 {
        data.add_expert_and_corruptions(&mut eval, &tok, Split::Eval, id).unwrap();
    }
    let report = |l: &Learner, step: usize, loss: f64, t: f64| {
        let s = l.rewards(&eval, &airl).aurocs(&eval);
        println!(
            "step {step:>4} loss {loss:.4} | held-out exp/cor mean {:.3} min {:.3} pair {:.3} token {:.3} | {t:.0} s",
            s.expert_corrupted_seq, s.expert_corrupted_seq_min, s.expert_corrupted_paired, s.expert_corrupted_tok
        );
    };
    let t0 = Instant::now();
    report(&l, 0, f64::NAN, 0.0);
    for step in 1..=steps {
        let mut b = IterationBatch::default();
        for k in 0..batch_n {
            let id = (step as u64 - 1) * batch_n + k;
            data.add_expert_and_corruptions(&mut b, &tok, Split::Train, id).unwrap();
        }
        let d = l.discriminator_steps(&b, &airl, 1, &mut NoReduce);
        if step % every == 0 {
            report(&l, step, d.loss_last, t0.elapsed().as_secs_f64());
        }
    }
    Ok(())
}
