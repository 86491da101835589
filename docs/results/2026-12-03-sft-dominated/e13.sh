# E13 of docs/evaluation.md: can a deeper reward see a miscalculation? configs/quality.toml's warm
# starts (the same SFT policy to the bit; 60 reward steps as in E8) with the reward trunk the
# whole of SmolLM2-135M (reward.backbone_layers = 30) instead of its first 8 layers. Evaluated
# paired with E8's warm start (8 layers, 60 steps) on the five kinds, and both on miscalculations.
set -euo pipefail
cd /work/main
C=/work/e12bin/coordinator
echo "== E13 train (warm starts only, 30-layer reward, 60 steps) $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__REWARD__BACKBONE_LAYERS=30 AIRLIFT__RUN__DIR=runs/e13 AIRLIFT__RUN__NAME=e13 \
  $C --config configs/quality.toml --local --overwrite
echo "== E13 eval $(date -u +%T) =="
$C eval --checkpoint runs/e13/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name warm60-30layers --overwrite \
  --compare runs/e8/eval/sft-warm-start --compare runs/e9/eval/warm240
for ck in runs/e8/checkpoints/step-000000 runs/e13/checkpoints/step-000000; do
  $C eval --checkpoint $ck --problems synthetic:128 --samples 1 --corruption-kinds miscalculation --name miscalculation --overwrite
done
echo "E13 DONE $(date -u +%T)"
