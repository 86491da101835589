//! Converts a llama.cpp GGUF checkpoint of the Llama / Qwen2 family into a Hugging Face folder
//! (`config.json`, `model.safetensors` in fp32, `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`), the format the rest of airlift reads.
//!
//! Two facts of llama.cpp's converter are undone here:
//! * For `general.architecture = "llama"`, the rows of `attn_q` and `attn_k` are permuted so
//!   that rotary pairs are interleaved (`(x0, x1), (x2, x3), …`) instead of Hugging Face's
//!   halves (`x_i, x_{i + d/2}`). [`unpermute_rows`] restores the Hugging Face order.
//!   Qwen2 GGUFs are not permuted.
//! * GGUF carries the BPE vocabulary and merges but no `tokenizer.json`; one is rebuilt as a
//!   byte-level BPE. For the `smollm` pre-tokenizer, digits are split one per token before the
//!   GPT-2 pattern (as SmolLM2's own tokenizer does); for `qwen2`, NFC and Qwen2's own split
//!   pattern (checked against transformers' reading of the same GGUF, `tests/fixtures/qwen2`).

use crate::gguf::{Gguf, GgufError, Value};
use crate::weights::{self, RawTensor, WeightsError};
use serde_json::{json, Map, Value as Json};
use std::path::{Path, PathBuf};

/// Errors converting a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
}

/// Moves rows between llama.cpp's interleaved rotary order (`[n_head, d/2, 2]`) and Hugging
/// Face's halves (`[n_head, 2, d/2]`); `to_hf` picks the direction. `row_len` is the number of
/// values per row (1 for a bias).
fn reorder_rows(values: &[f32], n_head: usize, row_len: usize, to_hf: bool) -> Vec<f32> {
    let head_dim = values.len() / row_len / n_head;
    let half = head_dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..n_head {
        for i in 0..half {
            for two in 0..2 {
                let gguf_row = h * head_dim + i * 2 + two;
                let hf_row = h * head_dim + two * half + i;
                let (src, dst) = if to_hf { (gguf_row, hf_row) } else { (hf_row, gguf_row) };
                out[dst * row_len..(dst + 1) * row_len].copy_from_slice(&values[src * row_len..(src + 1) * row_len]);
            }
        }
    }
    out
}

/// Undoes llama.cpp's rotary row permutation of a q or k projection weight (or bias) with
/// `n_head` heads.
pub fn unpermute_rows(values: &[f32], n_head: usize, row_len: usize) -> Vec<f32> {
    reorder_rows(values, n_head, row_len, true)
}

/// llama.cpp's own permutation (the inverse of [`unpermute_rows`]), for tests and exporters.
pub fn permute_rows(values: &[f32], n_head: usize, row_len: usize) -> Vec<f32> {
    reorder_rows(values, n_head, row_len, false)
}

