# E16 continued: the same run resumed to 12 iterations (a plain resume; the reward's learning-rate
# schedule is recomputed over 12 iterations), evaluated on the same 128 problems x 8 samples;
# then SFT with as many policy steps (30 + 12 x 2 = 54 SFT steps), paired with it.
set -euo pipefail
cd /work/main
C=${C:-/work/e16bin/coordinator}
D=docs/results/2026-12-04-arithmetic
echo "== E16 train: to 12 iterations $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=12 AIRLIFT__RUN__DIR=runs/e16 $C --config $D/e16.toml --local --resume
newest=$(ls -d runs/e16/checkpoints/step-* | sort | tail -n 1)
echo "== E16 eval: $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl12 --overwrite \
  --compare runs/e16/eval/airl --compare runs/e14-warm/eval/warm120-30layers
echo "== SFT baseline: 54 SFT steps $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__SFT__STEPS=54 AIRLIFT__REWARD__BACKBONE_LAYERS=8 AIRLIFT__REWARD__WARM_START_STEPS=0 \
  AIRLIFT__RUN__DIR=runs/e16-sft54 AIRLIFT__RUN__NAME=e16-sft54 $C --config $D/e14.toml --local --overwrite
$C eval --checkpoint runs/e16-sft54/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name sft-54-steps --overwrite
echo "== E16 after 12 iterations against SFT with equal steps $(date -u +%T) =="
for b in runs/e16-sft54/eval/sft-54-steps runs/e14-sft/eval/sft-equal-steps runs/e16/eval/airl runs/e14-warm/eval/warm120-30layers; do
  PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e16/eval/airl12/samples.parquet $b/samples.parquet
done
PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e16-sft54/eval/sft-54-steps/samples.parquet runs/e14-sft/eval/sft-equal-steps/samples.parquet
echo "E16-more DONE $(date -u +%T)"
