#!/usr/bin/env bash
# `make eval-gsm8k`: the real-data recipe (configs/gsm8k-qwen-coder.toml: the reward learned from
# the GSM8K train split on CPU, the Qwen2.5-Coder-0.5B policy frozen), then two evaluations of
# the checkpoint after the reward warm start (step-000000) and of the newest one:
#   * ProcessBench (data/processbench/gsm8k-dev.jsonl, 200 human-labelled items): F1 of the
#     first-step-below-threshold prediction, thresholds chosen out of fold, beside baselines;
#   * GSM8K test (the first $GSM8K problems, $SAMPLES samples each; newest checkpoint): pass@1,
#     majority vote, best-of-N and reward-weighted vote, correctness AUROC, localisation.
# On this project's 2-core CPU (2026-12-01): the recipe about 50 min, each ProcessBench
# evaluation 7 min, GSM8K 64 x 8 samples 30 min: about 1 h 40 min in all.
# Environment: RECIPE=0 skips the training run (evaluates what runs/gsm8k-qwen-coder holds);
# GSM8K (problems, default 64), SAMPLES (default 8), PROCESSBENCH (file).
set -euo pipefail
CONFIG=${CONFIG:-configs/gsm8k-qwen-coder.toml}
RUN=${RUN:-runs/gsm8k-qwen-coder}
RECIPE=${RECIPE:-1}
GSM8K=${GSM8K:-64}
SAMPLES=${SAMPLES:-8}
GSM8K_FILE=${GSM8K_FILE:-.cache/data/gsm8k/test.jsonl}
PROCESSBENCH=${PROCESSBENCH:-data/processbench/gsm8k-dev.jsonl}
COORD=target/release/coordinator

if [ "$RECIPE" = 1 ]; then
  echo "== the real-data recipe: $CONFIG (about 50 min on 2 cores; the evaluations after it about 45 min) =="
  "$COORD" --config "$CONFIG" --local --overwrite
fi
ckpts=$(ls -d "$RUN"/checkpoints/step-* 2>/dev/null | sort || true)
if [ -z "$ckpts" ]; then
  echo "make eval-gsm8k: no checkpoint in $RUN/checkpoints (run the recipe: RECIPE=1)" >&2
  exit 1
fi
newest=$(echo "$ckpts" | tail -n 1)
warm="$RUN/checkpoints/step-000000"
[ -f "$warm/manifest.json" ] && [ "$warm" != "$newest" ] || warm=""

for ck in $warm $newest; do
  tag=$(basename "$ck")
  echo "== ProcessBench: $ck =="
  "$COORD" eval --checkpoint "$ck" --problems "processbench:$PROCESSBENCH" --name "processbench-$tag" --overwrite
done
# The policy is frozen in the CPU recipe, so both checkpoints draw the same samples: GSM8K is
# scored with the newest reward only unless GSM8K_CHECKPOINTS=all (12 more minutes here).
gsm_ckpts=$newest
[ "${GSM8K_CHECKPOINTS:-newest}" = all ] && gsm_ckpts="$warm $newest"
for ck in $gsm_ckpts; do
  tag=$(basename "$ck")
  echo "== GSM8K test, first $GSM8K problems x $SAMPLES samples: $ck =="
  "$COORD" eval --checkpoint "$ck" --problems "$GSM8K_FILE" --limit "$GSM8K" --samples "$SAMPLES" --name "gsm8k-$tag" --overwrite
done
echo
echo "reports (self-contained HTML):"
ls -1 "$RUN"/eval/*/report.html
