# E19 (2026-12-07, fourteenth sitting): where SFT saturates on this policy, on the AVX2 box (fp32
# compute: the workers fall back from bf16). E14's config, no iterations, no reward training;
# SFT for 54 and for 80 steps, each evaluated on the same 128 held-out problems x 8 samples, paired.
set -euo pipefail
cd /work/main
C=${C:-/work/e19bin/coordinator}
D=docs/results/2026-12-04-arithmetic
for n in 54 80; do
  echo "== SFT $n steps $(date -u +%T) =="
  AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__SFT__STEPS=$n AIRLIFT__REWARD__BACKBONE_LAYERS=8 AIRLIFT__REWARD__WARM_START_STEPS=0 \
    AIRLIFT__RUN__DIR=runs/e19-sft$n AIRLIFT__RUN__NAME=e19-sft$n $C --config $D/e14.toml --local --overwrite
  echo "== eval SFT $n $(date -u +%T) =="
  $C eval --checkpoint runs/e19-sft$n/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name sft-$n --overwrite
done
PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e19-sft80/eval/sft-80/samples.parquet runs/e19-sft54/eval/sft-54/samples.parquet
echo "E19 DONE $(date -u +%T)"
