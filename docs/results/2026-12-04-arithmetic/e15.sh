# E15 of docs/evaluation.md: E14's control for depth. E14's warm starts (e14.toml: 120 reward
# steps at lr 1e-4, six kinds) with the reward trunk the first 8 layers instead of all 30; the
# same SFT policy if this machine reproduces it (its fingerprint is in the metrics). Evaluated
# with --compare against E14's warm start.
set -euo pipefail
cd /work/main
C=${C:-/work/e14bin/coordinator}
echo "== E15 train (warm starts only, 8-layer reward at lr 1e-4) $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__REWARD__BACKBONE_LAYERS=8 AIRLIFT__RUN__DIR=runs/e15-warm AIRLIFT__RUN__NAME=e15 \
  $C --config docs/results/2026-12-04-arithmetic/e14.toml --local --overwrite
$C eval --checkpoint runs/e15-warm/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name warm120-8layers --overwrite \
  --compare runs/e14-warm/eval/warm120-30layers
echo "E15 DONE $(date -u +%T)"
