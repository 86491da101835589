//! The decode path and the right-padded (mask-free causal) forward against the plain masked
//! forward pass, and continuous batching against generating each sequence alone. (Greedy tokens
//! against transformers are in `smollm2.rs`.)

mod common;

use airlift_worker::generate::{Generator, SamplingParams};
use airlift_worker::model;
use airlift_worker::model::llama::{Config, Llama, RawConfig};
use common::*;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// A small random Qwen2-style model (q/k/v biases, untied head, GQA 4/2), fp32 on the CPU.
fn random_model(seed: i64) -> (VarStore, Llama) {
    let raw: RawConfig = serde_json::from_value(serde_json::json!({
        "model_type": "qwen2", "vocab_size": 97, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rope_theta": 10000.0, "tie_word_embeddings": false
    }))
    .unwrap();
    let cfg: Config = raw.into_config().unwrap();
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let m = Llama::new(&vs.root(), &cfg);
    // Non-zero biases, so that the fused q|k|v bias is exercised.
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.ends_with(".bias") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1));
            }
        }
    });
    (vs, m)
}

fn full_logits(m: &Llama, seq: &[u32]) -> Tensor {
    let t: Vec<i64> = seq.iter().map(|&x| x as i64).collect();
    let ids = Tensor::from_slice(&t).unsqueeze(0);
    tch::no_grad(|| m.forward_padded(&ids, &ids.ones_like())).select(0, 0)
}

#[test]
fn prefill_and_decode_steps_match_the_full_forward_pass() {
    decode_matches_the_full_forward(Kind::Float, 1e-5);
}

/// bf16 weights and activations; on the CPU decode attention runs in fp32 over an fp32 cache
/// (`Llama::decode_attention_kind`), so only bf16 rounding separates it from the bf16 forward.
#[test]
fn bf16_prefill_and_decode_steps_match_the_bf16_full_forward_pass() {
    decode_matches_the_full_forward(Kind::BFloat16, 3e-2);
}

fn decode_matches_the_full_forward(kind: Kind, tol: f64) {
    let (mut vs, mut m) = random_model(7);
    if kind != Kind::Float {
        vs.set_kind(kind);
        m.set_compute_kind(kind);
    }
    let w = m.decode_weights();
    let prompts: Vec<Vec<u32>> = vec![vec![5, 9, 11, 3, 60, 2, 8], vec![42], vec![1, 2, 3, 4]];
    let fed: Vec<Vec<u32>> = vec![vec![17, 4, 90, 33, 6], vec![8, 8, 70, 1, 2], vec![50, 51, 52, 53, 54]];
    let cache = m.new_slot_cache(4, 32);
    // Rows 3, 0, 2 hold the prompts (row 1 stays empty), in an order unlike the prompts'.
    let rows = [3i64, 0, 2];
    let ps: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    let first = tch::no_grad(|| m.prefill_slots(&cache, &rows, &ps, 0));
    for (i, p) in prompts.iter().enumerate() {
        let want = full_logits(&m, p).select(0, p.len() as i64 - 1);
        let err = max_rel_err(&first.select(0, i as i64), &want);
        assert!(err < tol, "prefill of prompt {i}: {err:e}");
    }
    let mut pos: Vec<i64> = vec![0; 4];
    for (i, &r) in rows.iter().enumerate() {
        pos[r as usize] = prompts[i].len() as i64;
    }
    for step in 0..5 {
        let mut ids = vec![0i64; 4];
        for (i, &r) in rows.iter().enumerate() {
            ids[r as usize] = fed[i][step] as i64;
        }
        let ids_t = Tensor::from_slice(&ids).view([4, 1]);
        let pos_t = Tensor::from_slice(&pos);
        // Attend over all columns (as a CUDA graph does) on even steps, the minimum on odd ones.
        let attend = if step % 2 == 0 { 32 } else { pos.iter().max().unwrap() + 1 };
        let logits = tch::no_grad(|| m.decode_step(&w, &cache, &ids_t, &pos_t, attend));
        for (i, &r) in rows.iter().enumerate() {
            let mut seq = prompts[i].clone();
            seq.extend_from_slice(&fed[i][..=step]);
            let want = full_logits(&m, &seq).select(0, seq.len() as i64 - 1);
            let err = max_rel_err(&logits.select(0, r), &want);
            assert!(err < tol, "step {step}, prompt {i}: {err:e}");
        }
        for &r in &rows {
            pos[r as usize] += 1;
        }
    }
}

