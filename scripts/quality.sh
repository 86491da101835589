#!/usr/bin/env bash
# `make quality`: does the method beat imitation on the embedded default's synthetic problems?
#   1. the AIRL recipe configs/quality.toml (SFT warm start, reward warm start, then the
#      adversarial iterations; runs/quality);
#   2. the SFT baseline with equal policy compute: the same SFT warm start run for as many
#      optimizer steps on expert traces as the AIRL run's policy takes in all
#      (sft.steps + iterations x policy.steps), no iterations (runs/quality-sft); its own reward
#      is not trained (no warm start, 8 layers), so its samples are scored by the AIRL run's
#      warm-start reward (both exported, `coordinator export`): its reranking and localisation
#      rows are then those of SFT + a reward trained on experts vs corruptions only, without the
#      adversarial phase;
#   3. three checkpoints evaluated on the same held-out synthetic problems and samples: the
#      warm start (SFT only), the longer SFT, and AIRL after the last iteration, the last with
#      --compare against the other two (paired differences over problems in its summary.json,
#      table and report); then the warm start and AIRL on the consistent corruptions only.
# About 90 min on a 2-core AVX2 CPU in fp32 (2026-12-07: the AIRL run 52 min, the SFT baseline
# 13, each 128 x 8 evaluation 6-7); 50 min on a 2-core AVX-512 CPU in bf16 (2026-12-07: 30, 7
# and 3). Environment: SYNTHETIC (held-out
# problems, default 128), SAMPLES (per problem, default 8), TRAIN=0 (evaluate what the runs hold),
# COORD (the coordinator binary, default target/release/coordinator; its worker beside it).
set -euo pipefail
CONFIG=${CONFIG:-configs/quality.toml}
SYNTHETIC=${SYNTHETIC:-128}
SAMPLES=${SAMPLES:-8}
TRAIN=${TRAIN:-1}
COORD=${COORD:-target/release/coordinator}
read -r RUN SFT_STEPS <<<"$(python3 - "$CONFIG" <<'PY'
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
it = c["run"]["iterations"]; steps = c.get("policy", {}).get("steps", 1); sft = c.get("sft", {}).get("steps", 0)
print(c["run"]["dir"], sft + it * steps)
PY
)"
BASE=${RUN}-sft
if [ "$TRAIN" = 1 ]; then
  echo "== 1/3 AIRL: $CONFIG -> $RUN =="
  "$COORD" --config "$CONFIG" --local --overwrite
  echo "== 2/3 SFT with equal policy steps ($SFT_STEPS SFT steps, no iterations) -> $BASE =="
  AIRLIFT__RUN__ITERATIONS=0 AIRLIFT__SFT__STEPS=$SFT_STEPS AIRLIFT__REWARD__WARM_START_STEPS=0 AIRLIFT__REWARD__BACKBONE_LAYERS=8 \
    AIRLIFT__RUN__DIR=$BASE AIRLIFT__RUN__NAME=$(basename "$BASE") \
    "$COORD" --config "$CONFIG" --local --overwrite
fi
newest=$(ls -d "$RUN"/checkpoints/step-* | sort | tail -n 1)
problems=(--problems "synthetic:$SYNTHETIC" --samples "$SAMPLES")
echo "== 3/3 evaluations: $SYNTHETIC held-out synthetic problems x $SAMPLES samples =="
"$COORD" eval --checkpoint "$RUN/checkpoints/step-000000" "${problems[@]}" --name sft-warm-start --overwrite
rm -rf "$BASE/export" "$RUN/export-warm-start"
"$COORD" export --out "$BASE/export" "$BASE/checkpoints/step-000000"
"$COORD" export --out "$RUN/export-warm-start" "$RUN/checkpoints/step-000000"
"$COORD" --config "$CONFIG" eval --policy "$BASE/export/policy" --reward "$RUN/export-warm-start/reward" "${problems[@]}" \
  --out "$RUN/eval/sft-equal-steps" --overwrite
"$COORD" eval --checkpoint "$newest" "${problems[@]}" --name airl --overwrite \
  --compare "$RUN/eval/sft-warm-start" --compare "$RUN/eval/sft-equal-steps"
echo "(sft-equal-steps: the longer SFT's samples, scored by the warm start's reward, the one the AIRL"
echo " iterations started from: its reward rows are SFT + a reward without the adversarial phase)"
echo "== the consistent corruptions (wrong operation / quantity) on the same problems, warm start and AIRL =="
for ck in "$RUN/checkpoints/step-000000" "$newest"; do
  "$COORD" eval --checkpoint "$ck" --problems "synthetic:$SYNTHETIC" --samples 1 --corruption-kinds wrong_operation,wrong_quantity \
    --name "consistent-$(basename "$ck")" --overwrite
done
echo
"$COORD" report "$RUN" >/dev/null
echo "learning curves (held-out AUROC, error-line hit@1 and policy accuracy of every iteration, on the"
echo "  learner's 16 held-out problems): $RUN/report.html (also $RUN/tensorboard, $RUN/metrics.jsonl)"
echo "paired evaluation report: $RUN/eval/airl/report.html"
