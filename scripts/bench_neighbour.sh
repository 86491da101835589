#!/usr/bin/env bash
# `make bench-neighbour`: the embedded default's phase times on a quiet machine and beside one
# busy process (`python3 -c 'while True: pass'`, one core), printed side by side with their
# ratio. A shortened demo (SFT, reward warm start and ITERATIONS iterations with fewer steps, no
# checkpoints kept) so that both runs fit in a few minutes. Issue 20's goal: at most 2x slower.
# Environment: ITERATIONS (default 2), SFT_STEPS (10), WARM_STEPS (12), BUSY (busy processes, 1).
set -euo pipefail
ITERATIONS=${ITERATIONS:-2}
SFT_STEPS=${SFT_STEPS:-10}
WARM_STEPS=${WARM_STEPS:-12}
BUSY=${BUSY:-1}
COORD=target/release/coordinator
OUT=runs/bench-neighbour
run() { # $1 = label
  AIRLIFT__RUN__ITERATIONS=$ITERATIONS AIRLIFT__SFT__STEPS=$SFT_STEPS AIRLIFT__REWARD__WARM_START_STEPS=$WARM_STEPS \
    AIRLIFT__RUN__DIR=$OUT/$1 AIRLIFT__RUN__NAME=bench-neighbour-$1 AIRLIFT__CHECKPOINT__EVERY=1000 \
    "$COORD" --config configs/default.toml --local --overwrite >"$OUT/$1.log" 2>&1 \
    || { echo "bench-neighbour: the $1 run failed; its log: $OUT/$1.log" >&2; tail -n 20 "$OUT/$1.log" >&2; exit 1; }
}
mkdir -p "$OUT"
echo "bench-neighbour: configs/default.toml with $SFT_STEPS SFT steps, $WARM_STEPS reward warm-start steps, $ITERATIONS iterations; $(nproc) CPUs"
start=$(date +%s); run quiet; echo "  quiet run: $(( $(date +%s) - start )) s"
pids=()
for _ in $(seq "$BUSY"); do python3 -c 'while True: pass' & pids+=($!); done
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
start=$(date +%s); run busy; echo "  beside $BUSY busy process(es): $(( $(date +%s) - start )) s"
kill "${pids[@]}" 2>/dev/null || true
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
def phases(label):
    recs = [json.loads(l) for l in (out / label / "metrics.jsonl").read_text().splitlines() if l.strip()]
    p = {}
    for r in recs:
        if "iteration" not in r:
            continue
        if r["iteration"] == 0:
            w = r["learners"][0]
            p["SFT warm start"] = w.get("time_sft_s", 0.0)
            p["reward warm start"] = w.get("time_reward_warm_s", 0.0)
        else:
            for k, f in [("rollouts (all iterations)", "time_rollout_wall_s"), ("learning (all iterations)", "time_learn_wall_s")]:
                p[k] = p.get(k, 0.0) + (r.get(f) or 0.0)
        p["run (wall)"] = r.get("elapsed_s") or 0.0
    return p
q, b = phases("quiet"), phases("busy")
print(f"{'phase':<28}{'quiet s':>10}{'busy s':>10}{'ratio':>8}")
for k in q:
    if k in b:
        print(f"{k:<28}{q[k]:>10.1f}{b[k]:>10.1f}{b[k] / max(q[k], 1e-9):>8.2f}")
PY
rm -rf "$OUT"/quiet/checkpoints "$OUT"/busy/checkpoints
