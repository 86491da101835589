//! CPU learning checks of the AIRL machinery on a tiny random model with the SmolLM2 tokenizer:
//! the discriminator learns to tell synthetic experts from an untrained policy's samples on
//! held-out problems, and a PPO update moves a trace's log-probability in the sign of its
//! advantage.

mod common;

use airlift_worker::airl::corrupt::{self, first_error_token, KINDS};
use airlift_worker::airl::iteration::{AirlConfig, IterationBatch, Learner, NoReduce, Sample};
use airlift_worker::airl::losses::DiscriminatorForm;
use airlift_worker::airl::reward::RewardModel;
use airlift_worker::airl::synth::{self, Split, SynthConfig};
use airlift_worker::collective::local_rings;
use airlift_worker::generate::{generate, SamplingParams};
use airlift_worker::model;
use airlift_worker::rng::SplitMix64;
use airlift_worker::tokenizer::Tokenizer;
use airlift_worker::train::data_parallel::{DataParallel, GradReducer};
use airlift_worker::train::optim::{AdamWConfig, FlatAdamW};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const EOS: u32 = 2;

/// A tiny random Llama with SmolLM2's vocabulary, written as a Hugging Face folder.
fn tiny_policy_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlift-tiny-{tag}-{}", std::process::id()));
    model::write_tiny_llama(&dir, &common::smollm2_dir(), 0).unwrap();
    dir
}

fn learner(dir: &std::path::Path, policy_lr: f64, reward_lr: f64) -> Learner {
    let p = model::load(dir, Device::Cpu, Kind::Float).unwrap();
    let policy_opt = FlatAdamW::new(
        &p.vs,
        AdamWConfig {
            lr: policy_lr,
            ..Default::default()
        },
    );
    let reward = RewardModel::from_base(dir, None, Device::Cpu, 1).unwrap();
    let reward_opt = FlatAdamW::new(
        &reward.vs,
        AdamWConfig {
            lr: reward_lr,
            ..Default::default()
        },
    );
    Learner {
        policy: p.model,
        policy_opt,
        reference: None,
        reward,
        reward_opt,
    }
}

/// The expert trace of each problem (question as prompt, answer + EOS as response), group = its index.
fn expert_samples(tok: &Tokenizer, problems: &[synth::SynthProblem]) -> Vec<Sample> {
    problems
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut response = tok.encode(&p.problem.answer).unwrap();
            response.push(EOS);
            Sample {
                prompt: tok.encode(&p.problem.question).unwrap(),
                response,
                group: i as i64,
                ..Default::default()
            }
        })
        .collect()
}

/// Experts, one corruption each, and `g` policy samples per problem.
fn batch(l: &Learner, tok: &Tokenizer, problems: &[synth::SynthProblem], g: usize, seed: u64) -> IterationBatch {
    let mut b = IterationBatch::default();
    let mut rng = SplitMix64::new(seed);
    let mut prompts = Vec::new();
    for (i, p) in problems.iter().enumerate() {
        let prompt = tok.encode(&format!("{}\n", p.problem.question)).unwrap();
        let mut response = tok.encode(&p.problem.answer).unwrap();
        response.push(EOS);
        b.experts.push(Sample {
            prompt: prompt.clone(),
            response,
            group: i as i64,
            ..Default::default()
        });
        let c = corrupt::corrupt(&p.problem.answer, KINDS[i % 3], &mut rng).unwrap();
        let (mut ids, offsets) = tok.encode_with_offsets(&c.text).unwrap();
        ids.push(EOS);
        b.corrupted.push(Sample {
            prompt: prompt.clone(),
            response: ids,
            group: i as i64,
            first_error_token: Some(first_error_token(&offsets, c.first_error_byte)),
            ..Default::default()
        });
        for _ in 0..g {
            prompts.push((i, prompt.clone()));
        }
    }
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: 40,
        seed,
        ..Default::default()
    };
    let ps: Vec<Vec<u32>> = prompts.iter().map(|p| p.1.clone()).collect();
    let out = generate(&l.policy, &ps, &[EOS as i64], EOS as i64, &params);
    for ((i, prompt), c) in prompts.into_iter().zip(out.completions) {
        b.policy.push(Sample {
            prompt,
            response: c.tokens,
            group: i as i64,
            behaviour_logprobs: Some(c.logprobs),
            correct: Some(false),
            ..Default::default()
        });
    }
    b
}

