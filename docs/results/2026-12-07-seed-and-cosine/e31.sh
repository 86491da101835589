#!/usr/bin/env bash
# E31 (2026-12-07, eighteenth sitting, 2-core AVX-512 box, bf16): `make quality` with one cosine
# learning-rate decay over the policy's 92 steps (policy.lr_schedule = "cosine", min_lr_ratio 0.1;
# e31.toml = configs/quality.toml + those two keys, run.dir runs/quality-cos, seed 0). The SFT-92
# baseline that scripts/quality.sh trains has the same rate at every step; the AIRL arm's 12 PPO
# steps run at the cosine's tail (about 9.6e-6 down to 5.1e-6). Evaluated on held-out ids 0-127
# x 8 samples (the problems of E26, the same recipe at a constant rate; no time for ids 128-255).
set -euo pipefail
cd /work/main
B=${B:-/work/bin31}
C=$B/coordinator
echo "== E31 quality cosine $(date -u +%T) =="
CONFIG=/work/e31/e31.toml COORD=$C SYNTHETIC=128 scripts/quality.sh
echo "== E31 done $(date -u +%T) =="
E=runs/quality-cos/eval
export PYTHONPATH=/tmp/pa
for pair in "airl sft-equal-steps" "airl sft-warm-start" "sft-equal-steps sft-warm-start"; do
  set -- $pair
  for r in 0..128; do echo "== pass@1 $1 - $2 ids $r"; python3 scripts/paired_pass1.py $E/$1/samples.parquet $E/$2/samples.parquet $r; done
done
for r in 0..128; do echo "== interval hit@1 by kind airl - warm ids $r"; python3 scripts/paired_interval_by_kind.py $E/airl/corruptions.parquet $E/sft-warm-start/corruptions.parquet $r; done
echo "E31 DONE $(date -u +%T)"
