//! Corrupt model files are refused with an error naming the field, before anything is allocated
//! from them: a GGUF whose `block_count` disagrees with its tensors, one whose tensor count
//! cannot fit in the file, and a `config.json` describing a model no machine could hold.

mod common;

use airlift_worker::model;
use tch::{Device, Kind};

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).expect("key in the header")
}

#[test]
fn corrupt_gguf_headers_and_configs_are_named_errors() {
    let gguf = common::cache().join("gguf").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(gguf.exists(), "{} is missing: run `make assets`", gguf.display());
    let bytes = std::fs::read(&gguf).unwrap();
    let dir = std::env::temp_dir().join(format!("airlift-badmodel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // `llama.block_count` (u32 after its type tag) flipped to 2,147,483,678.
    let key = b"llama.block_count";
    let at = find(&bytes, key) + key.len();
    let ty = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(ty, 4, "block_count is a u32");
    let mut m = bytes.clone();
    m[at + 4..at + 8].copy_from_slice(&2_147_483_678u32.to_le_bytes());
    let bad = dir.join("block_count.gguf");
    std::fs::write(&bad, &m).unwrap();
    let e = airlift_worker::convert::convert(&bad, &dir.join("out1")).unwrap_err().to_string();
    assert!(e.contains("block_count = 2147483678") && e.contains("30 blocks"), "{e}");
    assert!(!dir.join("out1").exists());

    // The tensor count (bytes 8..16) set to 2^40.
    let mut m = bytes.clone();
    m[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let bad = dir.join("n_tensors.gguf");
    std::fs::write(&bad, &m).unwrap();
    let e = airlift_worker::gguf::Gguf::open(&bad).err().expect("refused").to_string();
    assert!(e.contains("1099511627776 tensors cannot fit"), "{e}");
    drop(m);

    // A config.json whose layer count flipped: refused before the model is built.
    let tiny = dir.join("tiny");
    model::write_tiny_llama(&tiny, &common::smollm2_dir(), 0).unwrap();
    let cfg_path = tiny.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["num_hidden_layers"] = serde_json::json!(2_147_483_678u64);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = model::load(&tiny, Device::Cpu, Kind::Float).err().expect("refused").to_string();
    assert!(e.contains("num_hidden_layers") && e.contains("outside"), "{e}");
    cfg["num_hidden_layers"] = serde_json::json!(2);
    cfg["intermediate_size"] = serde_json::json!(1u64 << 20);
    cfg["hidden_size"] = serde_json::json!(1u64 << 17);
    cfg["num_attention_heads"] = serde_json::json!(1024);
    cfg["num_key_value_heads"] = serde_json::json!(1024);
    cfg["vocab_size"] = serde_json::json!(1u64 << 22);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = model::load(&tiny, Device::Cpu, Kind::Float).err().expect("refused").to_string();
    assert!(e.contains("parameters"), "{e}");

    // A config.json that disagrees with its safetensors: named before the model is built.
    cfg["intermediate_size"] = serde_json::json!(64);
    cfg["num_attention_heads"] = serde_json::json!(4);
    cfg["num_key_value_heads"] = serde_json::json!(2);
    cfg["vocab_size"] = serde_json::json!(49152);
    cfg["hidden_size"] = serde_json::json!(64);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = model::load(&tiny, Device::Cpu, Kind::Float).err().expect("refused").to_string();
    assert!(
        e.contains("model.embed_tokens.weight") && e.contains("[49152, 32]") && e.contains("hidden_size = 64"),
        "{e}"
    );
    cfg["hidden_size"] = serde_json::json!(32);
    cfg["num_key_value_heads"] = serde_json::json!(4);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = model::load(&tiny, Device::Cpu, Kind::Float).err().expect("refused").to_string();
    assert!(e.contains("k_proj") && e.contains("num_key_value_heads x head_dim = 4 x 8"), "{e}");
    cfg["num_key_value_heads"] = serde_json::json!(2);
    cfg["num_hidden_layers"] = serde_json::json!(3);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = model::load(&tiny, Device::Cpu, Kind::Float).err().expect("refused").to_string();
    assert!(e.contains("holds 2 layers") && e.contains("num_hidden_layers = 3"), "{e}");
    cfg["num_hidden_layers"] = serde_json::json!(2);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    model::load(&tiny, Device::Cpu, Kind::Float).expect("the repaired folder loads");

    // A safetensors header whose length field (bytes 0..8) points past the file's end.
    let st = tiny.join("model.safetensors");
    let mut b = std::fs::read(&st).unwrap();
    b[0..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&st, &b).unwrap();
    let e = model::load(&tiny, Device::Cpu, Kind::Float).err().expect("refused").to_string();
    assert!(e.contains("model.safetensors") && e.contains("not a safetensors file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
