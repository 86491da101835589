# E20 (2026-12-07, fifteenth sitting, the AVX2 box: fp32 compute, the workers fall back from bf16):
# E18 without retraining its SFT. E19's 80-step SFT policy exported, then (1) E18's reward warm
# start and 6 iterations on it (e20.toml), (2) 12 more SFT steps on it, as many policy steps as
# the 6 iterations' 2 PPO steps each (equal steps from the same start; both arms start a fresh
# AdamW). All evaluated on E19's 128 held-out problems x 8 samples and paired.
set -euo pipefail
cd /work/main
C=${C:-/work/e19bin/coordinator}
D=docs/results/2026-12-07-long-sft-warm-start
[ -f runs/e20-base/policy/model.safetensors ] || $C export runs/e19-sft80/checkpoints/step-000000 --out runs/e20-base
echo "== E20 train $(date -u +%T) =="
$C --config $D/e20.toml --local --overwrite
newest=$(ls -d runs/e20/checkpoints/step-* | sort | tail -n 1)
echo "== E20 eval: $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e19-sft80/eval/sft-80
echo "== SFT baseline: 12 more SFT steps from SFT-80 $(date -u +%T) =="
AIRLIFT__MODEL__POLICY=runs/e20-base/policy AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__SFT__STEPS=12 \
  AIRLIFT__REWARD__BACKBONE_LAYERS=8 AIRLIFT__REWARD__WARM_START_STEPS=0 \
  AIRLIFT__RUN__DIR=runs/e20-sft92 AIRLIFT__RUN__NAME=e20-sft92 $C --config docs/results/2026-12-04-arithmetic/e14.toml --local --overwrite
$C eval --checkpoint runs/e20-sft92/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name sft-80-plus-12 --overwrite
for b in runs/e20-sft92/eval/sft-80-plus-12 runs/e19-sft80/eval/sft-80; do
  PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e20/eval/airl/samples.parquet $b/samples.parquet
done
PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e20-sft92/eval/sft-80-plus-12/samples.parquet runs/e19-sft80/eval/sft-80/samples.parquet
echo "E20 DONE $(date -u +%T)"
