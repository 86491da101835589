//! The model against Hugging Face transformers on tiny random-weight configs
//! (fixtures made by `scripts/make_fixtures.py`), and batched generation against one-at-a-time.

mod common;

use airlift_worker::generate::{generate, SamplingParams};
use airlift_worker::model::{self, llama::ForwardInput};
use common::*;
use tch::{Device, Kind, Tensor};

const TINY: [&str; 3] = ["llama_gqa_tied", "qwen2_bias_untied", "llama3_rope_scaling"];

fn reference_logits_match(name: &str) {
    let dir = fixtures().join("models").join(name);
    let m = model::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let r = read_safetensors(&dir.join("reference.safetensors"));
    let mask = &r["attention_mask"];
    let logits = tch::no_grad(|| {
        m.model.forward(
            &ForwardInput {
                input_ids: &r["input_ids"],
                positions: &r["position_ids"],
                key_mask: &mask.to_kind(Kind::Bool),
            },
            None,
        )
    });
    // Compare real (non-padding) positions only: transformers computes garbage at pads too.
    let real = mask.to_kind(Kind::Bool).unsqueeze(-1).expand_as(&logits);
    let ours = logits.masked_select(&real);
    let theirs = r["logits"].masked_select(&real);
    let err = max_rel_err(&ours, &theirs);
    println!("{name}: max relative error {err:.2e} over {} logits", ours.numel());
    assert!(err <= 1e-4, "{name}: max relative error {err:e} > 1e-4");

    // bf16 compute with fp32 weights stays close (a loose check that the cast path works).
    let mut m = m;
    m.model.set_compute_kind(Kind::BFloat16);
    let bf = tch::no_grad(|| m.model.forward_padded(&r["input_ids"], mask)).to_kind(Kind::Float);
    let err_bf = max_rel_err(&bf.masked_select(&real), &theirs);
    println!("{name}: bf16 compute max relative error {err_bf:.2e}");
    assert!(err_bf < 0.1, "{name}: bf16 logits diverge ({err_bf})");
}

#[test]
fn llama_gqa_tied_matches_transformers() {
    reference_logits_match("llama_gqa_tied");
}

#[test]
fn qwen2_bias_untied_matches_transformers() {
    reference_logits_match("qwen2_bias_untied");
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    reference_logits_match("llama3_rope_scaling");
}

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![5, 17, 33], vec![9, 4, 120, 77, 3, 61, 8], vec![11; 1], (20..32).collect()]
}

#[test]
fn batched_greedy_equals_one_at_a_time() {
    for name in TINY {
        let m = model::load(&fixtures().join("models").join(name), Device::Cpu, Kind::Float).unwrap();
        let params = SamplingParams {
            max_new_tokens: 24,
            ..Default::default()
        };
        let batch = generate(&m.model, &prompts(), &[2], 0, &params);
        for (i, p) in prompts().iter().enumerate() {
            let alone = generate(&m.model, std::slice::from_ref(p), &[2], 0, &params);
            assert_eq!(batch.completions[i].tokens, alone.completions[0].tokens, "{name}: prompt {i}");
            let (a, b) = (&batch.completions[i].logprobs, &alone.completions[0].logprobs);
            assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4), "{name}: prompt {i} logprobs");
        }
    }
}

#[test]
fn behaviour_logprobs_equal_a_teacher_forced_forward() {
    let m = model::load(&fixtures().join("models").join("qwen2_bias_untied"), Device::Cpu, Kind::Float).unwrap();
    let params = SamplingParams {
        temperature: 0.7,
        top_p: 0.9,
        max_new_tokens: 16,
        seed: 3,
        ..Default::default()
    };
    let out = generate(&m.model, &prompts(), &[2], 0, &params);
    for (p, c) in prompts().iter().zip(&out.completions) {
        let seq: Vec<i64> = p.iter().chain(&c.tokens).map(|&t| t as i64).collect();
        let ids = Tensor::from_slice(&seq).unsqueeze(0);
        let logits = tch::no_grad(|| m.model.forward_padded(&ids, &ids.ones_like()));
        let logp = (logits.squeeze_dim(0) / 0.7).log_softmax(-1, Kind::Float);
        for (j, (&tok, &lp)) in c.tokens.iter().zip(&c.logprobs).enumerate() {
            let want = logp.double_value(&[(p.len() + j - 1) as i64, tok as i64]);
            assert!((want - lp as f64).abs() < 1e-4, "token {j}: {lp} vs {want}");
        }
    }
}

