# E23 (2026-12-07, fifteenth sitting, AVX2 box, fp32): a check of E22's restart explanation, not a
# test of the method. E16's iteration settings (sequence advantages, sft_coef 1, 6 iterations)
# forked from E19's SFT-80 checkpoint itself, whose AdamW moments the fork keeps (no restart
# shock). That checkpoint's reward is the untrained 8-layer one (E19 had no reward warm start),
# trained here only in the iterations (lr 1e-4, 2 steps each), so the advantages are close to
# noise. Compared, paired, with SFT-80 and with SFT-92 in one run (E22).
set -euo pipefail
cd /work/main
C=${C:-/work/e19bin/coordinator}
echo "== E23 train $(date -u +%T) =="
AIRLIFT__RUN__ITERATIONS=6 AIRLIFT__SFT__STEPS=80 AIRLIFT__REWARD__BACKBONE_LAYERS=8 AIRLIFT__REWARD__WARM_START_STEPS=0 \
  AIRLIFT__POLICY__ADVANTAGE=sequence AIRLIFT__POLICY__SFT_COEF=1 AIRLIFT__REWARD__LR=1e-4 \
  AIRLIFT__RUN__DIR=runs/e23 AIRLIFT__RUN__NAME=e23 $C --config docs/results/2026-12-04-arithmetic/e14.toml --local \
  --resume runs/e19-sft80/checkpoints/step-000000 --fork
newest=$(ls -d runs/e23/checkpoints/step-* | sort | tail -n 1)
echo "== E23 eval: $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite
for b in runs/e19-sft80/eval/sft-80 runs/e22-sft92/eval/sft-92 runs/e20/eval/airl; do
  PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e23/eval/airl/samples.parquet $b/samples.parquet
done
echo "E23 DONE $(date -u +%T)"
