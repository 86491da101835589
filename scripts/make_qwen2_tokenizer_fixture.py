#!/usr/bin/env python3
"""Reference token ids for airlift's rebuilt Qwen2 tokenizer, and reference logits for its
converted Qwen2 model (K-quants dequantised, q/k/v biases, untied head), from an independent
reading of the same GGUF file: transformers' own GGUF conversion (`from_pretrained(...,
gguf_file=...)`, transformers==5.24.0, gguf==0.19.0, its own numpy dequantisation).

Also writes tests/fixtures/qwen2/gguf_logits.safetensors: the fp32 logits of the last
position of two chat prompts (`worker/tests/qwen2_gguf.rs`, `make test-gsm8k`).

Writes tests/fixtures/qwen2/cases.json: for each test string, transformers' token ids
(no special tokens added) and its pre-tokenizer's pieces. `worker/tests/qwen2_gguf.rs` checks
the pieces on every `make test` (no model needed) and the ids against the converted model folder
(`make test-gsm8k`, which needs `make assets-gsm8k`).

Usage: .venv/bin/python scripts/make_qwen2_tokenizer_fixture.py [GGUF]
       (default .cache/gguf/Qwen2.5-Coder-0.5B-Instruct.gguf; make fixtures-qwen2)
"""
import json
import os
import sys
import unicodedata

from transformers import AutoTokenizer

CASES = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "She pays $18.50 for 3 items: 3 * 6.1666 = 18.5\n#### 18.5",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
    "  leading spaces,\ttabs\t\tand\n\n\nnewlines   \n end ",
    "(a+b)^2 = a^2 + 2ab + b^2; x_1, x_2... y's they'll I'M WE'VE",
    "\\(1/3 \\times 18 = 6\\) flamingos; \\[ \\frac{48}{2} = 24 \\] \\boxed{72}",
    "Unicode: café, naïve, Ångström, 東京, Привет, 😀 emoji, e\u0301 (combining accent), ｆｕｌｌｗｉｄｔｈ",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(1_000_000))",
    "1234567890 -42 3.14159 1,000,000 $1,234.56 50% 2nd 3rd",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Step 1: 5 + 7 = 12.\r\nStep 2: 12 × 3 = 36 — done!!! ???",
]


def main() -> None:
    gguf = sys.argv[1] if len(sys.argv) > 1 else ".cache/gguf/Qwen2.5-Coder-0.5B-Instruct.gguf"
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf) or ".", gguf_file=os.path.basename(gguf))
    backend = tok.backend_tokenizer
    out = {"gguf": os.path.basename(gguf), "transformers_pre_tokenizer": json.loads(backend.pre_tokenizer.__getstate__()) if hasattr(backend.pre_tokenizer, "__getstate__") else None, "cases": []}
    for text in CASES:
        # Qwen2's own tokenizer.json normalises to NFC; transformers' GGUF reading has no
        # normalizer, so it is given NFC text (the one case this changes is the combining accent).
        normalized = unicodedata.normalize("NFC", text)
        ids = tok.encode(normalized, add_special_tokens=False)
        pieces = [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]
        out["cases"].append({"text": text, "ids": ids, "pieces": pieces})
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf) or ".", gguf_file=os.path.basename(gguf), dtype=torch.float32).eval()
    tensors = {}
    out["logit_prompts"] = []
    for i, q in enumerate(["What is 12 * 7?", "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips to her friends in May. How many clips did Natalia sell altogether in April and May?"]):
        text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        ids = tok.encode(text, add_special_tokens=False)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        tensors[f"last_logits_{i}"] = logits.float().contiguous()
        out["logit_prompts"].append({"text": text, "ids": ids})
    fix = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "qwen2")
    save_file(tensors, os.path.join(fix, "gguf_logits.safetensors"))
    path = os.path.join(fix, "cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    print(f"wrote {os.path.normpath(path)}: {len(out['cases'])} cases")


if __name__ == "__main__":
    main()