#[test]
fn sampling_is_seeded_and_top_p_narrows_to_greedy() {
    let m = model::load(&fixtures().join("models").join("llama_gqa_tied"), Device::Cpu, Kind::Float).unwrap();
    let sample = |seed, top_p| {
        let p = SamplingParams {
            temperature: 1.0,
            top_p,
            max_new_tokens: 12,
            seed,
            ..Default::default()
        };
        generate(&m.model, &prompts(), &[], 0, &p)
            .completions
            .into_iter()
            .map(|c| c.tokens)
            .collect::<Vec<_>>()
    };
    assert_eq!(sample(1, 1.0), sample(1, 1.0));
    assert_ne!(sample(1, 1.0), sample(2, 1.0));
    let greedy = generate(
        &m.model,
        &prompts(),
        &[],
        0,
        &SamplingParams {
            max_new_tokens: 12,
            ..Default::default()
        },
    );
    let greedy: Vec<_> = greedy.completions.into_iter().map(|c| c.tokens).collect();
    assert_eq!(sample(5, 1e-6), greedy, "top_p -> 0 keeps only the most likely token");
}

#[test]
fn generation_stops_at_eos_per_sequence() {
    let m = model::load(&fixtures().join("models").join("llama_gqa_tied"), Device::Cpu, Kind::Float).unwrap();
    let free = generate(
        &m.model,
        &prompts(),
        &[],
        0,
        &SamplingParams {
            max_new_tokens: 10,
            ..Default::default()
        },
    );
    // Declare the 3rd token that row 0 generates as EOS: row 0 must stop right there.
    let eos = free.completions[0].tokens[2] as i64;
    let out = generate(
        &m.model,
        &prompts(),
        &[eos],
        0,
        &SamplingParams {
            max_new_tokens: 10,
            ..Default::default()
        },
    );
    for (f, c) in free.completions.iter().zip(&out.completions) {
        let cut = f.tokens.iter().position(|&t| t as i64 == eos);
        match cut {
            Some(k) => {
                assert_eq!(c.tokens, f.tokens[..=k].to_vec());
                assert_eq!(c.finish, airlift_worker::generate::FinishReason::Stop);
            }
            None => {
                assert_eq!(c.tokens, f.tokens);
                assert_eq!(c.finish, airlift_worker::generate::FinishReason::Length);
            }
        }
    }
}

#[test]
fn checkpoint_mismatch_names_the_keys() {
    let src = fixtures().join("models").join("qwen2_bias_untied");
    let dir = std::env::temp_dir().join(format!("airlift-mismatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let mut t = read_safetensors(&src.join("model.safetensors"));
    t.remove("model.layers.1.mlp.up_proj.weight");
    t.insert("model.layers.9.extra.weight".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu)));
    let named: Vec<(String, Tensor)> = t.into_iter().collect();
    Tensor::write_safetensors(&named, dir.join("model.safetensors")).unwrap();
    let err = model::load(&dir, Device::Cpu, Kind::Float).err().expect("load must fail").to_string();
    assert!(err.contains("missing keys [model.layers.1.mlp.up_proj.weight]"), "{err}");
    assert!(err.contains("unexpected keys [model.layers.9.extra.weight]"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    let src = fixtures().join("models").join("llama3_rope_scaling");
    let dir = std::env::temp_dir().join(format!("airlift-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let mut all: Vec<(String, Tensor)> = read_safetensors(&src.join("model.safetensors")).into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let (a, b) = all.split_at(all.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", a), ("model-00002-of-00002.safetensors", b)] {
        Tensor::write_safetensors(part, dir.join(file)).unwrap();
        for (n, _) in part {
            map.insert(n.clone(), serde_json::json!(file));
        }
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({ "metadata": {}, "weight_map": map }).to_string(),
    )
    .unwrap();
    let one = model::load(&src, Device::Cpu, Kind::Float).unwrap();
    let two = model::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let ids = Tensor::from_slice(&[3i64, 9, 27, 81]).unsqueeze(0);
    let (x, y) = tch::no_grad(|| {
        (
            one.model.forward_padded(&ids, &ids.ones_like()),
            two.model.forward_padded(&ids, &ids.ones_like()),
        )
    });
    assert!(x.equal(&y));
    std::fs::remove_dir_all(&dir).unwrap();
}
