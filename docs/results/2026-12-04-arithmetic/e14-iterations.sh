# E14's iterations: resume E14's warm starts (e14.sh) for 6 iterations (12 did not fit the sitting) with the settings in
# e14.toml (SFT-dominated policy steps, reward lr 2e-5 x 2 discriminator steps), then evaluate
# paired against the warm start on the same 128 problems x 8 samples.
set -euo pipefail
cd /work/main
C=${C:-/work/e14bin/coordinator}
echo "== E14 train: 6 iterations $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=6 AIRLIFT__RUN__DIR=runs/e14 $C --config docs/results/2026-12-04-arithmetic/e14.toml --local --resume runs/e14-warm/checkpoints/step-000000
newest=$(ls -d runs/e14/checkpoints/step-* | sort | tail -n 1)
echo "== E14 eval: $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e14-warm/eval/warm120-30layers
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 1 --corruption-kinds miscalculation --name miscalculation --overwrite
echo "E14 iterations DONE $(date -u +%T)"