#[test]
fn discriminator_separates_experts_from_an_untrained_policy_on_held_out_problems() {
    let start = std::time::Instant::now();
    let tok = Tokenizer::from_dir(&common::smollm2_dir()).unwrap();
    let dir = tiny_policy_dir("disc");
    // Policy learning rate 0: the policy stays the untrained sampler the test is about.
    let mut l = learner(&dir, 0.0, 3e-3);
    let cfg = AirlConfig {
        discriminator: DiscriminatorForm::Logit,
        disc_steps: 2,
        micro_batch: 16,
        pad_id: EOS as i64,
        ..Default::default()
    };
    let synth_cfg = SynthConfig::default();
    let train = synth::dataset(&synth_cfg, 1, 96, Split::Train);
    let held_out = synth::dataset(&synth_cfg, 1, 24, Split::Eval);
    let eval_batch = batch(&l, &tok, &held_out, 2, 99);
    let before = l.rewards(&eval_batch, &cfg).aurocs(&eval_batch);
    for (it, chunk) in train.chunks(8).enumerate() {
        let b = batch(&l, &tok, chunk, 2, it as u64);
        let m = l.iteration(&b, &cfg, &mut NoReduce);
        println!(
            "iter {it:>2}: disc loss {:.4} -> {:.4}, train AUROC expert/policy {:.3}, expert/corrupted {:.3}",
            m.disc_loss_first, m.disc_loss, m.auroc_expert_policy_seq, m.auroc_expert_corrupted_seq
        );
    }
    let after = l.rewards(&eval_batch, &cfg).aurocs(&eval_batch);
    println!("held-out AUROC before: {before:.3?}");
    println!("held-out AUROC after:  {after:.3?}");
    println!("took {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        after.expert_policy_seq > 0.9,
        "held-out sequence AUROC expert vs policy {:.3}",
        after.expert_policy_seq
    );
    assert!(after.expert_corrupted_seq.is_finite() && after.expert_corrupted_paired.is_finite());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ppo_update_follows_the_sign_of_the_advantage() {
    let dir = tiny_policy_dir("ppo");
    let cfg = AirlConfig {
        pad_id: EOS as i64,
        ..Default::default()
    };
    for sign in [1.0f32, -1.0] {
        let mut l = learner(&dir, 1e-3, 0.0);
        let sample = Sample {
            prompt: vec![10, 20, 30, 40],
            response: vec![500, 600, 700, 800, 900],
            group: 0,
            ..Default::default()
        };
        let lp0 = l.response_token_logprobs(std::slice::from_ref(&sample), cfg.pad_id)[0].clone();
        let with_behaviour = Sample {
            behaviour_logprobs: Some(lp0.iter().map(|&x| x as f32).collect()),
            ..sample.clone()
        };
        let m = l.policy_update(std::slice::from_ref(&with_behaviour), &[vec![sign; 5]], &[], &cfg, &mut NoReduce);
        let lp1 = l.response_token_logprobs(std::slice::from_ref(&sample), cfg.pad_id)[0].clone();
        let (s0, s1): (f64, f64) = (lp0.iter().sum(), lp1.iter().sum());
        println!(
            "advantage {sign:+}: log p(trace) {s0:.4} -> {s1:.4} (policy loss {:.4}, clip fraction {})",
            m.policy_loss, m.clip_fraction
        );
        assert!(if sign > 0.0 { s1 > s0 + 1e-3 } else { s1 < s0 - 1e-3 }, "advantage {sign}: {s0} -> {s1}");
        assert_eq!(m.clip_fraction, 0.0, "first step from the behaviour policy is unclipped");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sft_steps_raise_the_likelihood_of_expert_traces() {
    let tok = Tokenizer::from_dir(&common::smollm2_dir()).unwrap();
    let dir = tiny_policy_dir("sft");
    let mut l = learner(&dir, 1e-2, 0.0);
    let cfg = AirlConfig {
        pad_id: EOS as i64,
        micro_batch: 4,
        ..Default::default()
    };
    let experts = expert_samples(&tok, &synth::dataset(&SynthConfig::default(), 2, 8, Split::Train));
    let losses: Vec<f64> = (0..5).map(|_| l.sft_step(&experts, &cfg, &mut NoReduce)).collect();
    println!("sft loss by step: {losses:?}");
    assert!(losses[4] < losses[0] - 0.5, "{losses:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `policy.sft_coef`: with zero advantages the PPO term has no gradient, so a policy step with
/// the replay term at weight 1 is exactly an SFT step on the same experts; at weight 0 the
/// experts' likelihood does not move.
#[test]
fn the_replay_term_is_an_sft_step_when_advantages_are_zero() {
    let tok = Tokenizer::from_dir(&common::smollm2_dir()).unwrap();
    let dir = tiny_policy_dir("replay");
    let experts = expert_samples(&tok, &synth::dataset(&SynthConfig::default(), 3, 6, Split::Train));
    let sample = Sample {
        prompt: vec![10, 20, 30, 40],
        response: vec![500, 600, 700, 800, 900],
        group: 0,
        ..Default::default()
    };
    let lp_of = |l: &Learner, rows: &[Sample]| -> f64 { l.response_token_logprobs(rows, EOS as i64).iter().flatten().sum() };
    let run = |coef: f64| {
        let mut l = learner(&dir, 1e-2, 0.0);
        let lp0 = l.response_token_logprobs(std::slice::from_ref(&sample), EOS as i64)[0].clone();
        let s = Sample {
            behaviour_logprobs: Some(lp0.iter().map(|&x| x as f32).collect()),
            ..sample.clone()
        };
        let cfg = AirlConfig {
            pad_id: EOS as i64,
            micro_batch: 4,
            sft_coef: coef,
            ..Default::default()
        };
        let m = l.policy_update(std::slice::from_ref(&s), &[vec![0.0; 5]], &experts, &cfg, &mut NoReduce);
        (lp_of(&l, &experts), m.expert_nll)
    };
    let (with, nll) = run(1.0);
    let (without, nll0) = run(0.0);
    let mut sft = learner(&dir, 1e-2, 0.0);
    let before = lp_of(&sft, &experts);
    let sft_loss = sft.sft_step(
        &experts,
        &AirlConfig {
            pad_id: EOS as i64,
            micro_batch: 4,
            ..Default::default()
        },
        &mut NoReduce,
    );
    let after_sft = lp_of(&sft, &experts);
    println!("experts' log-likelihood: start {before:.4}, replay 1 {with:.4}, replay 0 {without:.4}, SFT step {after_sft:.4}; nll {nll:.6} vs sft loss {sft_loss:.6}");
    assert!((with - after_sft).abs() < 1e-3 * after_sft.abs(), "replay step {with} vs SFT step {after_sft}");
    assert!(with > before + 1.0, "the replay term raises the experts' likelihood: {before} -> {with}");
    assert!(
        (without - before).abs() < 0.05 * (with - before),
        "without the term the experts barely move: {before} -> {without}"
    );
    assert!((nll - sft_loss).abs() < 1e-6 * sft_loss, "expert_nll {nll} is the SFT loss {sft_loss}");
    assert_eq!(nll0, 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A reducer that keeps a copy of every gradient it hands to the optimizer.
struct Recording<R: GradReducer> {
    inner: R,
    grads: Vec<Tensor>,
}

impl<R: GradReducer> GradReducer for Recording<R> {
    fn all_reduce_mean(&mut self, grad: &mut Tensor) {
        self.inner.all_reduce_mean(grad);
        self.grads.push(grad.copy());
    }
    fn mean_scalar(&mut self, x: f64) -> f64 {
        self.inner.mean_scalar(x)
    }
    fn gather_params(&mut self, opt: &FlatAdamW) {
        self.inner.gather_params(opt)
    }
}

/// A learner as rank `rank` of `world` holds it (ZeRO-1: its optimizer steps its own shard).
fn sharded_learner(dir: &std::path::Path, rank: usize, world: usize) -> Learner {
    let p = model::load(dir, Device::Cpu, Kind::Float).unwrap();
    let policy_opt = FlatAdamW::sharded(
        &p.vs,
        AdamWConfig {
            lr: 1e-3,
            ..Default::default()
        },
        rank,
        world,
    );
    let reward = RewardModel::from_base(dir, None, Device::Cpu, 1).unwrap();
    let reward_opt = FlatAdamW::sharded(
        &reward.vs,
        AdamWConfig {
            lr: 1e-3,
            ..Default::default()
        },
        rank,
        world,
    );
    Learner {
        policy: p.model,
        policy_opt,
        reference: None,
        reward,
        reward_opt,
    }
}

/// Two learners, each on half the rows, take the step one learner takes on all of them: the
/// gradient they apply is the whole batch's (averaged over replicas and normalised by the token
/// count of all rows, not summed, not each half's own token mean), and the parameters after the
/// sharded step and all-gather are the one learner's. Checked for an SFT step and a PPO step,
/// on rows of different lengths.
#[test]
fn two_learners_step_like_one_on_the_same_rows() {
    let tok = Tokenizer::from_dir(&common::smollm2_dir()).unwrap();
    let dir = tiny_policy_dir("dp");
    let cfg = AirlConfig {
        pad_id: EOS as i64,
        micro_batch: 2,
        ..Default::default()
    };
    let rows = expert_samples(
        &tok,
        &synth::dataset(
            &SynthConfig {
                min_steps: 1,
                max_steps: 5,
                ..Default::default()
            },
            4,
            4,
            Split::Train,
        ),
    );
    let lens: Vec<usize> = rows.iter().map(|r| r.response.len()).collect();
    assert_ne!(lens[0] + lens[1], lens[2] + lens[3], "the halves must differ in tokens: {lens:?}");
    // PPO rows: the same traces with their own log-probs as behaviour, advantages of both signs.
    let behaviour = learner(&dir, 0.0, 0.0).response_token_logprobs(&rows, cfg.pad_id);
    let ppo_rows: Vec<Sample> = rows
        .iter()
        .zip(&behaviour)
        .map(|(r, b)| Sample {
            behaviour_logprobs: Some(b.iter().map(|&x| x as f32).collect()),
            ..r.clone()
        })
        .collect();
    let adv: Vec<Vec<f32>> = ppo_rows
        .iter()
        .enumerate()
        .map(|(i, r)| vec![if i % 2 == 0 { 1.0 } else { -0.5 }; r.response.len()])
        .collect();

    let step = |l: &mut Learner, red: &mut dyn GradReducer, idx: std::ops::Range<usize>| {
        l.sft_step(&rows[idx.clone()], &cfg, red);
        l.policy_update(&ppo_rows[idx.clone()], &adv[idx], &[], &cfg, red);
    };
    let mut one = learner(&dir, 1e-3, 1e-3);
    let mut rec = Recording {
        inner: airlift_worker::airl::iteration::NoReduce,
        grads: Vec::new(),
    };
    step(&mut one, &mut rec, 0..4);
    let want_params = one.policy_opt.flat().copy();

    let rings = local_rings(2).unwrap();
    let handles: Vec<_> = rings
        .into_iter()
        .enumerate()
        .map(|(rank, ring)| {
            let (dir, step_rows) = (dir.clone(), (rows.clone(), ppo_rows.clone(), adv.clone()));
            std::thread::spawn(move || {
                let cfg = AirlConfig {
                    pad_id: EOS as i64,
                    micro_batch: 2,
                    ..Default::default()
                };
                let mut l = sharded_learner(&dir, rank, 2);
                let mut red = Recording {
                    inner: DataParallel { coll: Box::new(ring) },
                    grads: Vec::new(),
                };
                let half = rank * 2..rank * 2 + 2;
                l.sft_step(&step_rows.0[half.clone()], &cfg, &mut red);
                l.policy_update(&step_rows.1[half.clone()], &step_rows.2[half], &[], &cfg, &mut red);
                (red.grads, l.policy_opt.flat().copy())
            })
        })
        .collect();
    let got: Vec<(Vec<Tensor>, Tensor)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(rec.grads.len(), 2, "an SFT step and a PPO step");
    let rel = |a: &Tensor, b: &Tensor| (a - b).norm().double_value(&[]) / b.norm().double_value(&[]).max(1e-30);
    for (k, what) in ["SFT", "PPO"].iter().enumerate() {
        for (rank, (grads, _)) in got.iter().enumerate() {
            let e = rel(&grads[k], &rec.grads[k]);
            println!(
                "{what} gradient (norm {:.3e}), rank {rank} of 2 against one learner: relative error {e:.2e}",
                rec.grads[k].norm().double_value(&[])
            );
            assert!(e < 1e-5, "{what} gradient on rank {rank}: relative error {e:e}");
        }
    }
    assert!(got[0].1.equal(&got[1].1), "replicas hold identical parameters");
    let e = (&got[0].1 - &want_params).abs().max().double_value(&[]);
    assert!(e < 1e-6, "parameters after the steps: max abs difference {e:e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `reward.correct_policy_samples`: `ignore` takes the same discriminator step as a batch without
/// the right samples, `positive` the same as a batch with them among the experts, and both differ
/// from `negative` (design §1: every policy sample labelled 0).
#[test]
fn right_policy_samples_are_left_out_or_labelled_expert_as_configured() {
    use airlift_worker::airl::losses::CorrectSamples;
    let tok = Tokenizer::from_dir(&common::smollm2_dir()).unwrap();
    let dir = tiny_policy_dir("correct");
    let problems = synth::dataset(&SynthConfig::default(), 3, 3, Split::Train);
    let sampler = learner(&dir, 0.0, 0.0);
    let mut b = batch(&sampler, &tok, &problems, 2, 5);
    for (k, s) in b.policy.iter_mut().enumerate() {
        s.correct = Some(k % 3 == 0);
    }
    let (right, wrong): (Vec<Sample>, Vec<Sample>) = b.policy.iter().cloned().partition(|s| s.correct == Some(true));
    assert_eq!(right.len(), 2);
    // The reward's parameters after one discriminator step on `batch` with `mode`.
    let step = |batch: &IterationBatch, mode: CorrectSamples| -> Tensor {
        let mut l = learner(&dir, 0.0, 1e-3);
        let cfg = AirlConfig {
            discriminator: DiscriminatorForm::Logit,
            correct_policy_samples: mode,
            micro_batch: 64,
            pad_id: EOS as i64,
            ..Default::default()
        };
        l.discriminator_steps(batch, &cfg, 1, &mut NoReduce);
        Tensor::cat(&l.reward.vs.trainable_variables().iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)
    };
    let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    let negative = step(&b, CorrectSamples::Negative);
    let ignore = step(&b, CorrectSamples::Ignore);
    let without = step(
        &IterationBatch {
            policy: wrong.clone(),
            ..b.clone()
        },
        CorrectSamples::Negative,
    );
    let positive = step(&b, CorrectSamples::Positive);
    let as_experts = step(
        &IterationBatch {
            policy: wrong,
            experts: [b.experts.clone(), right].concat(),
            ..b.clone()
        },
        CorrectSamples::Negative,
    );
    // Adam's first step moves a parameter by about ±lr (1e-3): "the same step" allows a tenth of
    // that for the rows' other summation order, "a different step" asks for half of it.
    assert!(diff(&ignore, &without) < 1e-4, "ignore vs without: {}", diff(&ignore, &without));
    assert!(diff(&positive, &as_experts) < 1e-4, "positive vs as experts: {}", diff(&positive, &as_experts));
    assert!(diff(&negative, &ignore) > 5e-4 && diff(&negative, &positive) > 5e-4 && diff(&ignore, &positive) > 5e-4);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The train–inference mismatch: behaviour log-probs off by ±0.3 from the learner's (as a bf16
/// sampler's might be, exaggerated) are measured as `behaviour_kl`; with
/// `policy.behaviour_logprobs = "learner"` PPO's first ratio is exactly 1 all the same.
#[test]
fn behaviour_mismatch_is_measured_and_learner_log_probs_remove_it() {
    let tok = Tokenizer::from_dir(&common::smollm2_dir()).unwrap();
    let dir = tiny_policy_dir("mismatch");
    let problems = synth::dataset(&SynthConfig::default(), 4, 2, Split::Train);
    let sampler = learner(&dir, 0.0, 0.0);
    let mut b = batch(&sampler, &tok, &problems, 2, 9);
    let exact = sampler.response_token_logprobs(&b.policy, EOS as i64);
    for (s, lp) in b.policy.iter_mut().zip(&exact) {
        s.behaviour_logprobs = Some(lp.iter().enumerate().map(|(j, &v)| (v + if j % 2 == 0 { 0.3 } else { -0.3 }) as f32).collect());
    }
    for learner_behaviour in [false, true] {
        // Policy learning rate 0: the PPO step's ratio is the mismatch alone.
        let mut l = learner(&dir, 0.0, 0.0);
        let cfg = AirlConfig {
            discriminator: DiscriminatorForm::Logit,
            learner_behaviour,
            pad_id: EOS as i64,
            ..Default::default()
        };
        let m = l.iteration(&b, &cfg, &mut NoReduce);
        // k3 of ±0.3: e^∓0.3 − 1 ± 0.3, about 0.045 on average; every ratio (e^±0.3) is outside 1 ± 0.2.
        assert!((m.behaviour_kl - 0.0453).abs() < 3e-3, "behaviour_kl {}", m.behaviour_kl);
        assert!(m.behaviour_outside_clip > 0.99, "{}", m.behaviour_outside_clip);
        if learner_behaviour {
            assert!(
                m.approx_kl.abs() < 1e-12 && m.clip_fraction == 0.0,
                "learner log-probs: approx_kl {} clipped {}",
                m.approx_kl,
                m.clip_fraction
            );
        } else {
            assert!(
                (m.approx_kl - m.behaviour_kl).abs() < 1e-6 && m.clip_fraction > 0.0,
                "rollout log-probs: approx_kl {} clipped {}",
                m.approx_kl,
                m.clip_fraction
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
