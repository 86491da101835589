#!/usr/bin/env bash
# `make eval`: evaluates the checkpoints `make demo` leaves in runs/default/checkpoints: the one
# after the warm start (SFT only, step-000000) and the newest (after the adversarial
# iterations), each on held-out synthetic problems and on a slice of the real GSM8K test split,
# the newest beside the SFT-only one in one report per problem set (--compare).
# Sized for about 10 minutes on a 2-core CPU. Environment: SYNTHETIC (problems, default 32),
# GSM8K (problems, default 16), SAMPLES (per problem, default 4).
set -euo pipefail
RUN=${RUN:-runs/default}
GSM8K_FILE=${GSM8K_FILE:-.cache/data/gsm8k/test.jsonl}
SYNTHETIC=${SYNTHETIC:-32}
GSM8K=${GSM8K:-16}
SAMPLES=${SAMPLES:-4}
COORD=target/release/coordinator

ckpts=$(ls -d "$RUN"/checkpoints/step-* 2>/dev/null | sort || true)
if [ -z "$ckpts" ]; then
  echo "make eval: no checkpoint in $RUN/checkpoints: run \`make demo\` first (it writes them)" >&2
  exit 1
fi
newest=$(echo "$ckpts" | tail -n 1)
sft="$RUN/checkpoints/step-000000"
[ -f "$sft/manifest.json" ] || sft=""
[ "$sft" = "$newest" ] && sft=""
if [ -z "$sft" ]; then
  echo "make eval: no warm-start checkpoint (step-000000) beside $newest: evaluating it alone (checkpoint.keep_warm_start = true keeps it)" >&2
fi

reports=()
for set in synthetic gsm8k; do
  if [ "$set" = synthetic ]; then problems=(--problems "synthetic:$SYNTHETIC"); else problems=(--problems "$GSM8K_FILE" --limit "$GSM8K"); fi
  compare=()
  if [ -n "$sft" ]; then
    echo "== $set: the SFT-only checkpoint $sft =="
    "$COORD" eval --checkpoint "$sft" "${problems[@]}" --samples "$SAMPLES" --name "sft-$set" --overwrite
    compare=(--compare "$RUN/eval/sft-$set")
  fi
  echo "== $set: the newest checkpoint $newest =="
  "$COORD" eval --checkpoint "$newest" "${problems[@]}" --samples "$SAMPLES" --name "$set" --overwrite "${compare[@]}"
  reports+=("$RUN/eval/$set/report.html")
done
echo
echo "reports (open in a browser; self-contained):"
printf '  %s\n' "${reports[@]}"
