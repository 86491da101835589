#!/usr/bin/env bash
# E35 (2026-12-08, twenty-first sitting, 2-core AVX-512 box, bf16): E34's AIRL arm with the
# discriminator's rate in the iterations at 5e-6 instead of 2e-5 (e35.toml), forked from E34's
# warm start; evaluated on held-out ids 0-255 x 8 and paired with E34's arms (run e34.sh first).
set -euo pipefail
cd /work/main
B=${B:-/work/bin34}
C=$B/coordinator
D=docs/results/2026-12-08-cosine-rl
E=runs/e34/eval
export PYTHONPATH=/tmp/pa
echo "== fork: reward.lr 5e-6 $(date -u +%T) =="
$C --config $D/e35.toml --local --resume runs/e34/checkpoints/step-000000 --fork
c=$(ls -d runs/e35/checkpoints/step-* | sort | tail -n 1)
$C eval --checkpoint "$c" --problems synthetic:256 --samples 8 --name airl-reward-lr-5e-6 --out $E/airl-reward-lr-5e-6 --overwrite \
  --compare $E/airl --compare $E/sft-equal-steps --compare $E/sft-warm-start
for b in airl sft-equal-steps sft-warm-start; do
  echo "== pass@1 airl-reward-lr-5e-6 - $b"; python3 scripts/paired_pass1.py $E/airl-reward-lr-5e-6/samples.parquet $E/$b/samples.parquet
done
for b in airl sft-warm-start; do
  echo "== interval hit@1 by kind airl-reward-lr-5e-6 - $b"; python3 scripts/paired_interval_by_kind.py $E/airl-reward-lr-5e-6/corruptions.parquet $E/$b/corruptions.parquet
done
echo "E35 DONE $(date -u +%T)"
