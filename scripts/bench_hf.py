#!/usr/bin/env python3
"""The `worker bench` workload with Hugging Face transformers, for comparison (prints numbers).

Same model folder, same prompt, same thread count: greedy `generate` with 128 forced new tokens
at batch 1, 8 and 16, and one training step (forward + backward + AdamW) on batch 8 x 256 random
tokens; fp32, and bf16 (generation in a bf16 model; training with fp32 weights and optimizer
under `torch.autocast("cpu", dtype=torch.bfloat16)`).

    .venv/bin/python scripts/bench_hf.py --model .cache/models/SmolLM2-135M-Instruct --threads 2

`--device cuda` runs the same on GPU 0 (bf16 training under `torch.autocast("cuda")`), with the
device synchronised before each clock reading; `scripts/gpu_check.sh` uses it.
"""
import argparse
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = ("<|im_start|>user\nNatalia sold clips to 48 of her friends in April, and then she sold half as many "
          "clips in May. How many clips did Natalia sell altogether in April and May?<|im_end|>\n"
          "<|im_start|>assistant\n")


def row(what, dtype, batch, secs, tokens):
    print(f"{what:<24} {dtype:>5} batch {batch:>3}  {secs:>9.3f} s  {tokens / secs:>10.1f} tok/s", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-seq", type=int, default=256)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    dev = torch.device(a.device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    ids = tok(PROMPT, add_special_tokens=False, return_tensors="pt")["input_ids"].to(dev)
    import transformers
    where = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"threads {torch.get_num_threads()}"
    print(f"transformers {transformers.__version__} bench: {a.model} ({where}, torch {torch.__version__})")
    for name in a.dtypes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(dev).eval()
        gen = dict(do_sample=False, pad_token_id=2, eos_token_id=None)
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4, **gen)
            for b in (map(int, a.batches.split(",")) if a.batches else []):
                x = ids.repeat(b, 1)
                sync()
                t0 = time.perf_counter()
                out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=a.new_tokens,
                                     min_new_tokens=a.new_tokens, **gen)
                sync()
                secs = time.perf_counter() - t0
                row(f"generate {a.new_tokens} new tokens", name, b, secs, (out.shape[1] - x.shape[1]) * b)
        del model
        if a.train_steps > 0:
            model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).to(dev).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
            g = torch.Generator().manual_seed(1234)
            x = torch.randint(0, model.config.vocab_size, (a.train_batch, a.train_seq), generator=g).to(dev)

            def step():
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    logits = model(input_ids=x).logits
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
                opt.zero_grad()
                loss.backward()
                opt.step()

            step()
            sync()
            t0 = time.perf_counter()
            for _ in range(a.train_steps):
                step()
            sync()
            secs = (time.perf_counter() - t0) / a.train_steps
            row(f"train step {a.train_batch}x{a.train_seq}", name if name == "fp32" else name + "*",
                a.train_batch, secs, a.train_batch * a.train_seq)
            del model, opt


if __name__ == "__main__":
    main()
