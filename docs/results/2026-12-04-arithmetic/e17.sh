# E17: fork E14's warm start into 6 iterations with sequence advantages and E14's sft_coef 10
# (e17.toml; the one change against E14's iterations), then evaluate on the same 128 problems x 8
# samples, paired with E14 and E16 after 6 iterations and SFT with equal steps (42).
set -euo pipefail
cd /work/main
C=${C:-/work/e16bin/coordinator}
D=docs/results/2026-12-04-arithmetic
echo "== E17 train: 6 iterations $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=6 AIRLIFT__RUN__DIR=runs/e17 $C --config $D/e17.toml --local --resume runs/e14-warm/checkpoints/step-000000 --fork
newest=$(ls -d runs/e17/checkpoints/step-* | sort | tail -n 1)
echo "== E17 eval: $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e14/eval/airl --compare runs/e16/eval/airl
for b in runs/e14-sft/eval/sft-equal-steps runs/e14/eval/airl runs/e16/eval/airl runs/e14-warm/eval/warm120-30layers; do
  PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e17/eval/airl/samples.parquet $b/samples.parquet
done
echo "E17 DONE $(date -u +%T)"
