//! The Qwen2 tokenizer airlift rebuilds from a GGUF file (`worker convert-gguf`), against
//! transformers' own reading of the same GGUF (fixture made by
//! `scripts/make_qwen2_tokenizer_fixture.py`).

mod common;

use airlift_worker::convert::pre_tokenizer_json;
use airlift_worker::tokenizer::Tokenizer;
use tokenizers::{NormalizedString, NormalizerWrapper, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizerWrapper};
use tokenizers::{Normalizer, PreTokenizer};

fn cases() -> Vec<serde_json::Value> {
    let path = common::fixtures().join("qwen2").join("cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

/// The pre-tokenizer (the part that is Qwen2's own, beside the vocabulary and merges copied from
/// the GGUF) splits every case as transformers does. Needs no model, so it runs in `make test`.
#[test]
fn qwen2_pre_tokenizer_splits_like_transformers() {
    let (norm, pre) = pre_tokenizer_json("qwen2").unwrap();
    let norm: NormalizerWrapper = serde_json::from_value(norm).unwrap();
    let pre: PreTokenizerWrapper = serde_json::from_value(pre).unwrap();
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        let mut n = NormalizedString::from(text);
        norm.normalize(&mut n).unwrap();
        let mut pts = PreTokenizedString::from(n.get());
        pre.pre_tokenize(&mut pts).unwrap();
        let got: Vec<String> = pts
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(s, _, _)| s.to_string())
            .collect();
        let want: Vec<String> = case["pieces"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        assert_eq!(got, want, "pieces of {text:?}");
    }
}

/// Whole token ids of the converted Qwen2.5-Coder-0.5B-Instruct folder (vocabulary, merges,
/// special tokens and pre-tokenizer together).
#[test]
#[ignore = "needs the Qwen2.5-Coder GGUF converted by `make assets-gsm8k` (1.6 GB); `make test-gsm8k` runs it"]
fn converted_qwen2_tokenizer_gives_transformers_ids() {
    let dir = common::cache().join("models").join("Qwen2.5-Coder-0.5B-Instruct");
    assert!(dir.join("tokenizer.json").exists(), "{} is missing: run `make assets-gsm8k`", dir.display());
    let tok = Tokenizer::from_dir(&dir).unwrap();
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(text).unwrap(), want, "ids of {text:?}");
    }
}

/// The converted Qwen2.5-Coder-0.5B-Instruct (Q4_K / Q6_K / Q5_0 / Q8_0 blocks dequantised by
/// airlift, q/k/v biases, untied head) gives transformers' logits for the same GGUF, and the chat
/// template renders the same prompt.
#[test]
#[ignore = "needs the Qwen2.5-Coder GGUF converted by `make assets-gsm8k` (1.6 GB); `make test-gsm8k` runs it"]
fn converted_qwen2_logits_match_transformers_gguf_loader() {
    use tch::{Device, Kind, Tensor};
    let dir = common::cache().join("models").join("Qwen2.5-Coder-0.5B-Instruct");
    assert!(dir.join("model.safetensors").exists(), "{} is missing: run `make assets-gsm8k`", dir.display());
    let path = common::fixtures().join("qwen2").join("cases.json");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let reference = common::read_safetensors(&common::fixtures().join("qwen2").join("gguf_logits.safetensors"));
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let m = airlift_worker::model::load(&dir, Device::Cpu, Kind::Float).unwrap();
    for (i, p) in fixture["logit_prompts"].as_array().unwrap().iter().enumerate() {
        let text = p["text"].as_str().unwrap();
        let want: Vec<u32> = p["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(text).unwrap(), want, "prompt {i} ids");
        let user = text.split("<|im_start|>user\n").nth(1).and_then(|r| r.split("<|im_end|>").next()).unwrap();
        assert_eq!(tok.chat_prompt(user), text, "prompt {i}: the chat template renders what transformers renders");
        let t: Vec<i64> = want.iter().map(|&x| x as i64).collect();
        let ids = Tensor::from_slice(&t).unsqueeze(0);
        let ours = tch::no_grad(|| m.model.forward_padded(&ids, &ids.ones_like()))
            .select(1, t.len() as i64 - 1)
            .squeeze_dim(0);
        let theirs = &reference[&format!("last_logits_{i}")];
        let err = common::max_rel_err(&ours, theirs);
        println!(
            "prompt {i}: max relative error vs transformers(GGUF) {err:.2e}; argmax {} / {}",
            ours.argmax(0, false).int64_value(&[]),
            theirs.argmax(0, false).int64_value(&[])
        );
        assert!(err <= 1e-3, "prompt {i}: {err:e}");
        assert_eq!(ours.argmax(0, false).int64_value(&[]), theirs.argmax(0, false).int64_value(&[]));
    }
}
