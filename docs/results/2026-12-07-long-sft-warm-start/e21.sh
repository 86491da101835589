# E21 (2026-12-07, fifteenth sitting, AVX2 box, fp32): e21.toml forked from E20's warm start, 6
# iterations, evaluated on E19's 128 held-out problems x 8 samples and paired with E20.
set -euo pipefail
cd /work/main
C=${C:-/work/e19bin/coordinator}
D=docs/results/2026-12-07-long-sft-warm-start
echo "== E21 train $(date -u +%T) =="
$C --config $D/e21.toml --local --resume runs/e20/checkpoints/step-000000 --fork
newest=$(ls -d runs/e21/checkpoints/step-* | sort | tail -n 1)
echo "== E21 eval: $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e20/eval/airl
PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e21/eval/airl/samples.parquet runs/e20/eval/airl/samples.parquet
for r in e20 e21; do PYTHONPATH=/tmp/pa python3 scripts/interval_picks.py runs/$r/eval/airl/corruptions.parquet || true; done
echo "E21 DONE $(date -u +%T)"
# The reward after E20's warm start (its step-000000 holds the SFT-80 policy, so pass@1 is E19's
# SFT-80 again), for the localisation and ranking the iterations start from.
echo "== E20 eval: warm start $(date -u +%T) =="
$C eval --checkpoint runs/e20/checkpoints/step-000000 --problems synthetic:128 --samples 8 --name warm --overwrite
PYTHONPATH=/tmp/pa python3 scripts/interval_picks.py runs/e20/eval/warm/corruptions.parquet || true
echo "E20 warm eval DONE $(date -u +%T)"
