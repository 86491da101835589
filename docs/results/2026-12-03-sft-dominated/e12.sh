# The eleventh sitting's queue after E11's warm start (which ran as the first command of
# e11.sh): E11's warm-start evaluations, then E12, then E11's iterations.
#
# E12 of docs/evaluation.md: E9 (a 240-step reward warm start) with the sixth corruption kind,
# `miscalculation` (one result written off by 1, 2 or 10 and carried forward), among the reward's
# kinds; the same SFT warm start to the bit. Evaluated on E9's five kinds (paired with E9's
# warm240 on the same corruptions) and on miscalculations alone (E9's and E12's reward).
# The iteration settings are E11's, so that either checkpoint can be resumed with them.
set -euo pipefail
cd /work/main
C9=/work/e9bin/coordinator      # E8-E11's binaries
C12=/work/e12bin/coordinator    # with the miscalculation kind
export AIRLIFT__REWARD__LR=5e-5 AIRLIFT__REWARD__DISC_STEPS=2 AIRLIFT__POLICY__LR=5e-5 AIRLIFT__POLICY__SFT_COEF=10
FIVE=operator_flip,answer_nudge,number_alter,wrong_operation,wrong_quantity
echo "== E11 eval of the warm start $(date -u +%T) =="
$C9 eval --checkpoint runs/e11-warm/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name warm500 --overwrite \
  --compare runs/e9/eval/warm240 --compare runs/e8/eval/sft-warm-start
$C9 eval --checkpoint runs/e11-warm/checkpoints/step-000000 --problems synthetic:128 --samples 1 \
  --corruption-kinds wrong_operation,wrong_quantity --name consistent-warm500 --overwrite
echo "== E12 train (warm starts only, 240 reward steps, six kinds) $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__REWARD__WARM_START_STEPS=240 AIRLIFT__RUN__DIR=runs/e12-warm AIRLIFT__RUN__NAME=e12 \
  $C12 --config docs/results/2026-12-03-sft-dominated/e12.toml --local --overwrite
echo "== E12 eval $(date -u +%T) =="
$C12 eval --checkpoint runs/e12-warm/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name warm240-six --overwrite \
  --corruption-kinds $FIVE --compare runs/e9/eval/warm240
for ck in runs/e9/checkpoints/step-000000 runs/e12-warm/checkpoints/step-000000; do
  $C12 eval --checkpoint $ck --problems synthetic:128 --samples 1 --corruption-kinds miscalculation --name miscalculation --overwrite
done
echo "E12 DONE $(date -u +%T)"
echo "== E11 train: 12 iterations from runs/e11-warm/checkpoints/step-000000 $(date -u +%T) =="
AIRLIFT__REWARD__WARM_START_STEPS=500 AIRLIFT__RUN__NAME=e11 AIRLIFT__RUN__DIR=runs/e11 \
  $C9 --config configs/quality.toml --local --resume runs/e11-warm/checkpoints/step-000000
newest=$(ls -d runs/e11/checkpoints/step-* | sort | tail -n 1)
echo "== E11 eval: $newest $(date -u +%T) =="
$C9 eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e11-warm/eval/warm500 --compare runs/e8/eval/sft-equal-steps --compare runs/e8/eval/airl
$C9 eval --checkpoint "$newest" --problems synthetic:128 --samples 1 \
  --corruption-kinds wrong_operation,wrong_quantity --name consistent --overwrite
echo "E11 DONE $(date -u +%T)"
