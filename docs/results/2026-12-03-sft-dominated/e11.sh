# As run: only the first command (the warm starts) ran from this script; e12.sh ran the rest
# of the queue, and E11's iterations were stopped after 4 of 12 (not measured).
# E11 of docs/evaluation.md (eleventh sitting, 2026-12-03): a 500-step reward warm start (E9 had
# 240), then configs/quality.toml's 12 iterations with E8's SFT-dominated policy steps
# (policy.lr 5e-5, policy.sft_coef 10) and a slowed adversarial update (reward.lr 5e-5 x 2
# discriminator steps per iteration, against 2e-4 x 6), so that the reward moves about 12x less.
# The settings that act only in the iterations are given to the warm-start run too: a resume
# must have the same config except run.iterations / run.dir (proto RESUME_MAY_DIFFER).
set -euo pipefail
cd /work/main
C=/work/e9bin/coordinator
export AIRLIFT__REWARD__WARM_START_STEPS=500 AIRLIFT__REWARD__LR=5e-5 AIRLIFT__REWARD__DISC_STEPS=2 \
  AIRLIFT__POLICY__LR=5e-5 AIRLIFT__POLICY__SFT_COEF=10 AIRLIFT__RUN__NAME=e11
echo "== E11 train (warm starts only, reward warm start 500 steps) $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__RUN__DIR=runs/e11-warm $C --config configs/quality.toml --local --overwrite
echo "== E11 eval of the warm start $(date -u +%T) =="
$C eval --checkpoint runs/e11-warm/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name warm500 --overwrite \
  --compare runs/e9/eval/warm240 --compare runs/e8/eval/sft-warm-start
$C eval --checkpoint runs/e11-warm/checkpoints/step-000000 --problems synthetic:128 --samples 1 \
  --corruption-kinds wrong_operation,wrong_quantity --name consistent-warm500 --overwrite
echo "== E11 train: 12 iterations from runs/e11-warm/checkpoints/step-000000 $(date -u +%T) =="
AIRLIFT__RUN__DIR=runs/e11 $C --config configs/quality.toml --local --resume runs/e11-warm/checkpoints/step-000000
newest=$(ls -d runs/e11/checkpoints/step-* | sort | tail -n 1)
echo "== E11 eval: $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e11-warm/eval/warm500 --compare runs/e8/eval/sft-equal-steps --compare runs/e8/eval/airl
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 1 \
  --corruption-kinds wrong_operation,wrong_quantity --name consistent --overwrite
echo "E11 DONE $(date -u +%T)"
