# E18 (2026-12-07): E16's iteration settings on an 80-step SFT warm start (e18.toml), one run from
# scratch; then the warm start (= SFT with 80 steps) and the 6th iteration evaluated on the same
# 128 problems x 8 samples, paired; then SFT alone with as many policy steps (80 + 6 x 2 = 92).
set -euo pipefail
cd /work/main
C=${C:-/work/e18bin/coordinator}
D=docs/results/2026-12-04-arithmetic
echo "== E18 train $(date -u +%T) =="
$C --config $D/e18.toml --local --overwrite
echo "== E18 eval: warm start (SFT-80) $(date -u +%T) =="
$C eval --checkpoint runs/e18/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name warm --overwrite
newest=$(ls -d runs/e18/checkpoints/step-* | sort | tail -n 1)
echo "== E18 eval: $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e18/eval/warm
PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e18/eval/airl/samples.parquet runs/e18/eval/warm/samples.parquet
echo "== SFT baseline: 92 SFT steps $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__SFT__STEPS=92 AIRLIFT__REWARD__BACKBONE_LAYERS=8 AIRLIFT__REWARD__WARM_START_STEPS=0 \
  AIRLIFT__RUN__DIR=runs/e18-sft92 AIRLIFT__RUN__NAME=e18-sft92 $C --config $D/e14.toml --local --overwrite
$C eval --checkpoint runs/e18-sft92/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name sft-92-steps --overwrite
for b in runs/e18-sft92/eval/sft-92-steps runs/e18/eval/warm; do
  PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e18/eval/airl/samples.parquet $b/samples.parquet
done
PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e18-sft92/eval/sft-92-steps/samples.parquet runs/e18/eval/warm/samples.parquet
echo "E18 DONE $(date -u +%T)"
