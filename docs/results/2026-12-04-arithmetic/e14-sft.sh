# SFT with as many policy steps as E14's warm start + 6 iterations (30 + 6 x 2 = 42 SFT steps),
# no iterations; the reward is not trained (8 layers, 0 warm-start steps: only pass@1 is read
# from this evaluation). Evaluated paired with E14 after its iterations.
set -euo pipefail
cd /work/main
C=${C:-/work/e14bin/coordinator}
echo "== E14 SFT baseline: 42 SFT steps $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__SFT__STEPS=42 AIRLIFT__REWARD__BACKBONE_LAYERS=8 AIRLIFT__REWARD__WARM_START_STEPS=0 \
  AIRLIFT__RUN__DIR=runs/e14-sft AIRLIFT__RUN__NAME=e14-sft $C --config docs/results/2026-12-04-arithmetic/e14.toml --local --overwrite
$C eval --checkpoint runs/e14-sft/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name sft-equal-steps --overwrite
echo "== E14 after its iterations against SFT with equal steps $(date -u +%T) =="
PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e14/eval/airl/samples.parquet runs/e14-sft/eval/sft-equal-steps/samples.parquet
PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e14-sft/eval/sft-equal-steps/samples.parquet runs/e14-warm/eval/warm120-30layers/samples.parquet
echo "E14 SFT DONE $(date -u +%T)"
