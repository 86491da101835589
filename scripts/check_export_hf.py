#!/usr/bin/env python3
"""Shows Hugging Face transformers loading the folders `coordinator export` wrote.

    python scripts/check_export_hf.py EXPORT_DIR [--worker target/release/worker]

* policy: loaded with AutoModelForCausalLM (missing / unexpected keys printed, both must be
  empty); greedy continuation of a prompt by transformers and by airlift's own loader
  (`worker generate --temperature 0`) must give the same tokens;
* reward: loaded with AutoModelForTokenClassification (Llama/Qwen2ForTokenClassification with
  one label, whose `score` head is the reward head; missing / unexpected keys must be empty);
  prints the per-token rewards of the prompt (the logits).

Needs transformers (`make test` and `make bench` install it into .venv).
"""
import argparse
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

PROMPT = "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("--worker", default="target/release/worker")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    a = ap.parse_args()
    policy, reward = f"{a.export_dir}/policy", f"{a.export_dir}/reward"
    ok = True

    tok = AutoTokenizer.from_pretrained(policy)
    model, info = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32, output_loading_info=True)
    print(f"policy: {type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    print(f"  missing keys: {info['missing_keys']}  unexpected keys: {info['unexpected_keys']}")
    ok &= not info["missing_keys"] and not info["unexpected_keys"]
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=a.max_new_tokens, do_sample=False)
    hf_text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    print(f"  transformers greedy: {hf_text!r}")
    r = subprocess.run(
        [a.worker, "generate", "--model", policy, "--raw", "--prompt", PROMPT, "--temperature", "0", "--max-new-tokens", str(a.max_new_tokens)],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        print(r.stderr)
        sys.exit(1)
    print(f"  airlift greedy output:\n{r.stdout.strip()}")
    same = hf_text.strip() in r.stdout
    print(f"  same continuation: {same}")
    ok &= same

    rm, info = AutoModelForTokenClassification.from_pretrained(reward, dtype=torch.float32, output_loading_info=True)
    rm.eval()
    print(f"reward: {type(rm).__name__} with {rm.config.num_hidden_layers} layers, {rm.config.num_labels} label")
    print(f"  missing keys: {info['missing_keys']}  unexpected keys: {info['unexpected_keys']}")
    ok &= not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        values = rm(ids).logits
    print(f"  per-token rewards of the prompt: {[round(v, 4) for v in values[0, :, 0].tolist()]}")
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