/// Maps a GGUF tensor name to its Hugging Face key.
fn hf_name(gguf_name: &str) -> Option<String> {
    let fixed = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = part.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// What a conversion produced.
#[derive(Debug)]
pub struct Converted {
    pub dir: PathBuf,
    pub tensors: usize,
    pub parameters: usize,
    pub architecture: String,
}

/// Converts `gguf_path` into the Hugging Face folder `out_dir` (created; files are written to a
/// temporary folder first and renamed, so a crash leaves no half-written model).
pub fn convert(gguf_path: &Path, out_dir: &Path) -> Result<Converted, ConvertError> {
    let g = Gguf::open(gguf_path)?;
    let arch = g.get_str("general.architecture")?.to_string();
    if arch != "llama" && arch != "qwen2" {
        return Err(ConvertError::Unsupported {
            path: gguf_path.into(),
            what: format!("general.architecture = `{arch}`; expected `llama` or `qwen2`"),
        });
    }
    let key = |k: &str| format!("{arch}.{k}");
    let n_head = g.get_u64(&key("attention.head_count"))? as usize;
    let n_kv = g.get_u64(&key("attention.head_count_kv")).unwrap_or(n_head as u64) as usize;
    let hidden = g.get_u64(&key("embedding_length"))? as usize;
    let tokens = g.get_strings("tokenizer.ggml.tokens")?;
    let tied = !g.tensors.iter().any(|t| t.name == "output.weight");
    // The header's sizes must agree with the tensors before anything is dequantised.
    let bad = |what: String| ConvertError::Unsupported { path: gguf_path.into(), what };
    let blocks = g
        .tensors
        .iter()
        .filter_map(|t| t.name.strip_prefix("blk.")?.split('.').next()?.parse::<u64>().ok())
        .max()
        .map_or(0, |m| m + 1);
    let block_count = g.get_u64(&key("block_count"))?;
    if block_count != blocks {
        return Err(bad(format!(
            "{arch}.block_count = {block_count}, but the file holds tensors of {blocks} blocks"
        )));
    }
    if n_head == 0 || n_kv == 0 || !n_head.is_multiple_of(n_kv) || hidden == 0 || !hidden.is_multiple_of(n_head) {
        return Err(bad(format!("{arch}.attention.head_count = {n_head}, head_count_kv = {n_kv} and embedding_length = {hidden} do not agree (heads must divide the width, kv heads the heads)")));
    }
    let embd = g.tensor_info("token_embd.weight")?;
    if embd.shape.len() != 2 || embd.shape[1] != hidden || embd.shape[0] < tokens.len() {
        return Err(bad(format!(
            "token_embd.weight has shape {:?}, expected [at least {} tokens, {hidden} = embedding_length]",
            embd.shape,
            tokens.len()
        )));
    }

    let tmp = out_dir.with_extension("part");
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ConvertError::Io { path: p, source }
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;

    let mut raw = Vec::with_capacity(g.tensors.len());
    let mut parameters = 0;
    for info in &g.tensors {
        let name = hf_name(&info.name).ok_or_else(|| ConvertError::Unsupported {
            path: gguf_path.into(),
            what: format!("tensor `{}` has no Hugging Face counterpart known to airlift", info.name),
        })?;
        let mut values = g.dequantize(info)?;
        if arch == "llama" {
            let row_len = if info.shape.len() == 2 { info.shape[1] } else { 1 };
            if info.name.contains(".attn_q.") {
                values = unpermute_rows(&values, n_head, row_len);
            } else if info.name.contains(".attn_k.") {
                values = unpermute_rows(&values, n_kv, row_len);
            }
        }
        parameters += values.len();
        raw.push(RawTensor::f32(name, info.shape.clone(), &values));
    }
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    weights::save(&raw, &tmp.join("model.safetensors"), Some(meta))?;
    drop(raw);

    let write_json = |name: &str, v: &Json| -> Result<(), ConvertError> {
        let p = tmp.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).expect("json")).map_err(io(&p))
    };
    let bos = g.get_u64("tokenizer.ggml.bos_token_id").ok();
    let eos = g.get_u64("tokenizer.ggml.eos_token_id").ok();
    let pad = g.get_u64("tokenizer.ggml.padding_token_id").ok();
    // GGUF stores epsilon as f32 (1e-5 reads back as 9.99999974e-06); keep the shortest decimal
    // that round-trips through f32, which is the value the original config.json had.
    let eps = g.get_f64(&key("attention.layer_norm_rms_epsilon"))?;
    let rms_eps = format!("{:e}", eps as f32).parse::<f64>().unwrap_or(eps);
    let config = json!({
        "architectures": [if arch == "llama" { "LlamaForCausalLM" } else { "Qwen2ForCausalLM" }],
        "model_type": arch,
        "vocab_size": g.get_u64(&key("vocab_size")).unwrap_or(tokens.len() as u64),
        "hidden_size": hidden,
        "intermediate_size": g.get_u64(&key("feed_forward_length"))?,
        "num_hidden_layers": g.get_u64(&key("block_count"))?,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": hidden / n_head,
        "max_position_embeddings": g.get_u64(&key("context_length"))?,
        "rms_norm_eps": rms_eps,
        "rope_theta": g.get_f64(&key("rope.freq_base")).unwrap_or(10000.0),
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": "float32",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
    });
    write_json("config.json", &config)?;
    write_json(
        "generation_config.json",
        &json!({ "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "do_sample": false }),
    )?;
    let tok = tokenizer_json(&g, &tokens)?;
    write_json("tokenizer.json", &tok)?;
    let name_of = |id: Option<u64>| id.and_then(|i| tokens.get(i as usize)).map(|s| s.to_string());
    let mut tcfg = Map::new();
    tcfg.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    tcfg.insert("model_max_length".into(), config["max_position_embeddings"].clone());
    tcfg.insert("clean_up_tokenization_spaces".into(), json!(false));
    tcfg.insert("add_bos_token".into(), json!(false));
    for (field, id) in [("bos_token", bos), ("eos_token", eos), ("pad_token", pad)] {
        if let Some(name) = name_of(id) {
            tcfg.insert(field.into(), json!(name));
        }
    }
    if let Ok(unk) = g.get_u64("tokenizer.ggml.unknown_token_id") {
        if let Some(name) = name_of(Some(unk)) {
            tcfg.insert("unk_token".into(), json!(name));
        }
    }
    if let Ok(t) = g.get_str("tokenizer.chat_template") {
        tcfg.insert("chat_template".into(), json!(t));
    }
    write_json("tokenizer_config.json", &Json::Object(tcfg))?;

    if out_dir.exists() {
        std::fs::remove_dir_all(out_dir).map_err(io(out_dir))?;
    }
    std::fs::rename(&tmp, out_dir).map_err(io(out_dir))?;
    Ok(Converted {
        dir: out_dir.into(),
        tensors: g.tensors.len(),
        parameters,
        architecture: arch,
    })
}

/// The `normalizer` and `pre_tokenizer` of the `tokenizer.json` rebuilt for GGUF pre-tokenizer
/// type `pre` (`tokenizer.ggml.pre`).
pub fn pre_tokenizer_json(pre: &str) -> Result<(Json, Json), String> {
    let byte_level = json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true });
    let mut normalizer = Json::Null;
    let pre_tokenizer = match pre {
        // Qwen2's own split (NFC first): a letter run may take one leading non-letter, digits go
        // one per piece, punctuation runs keep trailing newlines; then bytes without the GPT-2 regex.
        "qwen2" => {
            normalizer = json!({ "type": "NFC" });
            json!({
                "type": "Sequence",
                "pretokenizers": [
                    { "type": "Split", "pattern": { "Regex": QWEN2_SPLIT }, "behavior": "Isolated", "invert": false },
                    { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false }
                ]
            })
        }
        "smollm" | "starcoder" => json!({
            "type": "Sequence",
            "pretokenizers": [ { "type": "Digits", "individual_digits": true }, byte_level ]
        }),
        "gpt-2" | "default" => byte_level,
        other => {
            return Err(format!(
                "tokenizer.ggml.pre = `{other}`: airlift rebuilds only the smollm, qwen2, starcoder and gpt-2 pre-tokenizers"
            ))
        }
    };
    Ok((normalizer, pre_tokenizer))
}

