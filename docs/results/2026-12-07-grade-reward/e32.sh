#!/usr/bin/env bash
# E32 (2026-12-07, nineteenth sitting, 2-core AVX-512 box, bf16): how much can the policy update
# gain at `make quality`'s budget (6 iterations x 2 PPO steps on 32 samples, at the tail of E31's
# cosine) with a perfect sequence-level reward?
#   1. E31 again (e32.toml = E31's config with run.dir runs/e32): SFT-80 + reward warm start,
#      6 AIRL iterations, SFT-92, evaluations on held-out ids 0-255 x 8 (a reproduction check of
#      E31: same seed, same binaries' arithmetic);
#   2. a fork of its warm start with policy.reward_source = "grade" (e32-grade.toml): the same
#      iterations, the advantage from each sample's grade instead of the learned reward;
#   3. paired differences over the 256 problems: grade - SFT-92, grade - AIRL, AIRL - SFT-92.
set -euo pipefail
cd /work/main
B=${B:-/work/bin32}
C=$B/coordinator
D=docs/results/2026-12-07-grade-reward
export PYTHONPATH=/tmp/pa
echo "== E32 quality (E31 again) $(date -u +%T) =="
CONFIG=$D/e32.toml COORD=$C SYNTHETIC=256 scripts/quality.sh
echo "== E32 quality done $(date -u +%T) =="
E=runs/e32/eval
echo "== fork: reward_source = grade -> runs/e32-grade $(date -u +%T) =="
$C --config $D/e32-grade.toml --local --resume runs/e32/checkpoints/step-000000 --fork
newest=$(ls -d runs/e32-grade/checkpoints/step-* | sort | tail -n 1)
echo "== eval $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:256 --samples 8 --name grade --out $E/grade --overwrite \
  --compare $E/airl --compare $E/sft-equal-steps --compare $E/sft-warm-start
for pair in "grade sft-equal-steps" "grade airl" "grade sft-warm-start" "airl sft-equal-steps" "airl sft-warm-start" "sft-equal-steps sft-warm-start"; do
  set -- $pair
  echo "== pass@1 $1 - $2 ids 0..256"; python3 scripts/paired_pass1.py $E/$1/samples.parquet $E/$2/samples.parquet
done
for b in airl grade; do
  echo "== interval hit@1 by kind $b - warm"; python3 scripts/paired_interval_by_kind.py $E/$b/corruptions.parquet $E/sft-warm-start/corruptions.parquet
done
echo "E32 DONE $(date -u +%T)"
