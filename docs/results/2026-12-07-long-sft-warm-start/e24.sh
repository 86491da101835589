# E24 (2026-12-07, sixteenth sitting, AVX2 box, fp32): E18 as planned, in one run from scratch
# (docs/results/2026-12-04-arithmetic/e18.toml): 80 SFT steps, the 30-layer reward's warm start
# (120 steps), 6 iterations with E16's settings (sequence advantages, sft_coef 1). Unlike E20 the
# policy's AdamW moments run on from SFT into the iterations (no export, no restart). Compared,
# paired on E19's 128 held-out problems x 8 samples, with SFT-92 in one run (E22: as many policy
# steps, 80 + 6 x 2), with SFT-80 (E19) and with E20 (the same recipe restarted from an export).
set -euo pipefail
cd /work/main
C=${C:-/work/e19bin/coordinator}
echo "== E24 train $(date -u +%T) =="
AIRLIFT__RUN__DIR=runs/e24 AIRLIFT__RUN__NAME=e24 $C --config docs/results/2026-12-04-arithmetic/e18.toml --local --overwrite
echo "== is E24's SFT-80 policy E19's? $(date -u +%T) =="
.venv/bin/python -c "
import torch; from safetensors import safe_open
a = safe_open('runs/e24/checkpoints/step-000000/rank-00000-of-00001.safetensors', 'pt')
b = safe_open('runs/e19-sft80/checkpoints/step-000000/rank-00000-of-00001.safetensors', 'pt')
for k in ('policy.param', 'policy.adam_m', 'policy.adam_v'):
    x, y = a.get_tensor(k), b.get_tensor(k)
    print(k, 'max |diff|', (x - y).abs().max().item() if x.shape == y.shape else 'shapes differ')
"
newest=$(ls -d runs/e24/checkpoints/step-* | sort | tail -n 1)
echo "== E24 eval: $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e22-sft92/eval/sft-92
for b in runs/e22-sft92/eval/sft-92 runs/e19-sft80/eval/sft-80 runs/e20/eval/airl runs/e23/eval/airl; do
  PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e24/eval/airl/samples.parquet $b/samples.parquet
done
echo "E24 DONE $(date -u +%T)"
