#!/usr/bin/env bash
# E30 (2026-12-07, eighteenth sitting, 2-core AVX-512 box, bf16): a second seed of `make quality`.
# configs/quality.toml with run.seed = 1 and run.dir = runs/quality-s1 (e30.toml), through
# scripts/quality.sh (AIRL arm, the SFT-92 baseline with seed 1 too, the evaluations on ids 0-127),
# then the three checkpoints on held-out ids 128-255 (the confirmation set of E29).
# The evaluation's own sampling seed is the evaluation's default in both seeds.
set -euo pipefail
cd /work/main
B=${B:-/work/bin30}
C=$B/coordinator
echo "== E30 quality seed 1 $(date -u +%T) =="
CONFIG=/work/e30/e30.toml COORD=$C scripts/quality.sh
echo "== E30 quality done $(date -u +%T) =="
R=runs/quality-s1
P=(--problems synthetic:128..256 --samples 8 --overwrite)
$C eval --checkpoint $R/checkpoints/step-000000 "${P[@]}" --out runs/e30c/warm
$C eval --checkpoint $R-sft/checkpoints/step-000000 "${P[@]}" --out runs/e30c/sft92
$C eval --checkpoint $R/checkpoints/step-000006 "${P[@]}" --out runs/e30c/airl --compare runs/e30c/warm --compare runs/e30c/sft92
export PYTHONPATH=/tmp/pa
for s in "$R/eval" runs/e30c; do
  w=$s/warm; [ -d $w ] || w=$s/sft-warm-start
  q=$s/sft92; [ -d $q ] || q=$s/sft-equal-steps
  echo "== $s: pass@1 airl - sft92"; python3 scripts/paired_pass1.py $s/airl/samples.parquet $q/samples.parquet
  echo "== $s: pass@1 airl - warm"; python3 scripts/paired_pass1.py $s/airl/samples.parquet $w/samples.parquet
  echo "== $s: pass@1 sft92 - warm"; python3 scripts/paired_pass1.py $q/samples.parquet $w/samples.parquet
  echo "== $s: interval hit@1 by kind airl - warm"; python3 scripts/paired_interval_by_kind.py $s/airl/corruptions.parquet $w/corruptions.parquet
done
echo "E30 DONE $(date -u +%T)"
