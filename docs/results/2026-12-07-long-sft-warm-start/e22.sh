# E22 (2026-12-07, fifteenth sitting, AVX2 box, fp32): SFT for 92 steps in one run (one AdamW
# throughout), against E20's SFT-80 + 12 steps restarted from the exported policy with a fresh
# AdamW (both arms of E20 restarted so; both fell about 7 points below SFT-80). Separates "SFT
# over-trains past 80 steps" from "the restart with fresh optimizer moments costs the points".
set -euo pipefail
cd /work/main
C=${C:-/work/e19bin/coordinator}
echo "== E22: SFT 92 steps in one run $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__SFT__STEPS=92 AIRLIFT__REWARD__BACKBONE_LAYERS=8 AIRLIFT__REWARD__WARM_START_STEPS=0 \
  AIRLIFT__RUN__DIR=runs/e22-sft92 AIRLIFT__RUN__NAME=e22-sft92 $C --config docs/results/2026-12-04-arithmetic/e14.toml --local --overwrite
echo "== E22 eval $(date -u +%T) =="
$C eval --checkpoint runs/e22-sft92/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name sft-92 --overwrite
for b in runs/e19-sft80/eval/sft-80 runs/e20-sft92/eval/sft-80-plus-12 runs/e20/eval/airl; do
  PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e22-sft92/eval/sft-92/samples.parquet $b/samples.parquet
done
echo "E22 DONE $(date -u +%T)"
