# E16: fork E14's warm start (same SFT policy and reward to the bit) into 6 iterations with
# sequence advantages and sft_coef 1 (e16.toml), then evaluate on the same 128 problems x 8
# samples, paired with E14 after its 6 iterations, the warm start and SFT with equal steps.
set -euo pipefail
cd /work/main
C=${C:-/work/e16bin/coordinator}
D=docs/results/2026-12-04-arithmetic
echo "== E16 train: 6 iterations $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=6 AIRLIFT__RUN__DIR=runs/e16 $C --config $D/e16.toml --local --resume runs/e14-warm/checkpoints/step-000000 --fork
newest=$(ls -d runs/e16/checkpoints/step-* | sort | tail -n 1)
echo "== E16 eval: $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e14/eval/airl --compare runs/e14-warm/eval/warm120-30layers
echo "== E16 against SFT with equal steps, E14 and the warm start $(date -u +%T) =="
for b in runs/e14-sft/eval/sft-equal-steps runs/e14/eval/airl runs/e14-warm/eval/warm120-30layers; do
  PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e16/eval/airl/samples.parquet $b/samples.parquet
done
echo "E16 DONE $(date -u +%T)"
