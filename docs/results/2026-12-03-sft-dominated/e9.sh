set -euo pipefail
cd /work/main
export AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__REWARD__WARM_START_STEPS=240 AIRLIFT__RUN__DIR=runs/e9 AIRLIFT__RUN__NAME=e9
C=/work/e9bin/coordinator
echo "== E9 train (warm starts only, reward warm start 240 steps) =="
$C --config configs/quality.toml --local --overwrite
unset AIRLIFT__RUN__ITERATIONS AIRLIFT__REWARD__WARM_START_STEPS AIRLIFT__RUN__DIR AIRLIFT__RUN__NAME
echo "== E9 eval =="
$C eval --checkpoint runs/e9/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name warm240 --overwrite --compare runs/e8/eval/sft-warm-start
echo "== E9 consistent =="
$C eval --checkpoint runs/e9/checkpoints/step-000000 --problems synthetic:128 --samples 1 --corruption-kinds wrong_operation,wrong_quantity --name consistent-warm240 --overwrite
echo E9 DONE
