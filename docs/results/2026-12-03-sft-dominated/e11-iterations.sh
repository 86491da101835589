set -euo pipefail
cd /work/main
C9=/work/e9bin/coordinator
export AIRLIFT__REWARD__LR=5e-5 AIRLIFT__REWARD__DISC_STEPS=2 AIRLIFT__POLICY__LR=5e-5 AIRLIFT__POLICY__SFT_COEF=10
echo "== E11 train: 12 iterations $(date -u +%T) =="
AIRLIFT__REWARD__WARM_START_STEPS=500 AIRLIFT__RUN__NAME=e11 AIRLIFT__RUN__DIR=runs/e11 \
  $C9 --config configs/quality.toml --local --resume runs/e11-warm/checkpoints/step-000000
newest=$(ls -d runs/e11/checkpoints/step-* | sort | tail -n 1)
echo "== E11 eval: $newest $(date -u +%T) =="
$C9 eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e11-warm/eval/warm500 --compare runs/e8/eval/sft-equal-steps --compare runs/e8/eval/airl
echo "E11 DONE $(date -u +%T)"
