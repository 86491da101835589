# E25 (2026-12-07, sixteenth sitting, AVX2 box, fp32): E24 with the answer line of wrong policy
# samples weighted 0.25 in the discriminator loss (reward.wrong_answer_line_weight; E21 left it
# out, weight 0, and kept the miscalculation localisation but lost on answer nudges). Forked from
# E24's warm-start checkpoint (SFT-80 policy with its AdamW moments, the warmed 30-layer reward),
# so E25 - E24 isolates the weight. 128 held-out problems x 8 samples, paired with E24.
set -euo pipefail
cd /work/main
C=${C:-/work/e25bin/coordinator}
D=docs/results/2026-12-07-long-sft-warm-start
echo "== E25 train $(date -u +%T) =="
AIRLIFT__RUN__DIR=runs/e25 AIRLIFT__RUN__NAME=e25 AIRLIFT__REWARD__WRONG_ANSWER_LINE_WEIGHT=0.25 \
  $C --config docs/results/2026-12-04-arithmetic/e18.toml --local --resume runs/e24/checkpoints/step-000000 --fork
newest=$(ls -d runs/e25/checkpoints/step-* | sort | tail -n 1)
echo "== E25 eval: $newest $(date -u +%T) =="
$C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
  --compare runs/e24/eval/airl
for b in runs/e24/eval/airl runs/e22-sft92/eval/sft-92; do
  PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/e25/eval/airl/samples.parquet $b/samples.parquet
done
PYTHONPATH=/tmp/pa python3 scripts/paired_interval_by_kind.py runs/e25/eval/airl/corruptions.parquet runs/e24/eval/airl/corruptions.parquet
echo "E25 DONE $(date -u +%T)"
