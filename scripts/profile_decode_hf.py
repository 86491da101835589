#!/usr/bin/env python3
"""Where one transformers decode step spends its time on the GPU, fp32 against bf16 (prints the
top operators by CPU time and by CUDA time). Used by `scripts/gpu_check.sh` to see why bf16
decoding is slower than fp32 at small batches (launch-bound: more kernels, or slower ones?).

    python3 scripts/profile_decode_hf.py --model /tmp/smol-random --batch 1
"""
import argparse

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM, DynamicCache


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).cuda().eval()
        ids = torch.randint(0, 1000, (a.batch, 60), device="cuda")
        with torch.no_grad():
            cache = DynamicCache()
            out = model(input_ids=ids, past_key_values=cache, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
            for _ in range(3):  # warm-up decode steps
                out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
                torch.cuda.synchronize()
        ev = prof.key_averages()
        kernels = sum(e.count for e in ev if e.device_type == torch.autograd.DeviceType.CUDA) / 5
        print(f"== {dtype}, batch {a.batch}: {kernels:.0f} CUDA kernels per decode step")
        print(ev.table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=40))
        print(ev.table(sort_by="self_cuda_time_total", row_limit=6, max_name_column_width=40))
        del model


if __name__ == "__main__":
    main()
