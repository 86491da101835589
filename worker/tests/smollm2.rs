//! SmolLM2-135M-Instruct converted by `worker convert-gguf` against Hugging Face transformers
//! (fixtures made by `scripts/make_fixtures.py --smollm2`): tokenizer ids and logits against
//! transformers' own reading of the GGUF file, greedy tokens against transformers running on
//! the converted folder. Needs `make assets` (which `make test` runs).

mod common;

use airlift_worker::convert::permute_rows;
use airlift_worker::generate::{generate, SamplingParams};
use airlift_worker::model;
use airlift_worker::tokenizer::Tokenizer;
use common::*;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn reference() -> Value {
    let p = fixtures().join("smollm2").join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn rebuilt_tokenizer_matches_transformers_gguf_tokenizer() {
    let r = reference();
    let tok = Tokenizer::from_dir(&smollm2_dir()).unwrap();
    for (s, want) in r["tokenizer_strings"].as_array().unwrap().iter().zip(r["tokenizer_ids"].as_array().unwrap()) {
        assert_eq!(tok.encode(s.as_str().unwrap()).unwrap(), ids(want), "{s}");
    }
    // The chat template renders exactly what transformers renders, and tokenises the same.
    for ((p, chat), want) in r["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["chat_prompts"].as_array().unwrap())
        .zip(r["prompt_ids"].as_array().unwrap())
    {
        assert_eq!(tok.chat_prompt(p.as_str().unwrap()), chat.as_str().unwrap());
        assert_eq!(tok.encode(chat.as_str().unwrap()).unwrap(), ids(want));
    }
    // Digits are split one per token.
    let digits = tok.encode("12345").unwrap();
    assert_eq!(digits.len(), 5);
}

fn last_logits(m: &airlift_worker::Llama, prompt: &[u32]) -> Tensor {
    let t: Vec<i64> = prompt.iter().map(|&x| x as i64).collect();
    let ids = Tensor::from_slice(&t).unsqueeze(0);
    tch::no_grad(|| m.forward_padded(&ids, &ids.ones_like()))
        .select(1, t.len() as i64 - 1)
        .squeeze_dim(0)
}

#[test]
fn converted_logits_match_transformers_gguf_loader_and_unpermutation_matters() {
    let r = reference();
    let m = model::load(&smollm2_dir(), Device::Cpu, Kind::Float).unwrap();
    let gguf = read_safetensors(&fixtures().join("smollm2").join("gguf_logits.safetensors"));
    let prompts = r["prompt_ids"].as_array().unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let ours = last_logits(&m.model, &ids(p));
        let err = max_rel_err(&ours, &gguf[&format!("gguf_last_logits_{i}")]);
        println!("prompt {i}: max relative error vs transformers(GGUF) {err:.2e}");
        assert!(err <= 1e-4, "prompt {i}: {err:e}");
    }
    // Negative control: put llama.cpp's permutation back into q/k of every layer; the logits
    // must then be far from the reference, so the match above depends on the un-permutation.
    let cfg = m.model.config().clone();
    let vars = m.vs.variables();
    tch::no_grad(|| {
        for l in 0..cfg.num_layers {
            for (proj, heads) in [("q_proj", cfg.num_heads), ("k_proj", cfg.num_kv_heads)] {
                let mut w = vars[&format!("model.layers.{l}.self_attn.{proj}.weight")].shallow_clone();
                let v = Vec::<f32>::try_from(w.flatten(0, -1)).unwrap();
                let p = permute_rows(&v, heads as usize, cfg.hidden_size as usize);
                w.copy_(&Tensor::from_slice(&p).view_as(&w));
            }
        }
    });
    let ours = last_logits(&m.model, &ids(&prompts[0]));
    let err = max_rel_err(&ours, &gguf["gguf_last_logits_0"]);
    println!("with llama.cpp's permutation left in: max relative error {err:.2e}");
    assert!(err > 0.05, "permuted q/k should break the model, got {err}");
}

#[test]
fn greedy_tokens_match_transformers_on_the_converted_folder() {
    let r = reference();
    let m = model::load(&smollm2_dir(), Device::Cpu, Kind::Float).unwrap();
    let params = SamplingParams {
        max_new_tokens: 64,
        ignore_eos: true,
        ..Default::default()
    };
    for (p, want) in r["prompt_ids"].as_array().unwrap().iter().zip(r["greedy_64"].as_array().unwrap()) {
        let out = generate(&m.model, &[ids(p)], &[], 2, &params);
        assert_eq!(out.completions[0].tokens, ids(want));
    }
}
