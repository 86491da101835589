#!/usr/bin/env python3
"""Test vectors for airlift's GGUF dequantisation, from an independent reference: the `gguf`
Python package's numpy implementation (`gguf.quants.dequantize`, gguf==0.19.0).

For every block type the reader claims, a few seeded random blocks (their f16 scale fields set to
finite values, everything else random bytes) are dequantised by the reference; the bytes and the
values go to tests/fixtures/gguf/blocks.json, which `worker/tests/gguf_blocks.rs` reads.

Usage: .venv/bin/python scripts/make_gguf_fixtures.py   (make fixtures-gguf)
"""
import json
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

# type -> (ggml id, byte offsets of the f16 scale fields in a block)
TYPES = {
    "Q4_0": (T.Q4_0, [0]), "Q4_1": (T.Q4_1, [0, 2]), "Q5_0": (T.Q5_0, [0]), "Q5_1": (T.Q5_1, [0, 2]),
    "Q8_0": (T.Q8_0, [0]), "Q4_K": (T.Q4_K, [0, 2]), "Q5_K": (T.Q5_K, [0, 2]), "Q6_K": (T.Q6_K, [208]),
}
BLOCKS = 3


def main() -> None:
    rng = np.random.default_rng(20261201)
    out = {}
    for name, (t, scale_offsets) in TYPES.items():
        per_block, block_bytes = quants.GGML_QUANT_SIZES[t]
        raw = rng.integers(0, 256, size=(BLOCKS, block_bytes), dtype=np.uint8)
        for off in scale_offsets:
            scales = rng.uniform(-0.05, 0.05, size=BLOCKS).astype(np.float16)
            raw[:, off:off + 2] = scales.view(np.uint8).reshape(BLOCKS, 2)
        values = quants.dequantize(raw.reshape(-1), t).reshape(-1)
        out[name] = {"ggml_type": int(t), "values_per_block": per_block, "bytes_hex": raw.tobytes().hex(),
                     "values": [float(v) for v in values.astype(np.float32)]}
    for name, t, dtype in [("F16", T.F16, np.float16), ("BF16", T.BF16, None)]:
        x = rng.normal(0, 3, size=64).astype(np.float32)
        if dtype is np.float16:
            raw = x.astype(np.float16).view(np.uint8)
        else:  # bf16: the top 16 bits of f32 (the reference reads them back)
            raw = (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        values = quants.dequantize(raw, t).reshape(-1)
        out[name] = {"ggml_type": int(t), "values_per_block": 1, "bytes_hex": raw.tobytes().hex(),
                     "values": [float(v) for v in values.astype(np.float32)]}
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "gguf", "blocks.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=0)
    print(f"wrote {os.path.normpath(path)}: {', '.join(out)}")


if __name__ == "__main__":
    main()
