# E10 of docs/evaluation.md: configs/quality.toml's 12 AIRL iterations (E4' = `make quality`
# settings) resumed from E9's checkpoint (the SFT warm start + a 240-step reward warm start).
set -euo pipefail
cd /work/main
C=/work/e9bin/coordinator
echo "== E10 train: 12 iterations from runs/e9/checkpoints/step-000000 =="
AIRLIFT__REWARD__WARM_START_STEPS=240 AIRLIFT__RUN__DIR=runs/e10 AIRLIFT__RUN__NAME=e9 \
  $C --config configs/quality.toml --local --resume runs/e9/checkpoints/step-000000
newest=$(ls -d runs/e10/checkpoints/step-* | sort | tail -n 1)
echo "== E10 eval: $newest =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e9/eval/warm240 --compare runs/e8/eval/sft-equal-steps --compare runs/e8/eval/airl
echo "== E10 consistent =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 1 --corruption-kinds wrong_operation,wrong_quantity --name consistent --overwrite
echo E10 DONE