#[test]
fn fused_weights_follow_in_place_weight_updates() {
    let (vs, m) = random_model(3);
    let mut g = Generator::new(&m, 2);
    let prompts = vec![vec![4u32, 5, 6], vec![7, 8]];
    let p = SamplingParams {
        max_new_tokens: 6,
        ..Default::default()
    };
    let before = g.generate(&m, &prompts, &[], 0, &p);
    // A weight sync copies new values into the same tensors; refresh must pick them up.
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.5));
        }
    });
    g.refresh(&m);
    let after = g.generate(&m, &prompts, &[], 0, &p);
    let fresh = Generator::new(&m, 2).generate(&m, &prompts, &[], 0, &p);
    for i in 0..2 {
        assert_eq!(after.completions[i].tokens, fresh.completions[i].tokens);
        assert_ne!(before.completions[i].tokens, after.completions[i].tokens, "weights changed, tokens did not");
    }
}

/// Each sequence's tokens must not depend on the slots it shared or waited for.
#[test]
fn continuous_batching_gives_each_sequence_what_it_gets_alone() {
    let m = model::load(&smollm2_dir(), Device::Cpu, Kind::Float).unwrap();
    let tok = airlift_worker::tokenizer::Tokenizer::from_dir(&smollm2_dir()).unwrap();
    let texts = ["What is 2 + 3?", "Name a fruit.", "What is 2 + 3?", "Count to five.", "Say hi."];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(&tok.chat_prompt(t)).unwrap()).collect();
    let eos = m.model.config().eos_token_ids.clone();
    for temperature in [0.0, 0.8] {
        let p = SamplingParams {
            temperature,
            max_new_tokens: 10,
            seed: 11,
            ..Default::default()
        };
        // All five at once; two slots refilled as sequences finish; one at a time.
        let all = Generator::new(&m.model, 8).generate(&m.model, &prompts, &eos, 2, &p);
        let two = Generator::new(&m.model, 2).generate(&m.model, &prompts, &eos, 2, &p);
        let one = Generator::new(&m.model, 1).generate(&m.model, &prompts, &eos, 2, &p);
        for i in 0..prompts.len() {
            let (a, b, c) = (&all.completions[i], &two.completions[i], &one.completions[i]);
            assert_eq!(a.tokens, b.tokens, "T={temperature}, sequence {i}: 5 slots vs 2");
            assert_eq!(a.tokens, c.tokens, "T={temperature}, sequence {i}: 5 slots vs 1");
            assert_eq!(a.finish, c.finish);
            for (x, y) in a.logprobs.iter().zip(&c.logprobs) {
                assert!((x - y).abs() < 1e-4, "T={temperature}, sequence {i}: log-prob {x} vs {y}");
            }
            assert!(!a.tokens.is_empty() && a.tokens.len() <= 10);
        }
        // The same prompt twice: greedy gives the same tokens; sampling draws its own stream.
        if temperature == 0.0 {
            assert_eq!(all.completions[0].tokens, all.completions[2].tokens);
        } else {
            assert_ne!(all.completions[0].tokens, all.completions[2].tokens);
        }
    }
}

#[test]
fn right_padded_causal_forward_matches_the_masked_forward_on_real_tokens() {
    let (_vs, m) = random_model(5);
    let ids = Tensor::from_slice(&[5i64, 9, 11, 3, 60, 2, 42, 7, 0, 0, 0, 0, 1, 2, 3, 4, 5, 0]).view([3, 6]);
    let att = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0]).view([3, 6]);
    let (a, b) = tch::no_grad(|| (m.forward_right_padded(&ids, &att), m.forward_padded(&ids, &att)));
    for (row, len) in [(0i64, 6i64), (1, 2), (2, 5)] {
        let err = max_rel_err(&a.get(row).narrow(0, 0, len), &b.get(row).narrow(0, 0, len));
        assert!(err < 1e-5, "row {row}: {err:e}");
    }
}