/// The pre-tokenizer pattern of Qwen2's `tokenizer.json` (llama.cpp's `LLAMA_VOCAB_PRE_TYPE_QWEN2`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Rebuilds a Hugging Face `tokenizer.json` (byte-level BPE) from the GGUF vocabulary.
fn tokenizer_json(g: &Gguf, tokens: &[&str]) -> Result<Json, ConvertError> {
    let model = g.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(ConvertError::Unsupported {
            path: g.path().into(),
            what: format!("tokenizer.ggml.model = `{model}`; only byte-level BPE (`gpt2`) is rebuilt"),
        });
    }
    let pre = g.get_str("tokenizer.ggml.pre").unwrap_or("default");
    let token_types = g.get_ints("tokenizer.ggml.token_type").unwrap_or_default();
    let merges = g.get_strings("tokenizer.ggml.merges")?;
    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.to_string(), json!(i));
    }
    // Control (3) and user-defined (4) tokens are added tokens; control ones are special.
    let added: Vec<Json> = token_types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == 3 || t == 4)
        .map(|(i, &t)| {
            json!({ "id": i, "content": tokens[i], "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": t != 3, "special": t == 3 })
        })
        .collect();
    let (normalizer, pre_tokenizer) = pre_tokenizer_json(pre).map_err(|what| ConvertError::Unsupported { path: g.path().into(), what })?;
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true },
        "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        }
    }))
}

/// A summary line of the GGUF metadata, for `worker convert-gguf`.
pub fn describe(g: &Gguf) -> String {
    let get = |k: &str| {
        g.metadata.get(k).map(|v| match v {
            Value::String(s) => s.clone(),
            v => format!("{:?}", v),
        })
    };
    format!(
        "{} (architecture {}, GGUF v{}, {} tensors)",
        get("general.name").unwrap_or_default(),
        get("general.architecture").unwrap_or_default(),
        g.version,
        g.tensors.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // 2 heads, head_dim 4, rows of length 3: HF row order r0..r7.
        let hf: Vec<f32> = (0..24).map(|x| x as f32).collect();
        let gg = permute_rows(&hf, 2, 3);
        // llama.cpp interleaves the halves of each head: rows 0,2,1,3 | 4,6,5,7.
        let row = |v: &[f32], r: usize| v[r * 3];
        assert_eq!((0..8).map(|r| row(&gg, r)).collect::<Vec<_>>(), vec![0., 6., 3., 9., 12., 18., 15., 21.]);
        assert_eq!(unpermute_rows(&gg, 2, 3), hf);
    }

    #[test]
    fn gguf_names_map_to_hf_keys() {
        assert_eq!(hf_name("blk.12.attn_q.weight").unwrap(), "model.layers.12.self_attn.q_proj.weight");
        assert_eq!(hf_name("blk.0.attn_k.bias").unwrap(), "model.layers.0.self_attn.k_proj.bias");
        assert_eq!(hf_name("blk.3.ffn_down.weight").unwrap(), "model.layers.3.mlp.down_proj.weight");
        assert_eq!(hf_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert!(hf_name("blk.0.unknown.weight").is_none());
    }
}
