# Where SFT saturates on this policy: the warm start's SFT run for 80 steps (30, 42 and 54 ran
# before), no iterations, evaluated on the same 128 problems x 8 samples, paired with 54 steps.
set -euo pipefail
cd /work/main
C=${C:-/work/e16bin/coordinator}
D=docs/results/2026-12-04-arithmetic
echo "== SFT baseline: 80 SFT steps $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__SFT__STEPS=80 AIRLIFT__REWARD__BACKBONE_LAYERS=8 AIRLIFT__REWARD__WARM_START_STEPS=0 \
  AIRLIFT__RUN__DIR=runs/e16-sft80 AIRLIFT__RUN__NAME=e16-sft80 $C --config $D/e14.toml --local --overwrite
$C eval --checkpoint runs/e16-sft80/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name sft-80-steps --overwrite
PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e16-sft80/eval/sft-80-steps/samples.parquet runs/e16-sft54/eval/sft-54-steps/samples.parquet
echo "SFT-80 DONE $(date -u +%T)"
