# E26 + E27 (2026-12-07, seventeenth sitting, the 2-core AVX-512 box, bf16 as configured).
# E26: `make quality` as a user runs it (configs/quality.toml = E24's recipe; its SFT-92 baseline;
#      the evaluations of scripts/quality.sh), i.e. E24 again on another machine and dtype.
# E27: E26 forked from its warm-start checkpoint (SFT-80 policy with its AdamW moments, the
#      warmed 30-layer reward) with reward.wrong_answer_line_weight = 0.25 (E25, lost with its
#      machine); E27 - E26 isolates the weight. Then E28, the same fork at weight 0 (E21's
#      setting), if time allows. 128 held-out problems x 8 samples, paired over problems.
set -euo pipefail
cd /work/main
B=${B:-/work/bin26}
C=$B/coordinator
echo "== E26 make quality $(date -u +%T) =="
COORD=$C scripts/quality.sh
echo "== E26 done $(date -u +%T) =="
PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py runs/quality/eval/airl/samples.parquet runs/quality/eval/sft-equal-steps/samples.parquet
for w in 0.25 0; do
  r=runs/e27-w$w
  echo "== fork, wrong_answer_line_weight = $w -> $r $(date -u +%T) =="
  AIRLIFT__RUN__DIR=$r AIRLIFT__RUN__NAME=$(basename $r) AIRLIFT__REWARD__WRONG_ANSWER_LINE_WEIGHT=$w \
    $C --config configs/quality.toml --local --resume runs/quality/checkpoints/step-000000 --fork
  newest=$(ls -d $r/checkpoints/step-* | sort | tail -n 1)
  echo "== eval $newest $(date -u +%T) =="
  $C eval --checkpoint "$newest" --problems synthetic:128 --samples 8 --name airl --overwrite \
    --compare runs/quality/eval/airl
  for b in runs/quality/eval/airl runs/quality/eval/sft-equal-steps; do
    PYTHONPATH=/tmp/pa python3 scripts/paired_pass1.py $r/eval/airl/samples.parquet $b/samples.parquet
  done
  PYTHONPATH=/tmp/pa python3 scripts/paired_interval_by_kind.py $r/eval/airl/corruptions.parquet runs/quality/eval/airl/corruptions.parquet
  PYTHONPATH=/tmp/pa python3 scripts/paired_interval_by_kind.py $r/eval/airl/corruptions.parquet runs/quality/eval/sft-warm-start/corruptions.parquet
  echo "== weight $w DONE $(date -u +%T) =="
done
echo "E26-E28 DONE $(date -u +%T)"
