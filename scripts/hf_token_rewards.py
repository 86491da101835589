#!/usr/bin/env python3
"""Per-token rewards of an exported reward folder as transformers computes them:
AutoModelForTokenClassification (num_labels = 1) on the given token ids, printed as JSON
{"class": ..., "missing_keys": [...], "unexpected_keys": [...], "rewards": [...]}.

    .venv/bin/python scripts/hf_token_rewards.py EXPORT/reward 1 520 3458 314

`make test` installs transformers into ./.venv; the export test compares these with airlift's.
"""
import json
import sys

import torch
from transformers import AutoModelForTokenClassification


def main(folder, ids):
    model, info = AutoModelForTokenClassification.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    print(json.dumps({
        "class": type(model).__name__,
        "missing_keys": sorted(info["missing_keys"]),
        "unexpected_keys": sorted(info["unexpected_keys"]),
        "rewards": logits[0, :, 0].tolist(),
    }))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: hf_token_rewards.py REWARD_DIR TOKEN_ID...")
    main(sys.argv[1], [int(t) for t in sys.argv[2:]])
