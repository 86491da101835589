#!/usr/bin/env bash
# E34 (2026-12-08, twenty-first sitting, 2-core AVX-512 box, bf16): does a decaying rate let the
# RL phase help where E33's constant 5e-5 hurt?  One cosine (floor 0.1) over the policy's 80 SFT
# + 32 PPO steps, in every arm:
#   1. e34.toml in one run: SFT-80 + reward warm start (checkpoint step-000000, kept), then 16
#      iterations x 2 PPO steps with the learned reward (AIRL; runs/e34);
#   2. SFT with equal policy steps, 112, the same cosine (run.iterations = 0, so the cosine's
#      length is 112 + 0; runs/e34-sft; its own reward untrained, so its samples are scored by
#      the warm start's reward: both exported, as scripts/quality.sh now does);
#   3. evaluations on held-out ids 0-255 x 8, paired differences over the problems;
#   4. a fork of the warm start with policy.reward_source = "grade" (runs/e34-grade) and its eval.
set -euo pipefail
cd /work/main
B=${B:-/work/bin34}
C=$B/coordinator
D=docs/results/2026-12-08-cosine-rl
E=runs/e34/eval
export PYTHONPATH=/tmp/pa
P=(--problems synthetic:256 --samples 8)
if [ "${SKIP_AIRL_RUN:-0}" != 1 ]; then
  echo "== AIRL run (warm start + 16 iterations) $(date -u +%T) =="
  $C --config $D/e34.toml --local --overwrite
fi
echo "== SFT-112 $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__SFT__STEPS=112 AIRLIFT__REWARD__WARM_START_STEPS=0 AIRLIFT__REWARD__BACKBONE_LAYERS=8 \
  AIRLIFT__RUN__DIR=runs/e34-sft AIRLIFT__RUN__NAME=e34-sft $C --config $D/e34.toml --local --overwrite
echo "== evals $(date -u +%T) =="
a=$(ls -d runs/e34/checkpoints/step-* | sort | tail -n 1)
rm -rf runs/e34-sft/export runs/e34/export-warm-start
$C export --out runs/e34-sft/export runs/e34-sft/checkpoints/step-000000
$C export --out runs/e34/export-warm-start runs/e34/checkpoints/step-000000
$C --config $D/e34.toml eval --policy runs/e34-sft/export/policy --reward runs/e34/export-warm-start/reward "${P[@]}" \
  --out $E/sft-equal-steps --overwrite
$C eval --checkpoint "$a" "${P[@]}" --name airl --out $E/airl --overwrite --compare $E/sft-equal-steps
echo "== pass@1 airl - sft-equal-steps"; python3 scripts/paired_pass1.py $E/airl/samples.parquet $E/sft-equal-steps/samples.parquet
$C eval --checkpoint runs/e34/checkpoints/step-000000 "${P[@]}" --name sft-warm-start --out $E/sft-warm-start --overwrite
for pair in "airl sft-warm-start" "sft-equal-steps sft-warm-start"; do
  set -- $pair; echo "== pass@1 $1 - $2"; python3 scripts/paired_pass1.py $E/$1/samples.parquet $E/$2/samples.parquet
done
echo "== interval hit@1 by kind airl - warm"; python3 scripts/paired_interval_by_kind.py $E/airl/corruptions.parquet $E/sft-warm-start/corruptions.parquet
echo "== fork: grade $(date -u +%T) =="
$C --config $D/e34-grade.toml --local --resume runs/e34/checkpoints/step-000000 --fork
g=$(ls -d runs/e34-grade/checkpoints/step-* | sort | tail -n 1)
$C eval --checkpoint "$g" "${P[@]}" --name grade --out $E/grade --overwrite --compare $E/sft-equal-steps --compare $E/sft-warm-start
for pair in "grade sft-equal-steps" "grade sft-warm-start" "airl grade"; do
  set -- $pair; echo "== pass@1 $1 - $2"; python3 scripts/paired_pass1.py $E/$1/samples.parquet $E/$2/samples.parquet
done
echo "== interval hit@1 by kind grade - warm"; python3 scripts/paired_interval_by_kind.py $E/grade/corruptions.parquet $E/sft-warm-start/corruptions.parquet
echo "E34 DONE $(date -u +%T)"
