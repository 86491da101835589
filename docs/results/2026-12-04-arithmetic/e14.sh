# E14 of docs/evaluation.md (twelfth sitting, 2026-12-04): can the whole SmolLM2-135M trunk,
# fine-tuned gently, see a miscalculation? Warm starts only (the same SFT policy to the bit as
# E8-E13), reward = all 30 layers, 120 warm-start steps at lr 1e-4 on the six kinds. Evaluated on
# the 128 held-out problems x 8 samples, then on miscalculations and on the consistent kinds alone.
set -euo pipefail
cd /work/main
C=${C:-/work/e14bin/coordinator}
echo "== E14 train (warm starts only) $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=0 $C --config docs/results/2026-12-04-arithmetic/e14.toml --local --overwrite
ck=runs/e14-warm/checkpoints/step-000000
echo "== E14 eval $(date -u +%T) =="
$C eval --checkpoint $ck --problems synthetic:128 --samples 8 --name warm120-30layers --overwrite
$C eval --checkpoint $ck --problems synthetic:128 --samples 1 --corruption-kinds miscalculation --name miscalculation --overwrite
$C eval --checkpoint $ck --problems synthetic:128 --samples 1 --corruption-kinds wrong_operation,wrong_quantity --name consistent --overwrite
echo "E14 DONE $(date -u +%T)"
