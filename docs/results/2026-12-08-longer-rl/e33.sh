#!/usr/bin/env bash
# E33 (2026-12-08, twentieth sitting, 2-core AVX-512 box, bf16): is there a budget at which RL
# beats SFT with equal policy steps?  E32 found that at make quality's budget (6 iterations x 2
# PPO steps on 32 samples) even the grade as reward did not.  Here: 16 iterations x 2 PPO steps
# on 64 samples (8 per prompt, so fewer groups grade all alike), constant rate 5e-5.
#   1. warm start: SFT-80 + reward warm start (e33.toml with run.iterations = 0; runs/e33);
#   2. SFT with equal policy steps, 80 + 16 x 2 = 112 (runs/e33-sft; reward untrained);
#   3. a fork of the warm start with policy.reward_source = "grade" (runs/e33-grade);
#   4. evaluations on held-out ids 0-255 x 8, paired differences over the problems;
#   5. a fork with the learned reward (AIRL, runs/e33-airl) and its evaluation.
set -euo pipefail
cd /work/main
B=${B:-/work/bin33}
C=$B/coordinator
D=docs/results/2026-12-08-longer-rl
E=runs/e33/eval
export PYTHONPATH=/tmp/pa
P=(--problems synthetic:256 --samples 8)
echo "== warm start $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 $C --config $D/e33.toml --local --overwrite
echo "== SFT-112 $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__SFT__STEPS=112 AIRLIFT__REWARD__WARM_START_STEPS=0 AIRLIFT__REWARD__BACKBONE_LAYERS=8 \
  AIRLIFT__RUN__DIR=runs/e33-sft AIRLIFT__RUN__NAME=e33-sft $C --config $D/e33.toml --local --overwrite
echo "== fork: grade $(date -u +%T) =="
$C --config $D/e33-grade.toml --local --resume runs/e33/checkpoints/step-000000 --fork
echo "== evals $(date -u +%T) =="
$C eval --checkpoint runs/e33/checkpoints/step-000000 "${P[@]}" --name sft-warm-start --out $E/sft-warm-start --overwrite
$C eval --checkpoint runs/e33-sft/checkpoints/step-000000 "${P[@]}" --name sft-equal-steps --out $E/sft-equal-steps --overwrite
g=$(ls -d runs/e33-grade/checkpoints/step-* | sort | tail -n 1)
$C eval --checkpoint "$g" "${P[@]}" --name grade --out $E/grade --overwrite --compare $E/sft-equal-steps --compare $E/sft-warm-start
for pair in "grade sft-equal-steps" "grade sft-warm-start" "sft-equal-steps sft-warm-start"; do
  set -- $pair; echo "== pass@1 $1 - $2"; python3 scripts/paired_pass1.py $E/$1/samples.parquet $E/$2/samples.parquet
done
echo "== fork: airl $(date -u +%T) =="
$C --config $D/e33-airl.toml --local --resume runs/e33/checkpoints/step-000000 --fork
a=$(ls -d runs/e33-airl/checkpoints/step-* | sort | tail -n 1)
echo "== eval $a $(date -u +%T) =="
$C eval --checkpoint "$a" "${P[@]}" --name airl --out $E/airl --overwrite --compare $E/grade --compare $E/sft-equal-steps --compare $E/sft-warm-start
for pair in "airl sft-equal-steps" "airl grade" "airl sft-warm-start"; do
  set -- $pair; echo "== pass@1 $1 - $2"; python3 scripts/paired_pass1.py $E/$1/samples.parquet $E/$2/samples.parquet
done
for b in airl grade; do
  echo "== interval hit@1 by kind $b - warm"; python3 scripts/paired_interval_by_kind.py $E/$b/corruptions.parquet $E/sft-warm-start/corruptions.parquet
done
echo "E33 DONE $(date -u +%T)"
