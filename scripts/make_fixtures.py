#!/usr/bin/env python3
"""Regenerate the model fixtures under tests/fixtures/ with Hugging Face transformers.

Independent reference for airlift's model code. Needs torch, transformers and gguf (only when
regenerating; the tests read the committed outputs):

    .venv/bin/pip install transformers==5.24.0 gguf==0.19.0 numpy
    .venv/bin/python scripts/make_fixtures.py            # tiny random models
    .venv/bin/python scripts/make_fixtures.py --smollm2  # also SmolLM2 (needs `make assets`)

Tiny models (tests/fixtures/models/<name>/): random weights for three configs, saved with
save_pretrained, and `reference.safetensors` holding a left-padded batch (input_ids,
attention_mask, position_ids) and transformers' fp32 logits for it.

SmolLM2 (tests/fixtures/smollm2/): transformers loads the original GGUF file itself
(`gguf_file=`, its own dequantisation, q/k un-permutation and tokenizer conversion) and records
the last-position logits of three chat prompts and the token ids of test strings; then it loads
the Hugging Face folder written by `worker convert-gguf` and records 64 greedy tokens per prompt.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen2Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")

TINY = {
    "llama_gqa_tied": LlamaConfig(
        vocab_size=160, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        initializer_range=0.1, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    ),
    "qwen2_bias_untied": Qwen2Config(
        vocab_size=160, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
        initializer_range=0.1, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    ),
    "llama3_rope_scaling": LlamaConfig(
        vocab_size=160, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        initializer_range=0.1, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    ),
}


def tiny_models():
    for i, (name, cfg) in enumerate(TINY.items()):
        torch.manual_seed(100 + i)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
        with torch.no_grad():
            # Biases start at zero; give them values so that the bias path is exercised.
            for n, p in model.named_parameters():
                if n.endswith(".bias"):
                    p.normal_(0.0, 0.1)
        out = os.path.join(FIX, "models", name)
        model.save_pretrained(out, safe_serialization=True)
        # Row 0 full length, row 1 left-padded by 5: positions count real tokens only.
        g = torch.Generator().manual_seed(7 + i)
        ids = torch.randint(3, cfg.vocab_size, (2, 40), generator=g)
        mask = torch.ones_like(ids)
        mask[1, :5] = 0
        ids[1, :5] = cfg.pad_token_id
        pos = (mask.cumsum(1) - 1).clamp(min=0) * mask
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        save_file(
            {"input_ids": ids.contiguous(), "attention_mask": mask.contiguous(),
             "position_ids": pos.contiguous(), "logits": logits.float().contiguous()},
            os.path.join(out, "reference.safetensors"),
        )
        print(f"wrote {out}: logits {tuple(logits.shape)}")


SMOL_PROMPTS = [
    "What is the capital of France?",
    "Tom has 3 apples and buys 5 more. How many apples does he have? Answer step by step.",
    "Write a short poem about the moon.",
]
TOKENIZER_STRINGS = [
    "Hello world! It costs $1,234.56 in 2024.",
    "  leading spaces and\ttabs\nnew lines",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "naïve café — ünïcödé 東京 🙂",
    "12345 + 678 = 13023",
]


def smollm2():
    cache = os.path.join(ROOT, ".cache")
    gguf_dir = os.path.join(cache, "gguf")
    gguf_name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    converted = os.path.join(cache, "models", "SmolLM2-135M-Instruct")
    for p in (os.path.join(gguf_dir, gguf_name), converted):
        if not os.path.exists(p):
            sys.exit(f"{p} is missing: run `make assets` first")
    out = os.path.join(FIX, "smollm2")
    os.makedirs(out, exist_ok=True)

    # 1. transformers' own reading of the GGUF file.
    ref_tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    ref_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32).eval()
    chat = [ref_tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in SMOL_PROMPTS]
    prompt_ids = [ref_tok(c, add_special_tokens=False)["input_ids"] for c in chat]
    tensors = {}
    with torch.no_grad():
        for i, ids in enumerate(prompt_ids):
            logits = ref_model(input_ids=torch.tensor([ids])).logits[0, -1]
            tensors[f"gguf_last_logits_{i}"] = logits.float().contiguous()
    string_ids = [ref_tok(s, add_special_tokens=False)["input_ids"] for s in TOKENIZER_STRINGS]
    del ref_model

    # 2. transformers on the folder that airlift's converter wrote: greedy tokens.
    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    greedy = []
    with torch.no_grad():
        for ids in prompt_ids:
            gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=64, min_new_tokens=64, do_sample=False, eos_token_id=None,
                                 pad_token_id=2)
            greedy.append(gen[0, len(ids):].tolist())
    save_file(tensors, os.path.join(out, "gguf_logits.safetensors"))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({
            "prompts": SMOL_PROMPTS,
            "chat_prompts": chat,
            "prompt_ids": prompt_ids,
            "greedy_64": greedy,
            "tokenizer_strings": TOKENIZER_STRINGS,
            "tokenizer_ids": string_ids,
            "transformers": __import__("transformers").__version__,
            "torch": torch.__version__,
        }, f, indent=1, ensure_ascii=False)
    for c, g in zip(chat, greedy):
        print(repr(ref_tok.decode(g)))
    print(f"wrote {out}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    tiny_models()
    if "--smollm2" in sys.argv:
        smollm2()
